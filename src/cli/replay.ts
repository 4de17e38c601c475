import { createKafkaClient, type KafkaClient } from '../kafka/client.js';
import { SingleBar } from 'cli-progress';
import pg from 'pg';

import { importUserModule } from './load-module.js';
import { table as outputTable } from './output.js';
import { configError, OncelyError } from '../errors.js';
import { type AnyHandlerDefinition, isHandlerDefinition } from '../pipeline/handler.js';
import { purge } from '../retention/purge.js';
import { resetOffsets, showOffsets } from '../replay/offsets.js';
import { formatReplayPlan } from './replay-format.js';
import { readResumePoints } from '../replay/store.js';
import { planReplay } from '../replay/plan.js';
import { runReplay } from '../replay/run.js';
import { replayStatus, type ReplayProgress } from '../replay/status.js';

/*
 * Thin commands over the exported functions: `oncely offsets`, `oncely replay`, `oncely purge`.
 */

interface Connection {
  readonly databaseUrl: string;
  readonly brokers: string;
  readonly json?: boolean;
}

const print = (text: string): boolean => process.stdout.write(`${text}\n`);

async function connected<T>(options: Connection, use: (pool: pg.Pool, kafka: KafkaClient) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 3 });
  pool.on('error', () => undefined);
  const kafka = createKafkaClient({ clientId: 'oncely-cli', brokers: options.brokers });
  try {
    return await use(pool, kafka);
  } finally {
    await pool.end();
  }
}

export async function runOffsetsShow(options: Connection & { group?: string; topic?: string }): Promise<void> {
  const rows = await connected(options, (pool, kafka) =>
    showOffsets({
      pool,
      kafka,
      ...(options.group === undefined ? {} : { groupId: options.group }),
      ...(options.topic === undefined ? {} : { topic: options.topic }),
    }),
  );
  // A group named on the command line that has no offsets anywhere is most often a misspelt name:
  // say so on stderr and exit 2 (a verdict that is not ok), rather than print an empty table.
  if (options.group !== undefined && rows.every((r) => r.kafkaCommitted === null && r.databaseResumePoint === null)) {
    process.stderr.write(
      `oncely: consumer group "${options.group}" has no offsets${options.topic === undefined ? '' : ` for topic ${options.topic}`} ` +
        `in ${options.topic === undefined ? 'oncely.offsets' : 'Kafka or oncely.offsets'}: check the group name ` +
        '(`oncely offsets show` without --group lists every group oncely has recorded)\n',
    );
    process.exitCode = 2;
    return;
  }
  if (options.json === true) {
    print(JSON.stringify(rows, null, 2));
  } else if (rows.length === 0) {
    print('No offsets recorded (narrow with --group and --topic to see a group that has none yet).');
  } else {
    const table = outputTable([
      'group',
      'topic',
      'partition',
      'kafka committed',
      'db resume point',
      'log start',
      'high watermark',
      'verdict',
    ]);
    for (const r of rows) {
      table.push([
        r.groupId,
        r.topic,
        String(r.partition),
        r.kafkaCommitted ?? '—',
        r.databaseResumePoint ?? '—',
        r.logStart,
        r.highWatermark,
        r.verdict,
      ]);
    }
    print(table.toString());
  }
  if (rows.some((r) => r.verdict !== 'ok' && r.verdict !== 'no-offsets')) process.exitCode = 2;
}

export async function runOffsetsReset(
  options: Connection & { group: string; topic: string; to: string; partitions?: number[] },
): Promise<void> {
  const result = await connected(options, (pool, kafka) =>
    resetOffsets({
      pool,
      kafka,
      groupId: options.group,
      topic: options.topic,
      to: options.to,
      ...(options.partitions === undefined ? {} : { partitions: options.partitions }),
    }),
  );
  if (options.json === true) {
    print(JSON.stringify(result, null, 2));
    return;
  }
  for (const p of result.partitions) {
    print(
      `${result.groupId} · ${result.topic}/${p.partition}: ${p.from ?? '(none)'} → ${p.to} (Kafka and oncely.offsets)`,
    );
  }
}

interface ReplayCommand extends Connection {
  readonly group: string;
  readonly inboxScope?: string;
  readonly topic: string;
  readonly from: string;
  readonly to: string;
  readonly partitions?: number[];
  readonly handlers?: string;
}

async function replayOptions(options: ReplayCommand, pool: pg.Pool, kafka: KafkaClient) {
  const handlers = options.handlers === undefined ? undefined : await loadHandlers(options.handlers);
  const bar =
    options.json !== true && process.stderr.isTTY
      ? new SingleBar({
          format: 'reading {bar} {percentage}% · {value}/{total} offsets · {eta}s',
          stream: process.stderr,
        })
      : undefined;
  let started = false;
  return {
    bar,
    plan: {
      pool,
      kafka,
      groupId: options.group,
      ...(options.inboxScope === undefined ? {} : { inboxScope: options.inboxScope }),
      topic: options.topic,
      from: options.from,
      to: options.to,
      ...(options.partitions === undefined ? {} : { partitions: options.partitions }),
      ...(handlers === undefined ? {} : { handlers }),
      onProgress: (read: number, total: number) => {
        if (bar === undefined) return;
        if (!started) {
          bar.start(total, read);
          started = true;
        } else bar.update(read);
      },
    },
  };
}

