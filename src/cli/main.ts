#!/usr/bin/env node
import { readFileSync } from 'node:fs';

import { Command, Option } from 'commander';

import { editDistance } from '../options.js';
import { DEAD_LETTER_REASONS } from '../inbox/dead-letters.js';
import { runDiscard, runList, runRetry, runShow } from './dead-letters.js';
import { parsePort, runDev } from './dev.js';
import { runMigrate } from './database.js';
import { runOutboxDiscard, runOutboxList, runOutboxRetry, runRelay } from './outbox.js';
import { runDoctor } from './doctor.js';
import { runConsole } from './console.js';
import { duration, nonEmpty, wholeNumber } from './arguments.js';
import { failureLine } from '../operator/failure.js';
import { parsePartitions } from '../operator/input.js';
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
  formatDuration,
  PURGE_INBOX_FLOOR_MS,
  runOffsetsReset,
  runOffsetsShow,
  runPurge,
  runReplayPlan,
  runReplayRun,
} from './replay.js';

const program = new Command('oncely')
  .description('Effectively-once Kafka consumers on PostgreSQL')
  .version(version, '-V, --version', 'print the oncely version')
  // A usage error is one line naming the problem and where to read more (see oneLineUsageErrors).
  .showHelpAfterError(false);

const databaseUrl = (): Option =>
  new Option('--database-url <url>', 'PostgreSQL connection string')
    .env('DATABASE_URL')
    .argParser(nonEmpty('a PostgreSQL URL such as postgres://user@host:5432/database'))
    .makeOptionMandatory();

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
  .option('--watch [seconds]', 'redraw every few seconds (default 5) on a terminal, until Ctrl-C', wholeNumber(1))
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
  .addOption(new Option('--limit <n>', 'at most this many').argParser(wholeNumber(1)).default(100))
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

program
  .command('relay')
  .description(
    'send committed outbox events to Kafka until stopped (one relay per database is active; others stand by)',
  )
  .addOption(databaseUrl())
  .addOption(
    new Option('--brokers <list>', 'Kafka brokers, host:port[,host:port]').env('KAFKA_BROKERS').makeOptionMandatory(),
  )
  .addOption(new Option('--batch-size <n>', 'events per round (default 500)').argParser(wholeNumber(1)))
  .addOption(
    new Option('--poll-interval <ms>', 'fallback poll when no notification came (default 1000)').argParser(
      wholeNumber(1),
    ),
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
  .addOption(new Option('--limit <n>', 'at most this many').argParser(wholeNumber(1)).default(100))
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
    new Option('--max-lag <n>', 'lag above this many records is a warning').argParser(wholeNumber(0)).default(1000),
  )
  .addOption(
    new Option(
      '--max-idle-in-transaction <seconds>',
      'a session idle in a transaction longer than this is a warning (a wedged pool)',
    )
      .argParser(wholeNumber(1))
      .default(30),
  )
  .option('--json', 'print JSON for scripts')
  .action(runDoctor);

// Offsets, replay and retention (src/cli/replay.ts): they need Kafka as well as the database.
const brokers = (): Option =>
  new Option('--brokers <list>', 'Kafka bootstrap servers, comma-separated')
    .env('KAFKA_BROKERS')
    .argParser(nonEmpty('host:port[,host:port]'))
    .makeOptionMandatory();
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
  .addOption(
    new Option('--inbox-for <duration>', 'keep inbox rows this long (7d, 12h, 30m, 90s)')
      .argParser(duration)
      .default(7 * 86_400_000, '7d'),
  )
  .addOption(
    new Option('--dead-letters-for <duration>', 'keep resolved dead letters this long')
      .argParser(duration)
      .default(30 * 86_400_000, '30d'),
  )
  .addOption(new Option('--batch-size <n>', 'rows per delete').argParser(wholeNumber(1)).default(5_000))
  .option(
    '--force',
    `purge although --inbox-for is below ${formatDuration(PURGE_INBOX_FLOOR_MS)} (dedupe records younger than that go too)`,
  )
  .option('--json', 'print JSON for scripts')
  .action(runPurge);

