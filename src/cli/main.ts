#!/usr/bin/env node
import { readFileSync } from 'node:fs';

import { Command, Option } from 'commander';

import { DEAD_LETTER_REASONS } from '../inbox/dead-letters.js';
import { runDiscard, runList, runRetry, runShow } from './dead-letters.js';
import { parsePort, runDev } from './dev.js';
import { runMigrate } from './database.js';
import { runOutboxDiscard, runOutboxList, runOutboxRetry, runRelay } from './outbox.js';
import { runDoctor } from './doctor.js';
import { exitQuietlyOnClosedPipe } from './output.js';
import { runStatusScreen } from './status-screen.js';

// `oncely migrate --dry-run | head`: the reader closing the pipe ends the command quietly.
exitQuietlyOnClosedPipe(process.stdout);
exitQuietlyOnClosedPipe(process.stderr);

// The package's own package.json: two levels up from src/cli/ and from dist/cli/ alike.
const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
import {
  parseDuration,
  parsePartitions,
  runOffsetsReset,
  runOffsetsShow,
  runPurge,
  runReplayPlan,
  runReplayRun,
} from '../replay/cli.js';

const program = new Command('oncely')
  .description('Effectively-once Kafka consumers on PostgreSQL')
  .version(version, '-V, --version', 'print the oncely version')
  .showHelpAfterError()
  .configureOutput({ outputError: (text, write) => write(text) });

const databaseUrl = (): Option =>
  new Option('--database-url <url>', 'PostgreSQL connection string').env('DATABASE_URL').makeOptionMandatory();

program
  .command('migrate')
  .description('apply the pending oncely migrations (safe to run from several processes at once)')
  .addOption(databaseUrl())
  .option('--dry-run', 'print the SQL of the pending migrations instead of applying it (for a DBA)')
  .action(runMigrate);

program
  .command('status')
  .description(
    'one screen per consumer group: what it recorded, open dead letters by reason, and with brokers its state and lag',
  )
  .addOption(databaseUrl())
  .addOption(
    new Option('--brokers <list>', 'Kafka brokers, comma-separated, for group state and lag').env('KAFKA_BROKERS'),
  )
  .option('--watch [seconds]', 'redraw every few seconds (default 5) on a terminal, until Ctrl-C')
  .option('--json', 'print JSON for scripts')
  .action(runStatusScreen);

// The module is imported by the CLI: one that starts its consumer (or a server) when imported would
// start it inside the retry or replay command too.
const HANDLERS_MODULE_HELP =
  '\nThe --handlers module is imported: it must not start a consumer when imported (export the\n' +
  'handlers from a module of their own, and start the consumer in another). A TypeScript module is\n' +
  'loaded with tsx when it is installed (npm install --save-dev tsx); otherwise run\n' +
  '`node --import tsx ./node_modules/oncely/dist/cli/main.js …` or pass the compiled .js file.';

const deadLetters = program.command('dead-letters').description('inspect, retry and discard dead letters');
const reason = (): Option => new Option('--reason <reason>', 'only this reason').choices(DEAD_LETTER_REASONS);

deadLetters
  .command('list')
  .description('list dead letters, oldest first')
  .addOption(databaseUrl())
  .option('--group <id>', 'only this consumer group')
  .option('--topic <name>', 'only this source topic')
  .addOption(reason())
  .addOption(
    new Option('--status <status>', 'which ones').choices(['open', 'retried', 'discarded', 'all']).default('open'),
  )
  .addOption(new Option('--limit <n>', 'at most this many').argParser((v) => Number.parseInt(v, 10)).default(100))
  .option('--json', 'print JSON for scripts')
  .action(runList);

deadLetters
  .command('show <id>')
  .description('show one dead letter in full: record, headers, value and error')
  .addOption(databaseUrl())
  .option('--json', 'print JSON for scripts (bytes as base64)')
  .action(runShow);