export async function runReplayPlan(options: ReplayCommand): Promise<void> {
  const plan = await connected(options, async (pool, kafka) => {
    const { bar, plan: planOptions } = await replayOptions(options, pool, kafka);
    try {
      return await planReplay(planOptions);
    } finally {
      bar?.stop();
    }
  });
  print(options.json === true ? JSON.stringify(plan, null, 2) : formatReplayPlan(plan));
  if (plan.totals.atRisk > 0) process.exitCode = 2;
}

export async function runReplayRun(options: ReplayCommand & { force?: boolean }): Promise<void> {
  const result = await connected(options, async (pool, kafka) => {
    const { bar, plan: planOptions } = await replayOptions(options, pool, kafka);
    try {
      return await runReplay({ ...planOptions, force: options.force === true });
    } finally {
      bar?.stop();
    }
  });
  if (options.json === true) {
    print(JSON.stringify(result, null, 2));
    return;
  }
  print(formatReplayPlan(result.plan));
  print('');
  for (const p of result.offsets.partitions) {
    print(`  partition ${p.partition}: resume point ${p.from ?? '(none)'} → ${p.to} (Kafka and oncely.offsets)`);
  }
  print(
    `Replay ${result.replayId} recorded${result.forced ? ' (forced)' : ''}. Start the group's consumers; \`oncely status\` shows its progress.`,
  );
}

/**
 * The shortest `--inbox-for` that `oncely purge` accepts without `--force`. A window is what lets a
 * producer's late duplicate be recognised: `0s` (a slip for `0d`, or a test command run against
 * production) would delete every committed message's dedupe record at once. One hour is below
 * any window worth choosing on purpose (the default is 7 days) and above any typo of one.
 */
export const PURGE_INBOX_FLOOR_MS = 3_600_000;

export async function runPurge(
  options: Connection & {
    group: string;
    inboxScope?: string;
    inboxFor: number;
    deadLettersFor: number;
    batchSize: number;
    force?: boolean;
  },
): Promise<void> {
  if (options.inboxFor < PURGE_INBOX_FLOOR_MS && options.force !== true) {
    throw new OncelyError(
      'ONCELY_CONFIG',
      `--inbox-for ${formatDuration(options.inboxFor)} is below the ${formatDuration(PURGE_INBOX_FLOOR_MS)} floor: it would delete ` +
        'the dedupe records of recent messages, so a producer duplicate of one of them would be applied again. ' +
        `Give --inbox-for ${formatDuration(PURGE_INBOX_FLOOR_MS)} or more, or add --force if that is what you mean.`,
      { context: { option: 'inboxFor' } },
    );
  }
  const result = await connected(options, async (pool, kafka) => {
    // A misspelt group would purge nothing and report success: refuse it, naming the fix.
    if ((await readResumePoints(pool, { groupId: options.group })).length === 0) {
      throw new OncelyError(
        'ONCELY_CONFIG',
        `Consumer group "${options.group}" has no offsets in oncely.offsets, so nothing of it can be purged: ` +
          'check the group name (`oncely offsets show` lists every group oncely has recorded).',
        { context: { option: 'group', groupId: options.group } },
      );
    }
    return purge({
      pool,
      kafka,
      groupId: options.group,
      ...(options.inboxScope === undefined ? {} : { inboxScope: options.inboxScope }),
      inboxFor: options.inboxFor,
      deadLettersFor: options.deadLettersFor,
      batchSize: options.batchSize,
    });
  });
  if (options.json === true) {
    print(JSON.stringify(result, null, 2));
    return;
  }
  if (!result.ran) {
    print(`Another process is purging inbox scope ${result.inboxScope}; nothing done.`);
    return;
  }
  print(
    `Purged ${result.inboxDeleted} inbox rows and ${result.deadLettersDeleted} resolved dead letters of group ${options.group} (inbox scope ${result.inboxScope}) in ${result.batches} batches.`,
  );
  for (const h of result.horizons)
    print(`  horizon ${h.topic}/${h.partition}: inbox complete at offsets ≥ ${h.horizon}`);
}

/** Replays for `oncely status`: progress lines, or [] when there are none. */
export function formatReplayStatus(replays: readonly ReplayProgress[]): string[] {
  if (replays.length === 0) return [];
  const lines = ['', 'Replays'];
  for (const r of replays) {
    lines.push(
      `  replay ${r.id} · group ${r.groupId} · topic ${r.topic} · from ${r.from} to ${r.to}${r.forced ? ' · FORCED' : ''} · by ${r.requestedBy} at ${r.createdAt.toISOString()}` +
        (r.completedAt === null ? ' · in progress' : ` · completed ${r.completedAt.toISOString()}`),
    );
    for (const p of r.partitions) {
      lines.push(
        `    partition ${p.partition}: at ${p.position ?? '—'} of ${p.start}–${p.end}; ${p.skippedSoFar} skipped as duplicates, ${p.appliedSoFar} applied so far`,
      );
    }
  }
  return lines;
}

export { replayStatus };

async function loadHandlers(modulePath: string): Promise<AnyHandlerDefinition[]> {
  const exports = await importUserModule(modulePath);
  const candidates = Object.values(exports).flatMap((value) => (Array.isArray(value) ? (value as unknown[]) : [value]));
  const handlers = candidates.filter(isHandlerDefinition);
  if (handlers.length === 0) {
    throw configError(
      'handlers',
      `${modulePath} exports no handler made with defineHandler(); export your consumer's handlers`,
    );
  }
  return handlers;
}

/** A duration in milliseconds as the help shows defaults: `7d`, `1h`, `500ms`. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