program
  .command('console')
  .description('serve the operator console in the browser: groups and lag, dead letters, replays, outbox, HTTP keys')
  .addOption(databaseUrl())
  .addOption(new Option('--brokers <list>', 'Kafka brokers, comma-separated, for lag and replays').env('KAFKA_BROKERS'))
  .option('--host <address>', 'listen on this address', '127.0.0.1')
  .addOption(new Option('--port <port>', 'listen on this port').argParser(parsePort).default(4000))
  .addOption(
    new Option('--token <token>', 'the token to sign in with (default: a new random one, printed)').env(
      'ONCELY_CONSOLE_TOKEN',
    ),
  )
  .option('--write', 'allow writes: retry and discard, replay runs (default: read-only)')
  .option('--payloads', 'show payload values and allow payload search (default: hidden; they hold personal data)')
  .option('--handlers <module>', "a module exporting the consumer's handlers, to retry dead letters from the console")
  .addOption(new Option('--refresh <seconds>', 'seconds between live updates (default 5)').argParser(wholeNumber(1)))
  .addHelpText('after', HANDLERS_MODULE_HELP)
  .action(runConsole);

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
  .addOption(
    new Option(
      '--brokers <n>',
      '1: one broker; 3: a three-node KRaft cluster (replication factor 3, min.insync.replicas 2, -Xmx384m per node)',
    )
      .choices(['1', '3'])
      .default('1'),
  )
  .addHelpText(
    'after',
    '\nWith fixed ports the addresses stay the same between runs, e.g.\n' +
      '  oncely dev --kafka-port 9092 --pg-port 5432 --data-dir .oncely/postgres\n' +
      'prints KAFKA_BROKERS=127.0.0.1:9092 and DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres.\n' +
      'A service whose variable (KAFKA_BROKERS, DATABASE_URL) is already set is used as it is.',
  )
  .action(runDev);

requireSubcommands(program);
oneLineUsageErrors(program);

try {
  await program.parseAsync();
} catch (error) {
  process.stderr.write(`${failureLine(error)}\n`);
  process.exitCode = 1;
}

/**
 * Commander's usage errors (unknown option or command, missing or invalid value) as one line on
 * stderr: the problem, and where to read the command's options; no usage dump after it. A missing
 * option that can come from the environment says which variable.
 */
function oneLineUsageErrors(command: Command): void {
  const path = (c: Command | null): string => (c === null ? '' : `${path(c.parent)} ${c.name()}`.trim());
  command.configureOutput({
    outputError: (text, write) => {
      const problem = text
        .replace(/^error: /, '')
        .replaceAll(/\s*\n\s*/g, ' ')
        .replace(/[.\s]+$/, '');
      const fromEnv = problem.endsWith('not specified')
        ? command.options.find((o) => o.envVar !== undefined && problem.includes(`'${o.flags}'`))
        : undefined;
      const fix = fromEnv === undefined ? '' : ` (or set ${fromEnv.envVar})`;
      write(`oncely: ${problem}${fix}; see \`${path(command)} --help\`\n`);
    },
  });
  for (const sub of command.commands) oneLineUsageErrors(sub);
}

/**
 * A command that only groups others (`oncely offsets`, `oncely outbox`, … and `oncely` itself),
 * run without one or with an unknown one, fails with one line instead of printing its help.
 */
function requireSubcommands(command: Command): void {
  const subcommands = command.commands.filter((c) => c.name() !== 'help');
  if (subcommands.length === 0) return;
  for (const sub of subcommands) requireSubcommands(sub);
  // A group with a default command (`replay` runs `plan`) dispatches to it before any action.
  command
    .argument('[command]')
    .usage('[options] [command]')
    .action((name: string | undefined) => {
      const names = subcommands.map((c) => c.name());
      if (name === undefined) command.error(`missing command: one of ${names.join(', ')}`);
      const near = names.find((n) => editDistance(n, name) <= 2);
      command.error(
        near === undefined
          ? `unknown command '${name}': one of ${names.join(', ')}`
          : `unknown command '${name}' (did you mean ${near}?)`,
      );
    });
}