deadLetters
  .command('retry [id]')
  .description('re-run the handler for a dead letter (or --all) in a fresh transaction')
  .addOption(databaseUrl())
  .requiredOption(
    '--handlers <module>',
    "a module exporting the consumer's handlers (and optionally its drizzle `schema`); .js, or .ts with tsx installed",
  )
  .option('--all', 'retry every open dead letter (narrowed by --group, --topic, --reason)')
  .option('--group <id>', 'with --all: only this consumer group')
  .option('--topic <name>', 'with --all: only this source topic')
  .addOption(reason())
  .option('--json', 'print JSON for scripts')
  .addHelpText('after', HANDLERS_MODULE_HELP)
  .action(runRetry);

deadLetters
  .command('discard <id>')
  .description('mark a dead letter discarded, keeping why (nothing is deleted)')
  .addOption(databaseUrl())
  .requiredOption('--reason <text>', 'why it is discarded')
  .option('--json', 'print JSON for scripts')
  .action(runDiscard);

const integer = (v: string): number => Number.parseInt(v, 10);

program
  .command('relay')
  .description(
    'send committed outbox events to Kafka until stopped (one relay per database is active; others stand by)',
  )
  .addOption(databaseUrl())
  .addOption(
    new Option('--brokers <list>', 'Kafka brokers, host:port[,host:port]').env('KAFKA_BROKERS').makeOptionMandatory(),
  )
  .addOption(new Option('--batch-size <n>', 'events per round (default 500)').argParser(integer))
  .addOption(
    new Option('--poll-interval <ms>', 'fallback poll when no notification came (default 1000)').argParser(integer),
  )
  .action(runRelay);

const outbox = program.command('outbox').description('inspect, retry and discard outbox events');

outbox
  .command('list')
  .description('list outbox events, oldest first (default: the parked ones)')
  .addOption(databaseUrl())
  .option('--topic <name>', 'only this topic')
  .addOption(
    new Option('--status <status>', 'which ones')
      .choices(['pending', 'sent', 'parked', 'discarded', 'all'])
      .default('parked'),
  )
  .addOption(new Option('--limit <n>', 'at most this many').argParser(integer).default(100))
  .option('--json', 'print JSON for scripts')
  .action(runOutboxList);

outbox
  .command('retry [id]')
  .description('put a parked event (or --all) back to pending: the relay sends it again')
  .addOption(databaseUrl())
  .option('--all', 'every parked event (narrowed by --topic)')
  .option('--topic <name>', 'with --all: only this topic')
  .option('--json', 'print JSON for scripts')
  .action(runOutboxRetry);

outbox
  .command('discard <id>')
  .description('give up on a parked event: never sent; the events of its key behind it go on')
  .addOption(databaseUrl())
  .requiredOption('--reason <text>', 'why it is discarded')
  .option('--json', 'print JSON for scripts')
  .action(runOutboxDiscard);

program
  .command('doctor')
  .description(
    'check the database, migrations, topics, group state, lag and open dead letters; OK/WARN/FAIL with the fix',
  )
  .addOption(databaseUrl())
  .addOption(new Option('--brokers <list>', 'Kafka brokers, comma-separated').env('KAFKA_BROKERS'))
  .option('--group <id...>', 'only these consumer groups (default: every group with recorded offsets)')
  .addOption(
    new Option('--max-lag <n>', 'lag above this many records is a warning')
      .argParser((v) => Number.parseInt(v, 10))
      .default(1000),
  )
  .option('--json', 'print JSON for scripts')
  .action(runDoctor);

// Offsets, replay and retention (src/replay/cli.ts): they need Kafka as well as the database.
const brokers = (): Option =>
  new Option('--brokers <list>', 'Kafka bootstrap servers, comma-separated').env('KAFKA_BROKERS').makeOptionMandatory();
const offsets = program.command('offsets').description("show or reset a group's offsets in Kafka and oncely.offsets");

offsets
  .command('show')
  .description('per partition: Kafka committed, database resume point, log start, high watermark, verdict')
  .addOption(databaseUrl())
  .addOption(brokers())
  .option('--group <id>', 'only this consumer group')
  .option('--topic <name>', 'only this topic')
  .option('--json', 'print JSON for scripts')
  .action(runOffsetsShow);

