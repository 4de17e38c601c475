#!/usr/bin/env node
import { Command, Option } from 'commander';

import { DEAD_LETTER_REASONS } from '../inbox/dead-letters.js';
import { runDiscard, runList, runRetry, runShow } from './dead-letters.js';
import { runDev } from './dev.js';
import { runMigrate, runStatus } from './database.js';
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
  .description('show applied and pending migrations, and what each consumer group has recorded')
  .addOption(databaseUrl())
  .option('--json', 'print JSON for scripts')
  .action(runStatus);

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
    "a module exporting the consumer's handlers (and optionally its drizzle `schema`)",
  )
  .option('--all', 'retry every open dead letter (narrowed by --group, --topic, --reason)')
  .option('--group <id>', 'with --all: only this consumer group')
  .option('--topic <name>', 'with --all: only this source topic')
  .addOption(reason())
  .option('--json', 'print JSON for scripts')
  .action(runRetry);

deadLetters
  .command('discard <id>')
  .description('mark a dead letter discarded, keeping why (nothing is deleted)')
  .addOption(databaseUrl())
  .requiredOption('--reason <text>', 'why it is discarded')
  .option('--json', 'print JSON for scripts')
  .action(runDiscard);

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
    .requiredOption('--topic <name>', 'the topic')
    .requiredOption('--from <ISO time|offset|earliest>', 'the first message of the range')
    .option('--to <ISO time|offset|latest>', 'the end of the range (exclusive)', 'latest')
    .option('--partitions <list>', 'only these partitions, e.g. 0,1', parsePartitions)
    .option('--handlers <module>', 'a module exporting the handlers, when one derives ids with messageId(event)')
    .option('--json', 'print JSON for scripts');
  if (mode === 'run') command.option('--force', 'proceed although messages are at risk of applying twice');
  command.action(mode === 'plan' ? runReplayPlan : runReplayRun);
}

program
  .command('purge')
  .description('delete inbox rows no redelivery can need and old resolved dead letters (one process per group)')
  .addOption(databaseUrl())
  .addOption(brokers())
  .requiredOption('--group <id>', 'the consumer group')
  .option('--inbox-for <duration>', 'keep inbox rows this long (7d, 12h, …)', parseDuration, 7 * 86_400_000)
  .option('--dead-letters-for <duration>', 'keep resolved dead letters this long', parseDuration, 30 * 86_400_000)
  .addOption(new Option('--batch-size <n>', 'rows per delete').argParser((v) => Number.parseInt(v, 10)).default(5_000))
  .option('--json', 'print JSON for scripts')
  .action(runPurge);

program
  .command('dev')
  .description('start Kafka and PostgreSQL for local work; print their addresses; stop them on Ctrl-C')
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