offsets
  .command('reset')
  .description("set Kafka's committed offset and oncely.offsets together (refused while the group has live members)")
  .addOption(databaseUrl())
  .addOption(brokers())
  .requiredOption('--group <id>', 'the consumer group')
  .requiredOption('--topic <name>', 'the topic')
  .requiredOption('--to <offset|earliest|latest>', 'the offset every chosen partition resumes at')
  .option('--partitions <list>', 'only these partitions, e.g. 0,1', parsePartitions)
  .option('--json', 'print JSON for scripts')
  .action(runOffsetsReset);

const replay = program.command('replay').description('plan or run the replay of a topic range by a consumer group');
for (const mode of ['plan', 'run'] as const) {
  const command = replay
    .command(mode, { isDefault: mode === 'plan' })
    .description(
      mode === 'plan'
        ? 'dry run: read the range and count what would be skipped, applied, at risk, dead-lettered, gone'
        : 'rewind the group to the range start (refused with live members, or with messages at risk unless --force)',
    )
    .addOption(databaseUrl())
    .addOption(brokers())
    .requiredOption('--group <id>', 'the consumer group')
    .option(
      '--inbox-scope <scope>',
      "the group's inbox scope (default: the one its consumer recorded, or the group id)",
    )
    .requiredOption('--topic <name>', 'the topic')
    .requiredOption('--from <ISO time|offset|earliest>', 'the first message of the range')
    .option('--to <ISO time|offset|latest>', 'the end of the range (exclusive)', 'latest')
    .option('--partitions <list>', 'only these partitions, e.g. 0,1', parsePartitions)
    .option('--handlers <module>', 'a module exporting the handlers, when one derives ids with messageId(event)')
    .option('--json', 'print JSON for scripts')
    .addHelpText('after', HANDLERS_MODULE_HELP);
  if (mode === 'run') command.option('--force', 'proceed although messages are at risk of applying twice');
  command.action(mode === 'plan' ? runReplayPlan : runReplayRun);
}

program
  .command('purge')
  .description('delete inbox rows no redelivery can need and old resolved dead letters (one process per group)')
  .addOption(databaseUrl())
  .addOption(brokers())
  .requiredOption('--group <id>', 'the consumer group')
  .option('--inbox-scope <scope>', "the group's inbox scope (default: the one its consumer recorded, or the group id)")
  .option('--inbox-for <duration>', 'keep inbox rows this long (7d, 12h, …)', parseDuration, 7 * 86_400_000)
  .option('--dead-letters-for <duration>', 'keep resolved dead letters this long', parseDuration, 30 * 86_400_000)
  .addOption(new Option('--batch-size <n>', 'rows per delete').argParser((v) => Number.parseInt(v, 10)).default(5_000))
  .option('--json', 'print JSON for scripts')
  .action(runPurge);

program
  .command('dev')
  .description('start Kafka and PostgreSQL for local work; print their addresses; stop them on Ctrl-C')
  .option(
    '--kafka-port <port>',
    'the broker listens on this port of 127.0.0.1 (default: a new free port each start)',
    parsePort,
  )
  .option(
    '--pg-port <port>',
    'PostgreSQL listens on this port of 127.0.0.1 (default: a new free port each start)',
    parsePort,
  )
  .option(
    '--data-dir <dir>',
    'keep the PostgreSQL data in this directory between runs (default: a throwaway cluster; Kafka topics are always new)',
  )
  .addHelpText(
    'after',
    '\nWith fixed ports the addresses stay the same between runs, e.g.\n' +
      '  oncely dev --kafka-port 9092 --pg-port 5432 --data-dir .oncely/postgres\n' +
      'prints KAFKA_BROKERS=127.0.0.1:9092 and DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres.\n' +
      'A service whose variable (KAFKA_BROKERS, DATABASE_URL) is already set is used as it is.',
  )
  .action(runDev);

try {
  await program.parseAsync();
} catch (error) {
  const code = (error as { code?: unknown }).code;
  process.stderr.write(
    `oncely: ${(error as Error).message}${typeof code === 'string' && code.startsWith('ONCELY_') ? ` (${code})` : ''}\n`,
  );
  process.exitCode = 1;
}
