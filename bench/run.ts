/**
 * `npm run bench`: oncely against plain kafkajs and hand-written transactions, on one broker and
 * one database, with the same data for every variant.
 *
 * 1. Starts Kafka and PostgreSQL (KAFKA_BROKERS / DATABASE_URL if set), creates a fresh database
 *    and migrates it.
 * 2. Produces BENCH_EVENTS payment events (default 200,000) once, to one 4-partition topic.
 * 3. Measures the database's own limits (commit rate, batched insert rate).
 * 4. Runs each variant in a process of its own, one after the other, each with a fresh consumer
 *    group reading the whole topic (D re-reads B's), and collects what each one measured.
 * 5. Prints the table and the ratios, writes bench/results/latest.json, and exits 1 when a
 *    variant's correctness check failed. Performance targets are reported, never enforced.
 *
 * The variants run compiled, under plain Node, with oncely from the built dist/: `npm run bench`
 * builds both first, and this script refuses to start when either is older than its source.
 *
 * BENCH_VARIANTS=R,B0 runs a subset; BENCH_STEP_EVENTS sets the step topic's size for S and SK
 * (default 12,000: each of S's messages waits 20 ms for its provider, and SK needs a window well
 * past its ramp); BENCH_INBOX_ROWS sets B-full's prefill (default 5,000,000);
 * BENCH_CPU_PROF=P,B writes a V8 CPU profile of those variants' processes to bench/results/
 * (summarize one with `npx tsx bench/profile-summary.ts bench/results/P.cpuprofile`).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { type Admin, Kafka, logLevel, type Producer } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';

import { devServicesInternals } from '../src/dev/dev-services.js';
import { startDevServices } from '../src/dev/index.js';
import { migrate } from '../src/index.js';
import { type DatabaseLimits, measureDatabaseLimits, postgresSettings } from './db-limits.js';
import { monitorHost } from './host-load.js';
import { RESULT_MARKER, VARIANT_NAMES, type VariantConfig, type VariantName, type VariantResult } from './protocol.js';
import {
  computeRatios,
  DEFINITIONS,
  formatLimits,
  formatDisturbance,
  formatRatios,
  formatTable,
  formatVariantLegend,
  peakRss,
  ratiosByName,
} from './report.js';
import { type Produced, produceEvents } from './produce.js';
import {
  inboxName,
  type LedgerSummary,
  ledgerName,
  PARTITIONS,
  resetInbox,
  resetLedger,
  summarizeLedger,
} from './workload.js';

/**
 * The last resort against a variant that keeps trickling outcomes without finishing (the variants
 * fail on their own after a minute without progress, and at the first retry or dead letter).
 */
const VARIANT_TIMEOUT_MS = 5 * 60_000;
const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
const VARIANT_SCRIPT = fileURLToPath(new URL('./dist/variant.js', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
/** Variants whose handler calls the provider through ctx.step: they read the step topic. */
const STEP_VARIANTS: readonly VariantName[] = ['S', 'SK'];
/** What one provider call takes in S and SK. */
const PROVIDER_LATENCY_MS = 20;
/** Variants with a hand-written inbox table of their own (`bench.inbox_<variant>`). */
const HAND_WRITTEN_INBOX: readonly VariantName[] = ['B1', 'P1'];

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw.replaceAll('_', ''));
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive whole number, got "${raw}"`);
  return value;
}

function selectedVariants(): VariantName[] {
  const raw = process.env.BENCH_VARIANTS;
  if (raw === undefined || raw.trim() === '') return [...VARIANT_NAMES];
  const names = raw.split(',').map((s) => s.trim());
  for (const name of names) {
    if (!VARIANT_NAMES.includes(name as VariantName))
      throw new Error(`BENCH_VARIANTS: unknown variant "${name}"; use ${VARIANT_NAMES.join(',')}`);
  }
  if (names.includes('D') && !names.includes('B')) throw new Error('BENCH_VARIANTS: D replays B’s range; include B');
  // Always in the canonical order: D must follow B, and B-full's prefill must not slow the others.
  return VARIANT_NAMES.filter((name) => names.includes(name));
}

/** What the variant processes run, compiled to bench/dist/ by bench/tsconfig.variant.json. */
const VARIANT_SOURCES = ['variant.ts', 'variants.ts', 'meter.ts', 'protocol.ts', 'workload.ts'];

/** The newest modification time of `files`, in ms. */
async function newest(files: readonly string[]): Promise<number> {
  const times = await Promise.all(files.map(async (f) => (await stat(f)).mtimeMs));
  return Math.max(0, ...times);
}

/**
 * The variants measure the built code: a dist/ older than src/ (or a bench/dist/ older than the
 * variants' source) would measure something else than what is checked out. `npm run bench` builds
 * both first; this catches `npx tsx bench/run.ts` after an edit.
 */
async function assertBuilt(): Promise<void> {
  const builtAt = async (file: string): Promise<number> =>
    (await stat(join(REPO_ROOT, file)).catch(() => undefined))?.mtimeMs ?? 0;
  const src = join(REPO_ROOT, 'src');
  const oncelySources = (await readdir(src, { recursive: true }))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(src, f));
  const stale: string[] = [];
  if ((await builtAt('dist/index.js')) < (await newest(oncelySources))) stale.push('dist/');
  if (
    (await builtAt('bench/dist/variant.js')) < (await newest(VARIANT_SOURCES.map((f) => join(REPO_ROOT, 'bench', f))))
  )
    stale.push('bench/dist/');
  if (stale.length > 0) {
    throw new Error(
      `${stale.join(' and ')} missing or older than the source: run \`npm run bench\` (it builds both), ` +
        'or `npm run build && npx tsc -p bench/tsconfig.variant.json` first',
    );
  }
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** Runs one variant in its own process and returns what it printed. */
async function runChild(
  config: VariantConfig,
  cpuProfile: boolean,
  timeoutMs: number,
): Promise<{ result: VariantResult; pid: number | undefined }> {
  // A directory per profiled variant: a worker thread would write a profile of its own next to the
  // main thread's, and only the main thread's (the largest) is kept.
  const profileDir = `${RESULTS_DIR}cpu-${config.variant}`;
  const profileArgs = cpuProfile ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const child = spawn(process.execPath, [...profileArgs, VARIANT_SCRIPT, config.variant, JSON.stringify(config)], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => (stdout += chunk));
  const result = await new Promise<VariantResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`variant ${config.variant} did not finish within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT_MARKER));
      if (line === undefined) {
        reject(new Error(`variant ${config.variant} exited (${signal ?? code}) without a result`));
        return;
      }
      resolve(JSON.parse(line.slice(RESULT_MARKER.length)) as VariantResult);
    });
  });
  if (cpuProfile) await keepMainThreadProfile(profileDir, `${RESULTS_DIR}${config.variant}.cpuprofile`);
  return { result, pid: child.pid };
}

async function keepMainThreadProfile(dir: string, target: string): Promise<void> {
  const files = await readdir(dir);
  const sized = await Promise.all(files.map(async (f) => ({ f, size: (await stat(join(dir, f))).size })));
  const main = sized.sort((a, b) => b.size - a.size)[0];
  if (main !== undefined) await rename(join(dir, main.f), target);
  await rm(dir, { recursive: true, force: true });
  log(`  CPU profile: ${target.slice(REPO_ROOT.length)}`);
}

/** Sets a stopped group's Kafka offsets back to the start; retried while the broker still sees members. */
async function rewindGroup(kafka: Kafka, groupId: string, topic: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        await admin.setOffsets({
          groupId,
          topic,
          partitions: Array.from({ length: PARTITIONS }, (_, partition) => ({ partition, offset: '0' })),
        });
        return;
      } catch (error) {
        if (attempt >= 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  } finally {
    await admin.disconnect();
  }
}

/**
 * Fills the inbox with rows of other consumer groups, as a long-running deployment's inbox would
 * hold: random UUID ids, 30 days of processed_at, and group names that sort both before and after
 * the bench's own, so B-full claims into the middle of the primary key, not at its edge.
 *
 * Bulk-loaded the way a DBA would: the inbox's indexes and key constraints are dropped, the rows
 * inserted, and each one re-created from its own stored definition, in one transaction (so the
 * schema afterwards is exactly what the migrations made). That is about three times faster than
 * maintaining a random-UUID primary key row by row, and it is setup, not what is measured. When
 * that fails (a role without the privilege), the rows are inserted with the indexes in place.
 */
async function prefillInbox(pool: pg.Pool, rows: number): Promise<{ rows: number; seconds: number }> {
  const started = performance.now();
  const insert = `
    INSERT INTO oncely.inbox
      (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at, processed_at)
    SELECT (ARRAY['archive', 'ledger', 'payouts', 'settlement'])[1 + g % 4] || '-' || (g % 5), gen_random_uuid()::text,
           'payments-archive', (g % 4)::int, g / 4, sha256(int8send(g)), 'processed', 1, at, at
      FROM (SELECT g, now() - random() * interval '30 days' AS at
              FROM generate_series($1::bigint, $2::bigint) g) s`;
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    try {
      const { rows: constraints } = await client.query<{ name: string; definition: string }>(
        `SELECT conname AS name, pg_get_constraintdef(oid) AS definition FROM pg_constraint
          WHERE conrelid = 'oncely.inbox'::regclass AND contype IN ('p', 'u')`,
      );
      const { rows: indexes } = await client.query<{ name: string; definition: string }>(
        `SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS definition FROM pg_index i
          WHERE indrelid = 'oncely.inbox'::regclass
            AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)`,
      );
      for (const c of constraints) await client.query(`ALTER TABLE oncely.inbox DROP CONSTRAINT ${quoteIdent(c.name)}`);
      for (const i of indexes) await client.query(`DROP INDEX ${i.name}`);
      await client.query(insert, [1, rows]);
      // Sorting for the rebuilt indexes is the slow part: give it memory.
      await client.query("SET LOCAL maintenance_work_mem = '512MB'");
      for (const c of constraints) {
        await client.query(`ALTER TABLE oncely.inbox ADD CONSTRAINT ${quoteIdent(c.name)} ${c.definition}`);
      }
      for (const i of indexes) await client.query(i.definition);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK');
      log(
        `  bulk load failed (${error instanceof Error ? error.message : String(error)}); inserting with the indexes in place`,
      );
      for (let from = 1; from <= rows; from += 1_000_000) {
        await client.query(insert, [from, Math.min(rows, from + 999_999)]);
      }
    }
  } finally {
    client.release();
  }
  // Part of the prefill's time: a long-lived inbox has been vacuumed (hint bits, visibility map).
  await pool.query('VACUUM (ANALYZE) oncely.inbox');
  await checkpoint(pool);
  return { rows, seconds: (performance.now() - started) / 1000 };
}

const quoteIdent = (name: string): string => `"${name.replaceAll('"', '""')}"`;

/**
 * Writes dirty buffers out before a variant, so no variant pays for the previous one's writes
 * (or the prefill's) in the middle of its measurement. Needs superuser or pg_checkpoint; skipped
 * without.
 */
async function checkpoint(pool: pg.Pool): Promise<void> {
  await pool.query('CHECKPOINT').catch(() => undefined);
}

/** Produces the payment topic, and the step topic when S or SK runs. */
async function produceAll(
  admin: Admin,
  producer: Producer,
  plan: {
    readonly topic: string;
    readonly events: number;
    readonly stepTopic: string;
    readonly stepEvents: number;
    readonly variants: readonly VariantName[];
  },
): Promise<{ produced: Produced; stepsProduced: Produced | undefined }> {
  const produced = await produceEvents(producer, plan.topic, plan.events);
  if (!plan.variants.some((v) => STEP_VARIANTS.includes(v))) return { produced, stepsProduced: undefined };
  await admin.createTopics({ topics: [{ topic: plan.stepTopic, numPartitions: PARTITIONS }], waitForLeaders: true });
  const stepsProduced = await produceEvents(producer, plan.stepTopic, plan.stepEvents);
  log(
    `produced ${plan.stepEvents.toLocaleString('en-US')} events for S and SK in ${stepsProduced.seconds.toFixed(1)} s`,
  );
  return { produced, stepsProduced };
}

async function main(): Promise<number> {
  const wallStarted = performance.now();
  await assertBuilt();
  // Other work on the machine skews every figure: recorded so a reader can tell a quiet run.
  const loadAverage = os.loadavg();
  const events = positiveInt('BENCH_EVENTS', 200_000);
  const inboxRows = positiveInt('BENCH_INBOX_ROWS', 5_000_000);
  const limitSeconds = positiveInt('BENCH_LIMIT_SECONDS', 5);
  const variants = selectedVariants();
  const profiled = new Set((process.env.BENCH_CPU_PROF ?? '').split(',').map((s) => s.trim()));
  const run = randomBytes(3).toString('hex');
  const topic = `bench-payments-${run}`;
  // S and SK call a 20 ms provider per message: a topic of their own, smaller than the others'.
  const stepTopic = `bench-steps-${run}`;
  const stepEvents = positiveInt('BENCH_STEP_EVENTS', 12_000);
  log(`oncely bench · run ${run} · ${events.toLocaleString('en-US')} events · ${variants.join(', ')}`);

  const services = await startDevServices({ logger: pino({ level: 'warn' }, pino.destination(2)) });
  const serverPool = new pg.Pool({ connectionString: services.postgres.url, max: 1 });
  serverPool.on('error', () => undefined);
  const database = `oncely_bench_${run}`;
  let pool: pg.Pool | undefined;
  const kafka = new Kafka({ clientId: 'oncely-bench', brokers: services.kafka.brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  const groups: string[] = [];
  try {
    // A database of its own: the inbox starts empty and the 5M-row prefill vanishes with it.
    await serverPool.query(`CREATE DATABASE ${database}`).catch((error: unknown) => {
      throw new Error(
        `cannot create the bench's database ${database} (${error instanceof Error ? error.message : String(error)}); ` +
          'the role in DATABASE_URL needs CREATEDB, or unset DATABASE_URL to use a throwaway local server',
      );
    });
    const databaseUrl = withDatabase(services.postgres.url, database);
    pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
    pool.on('error', () => undefined);
    await migrate(pool);
    const settings = await postgresSettings(pool);
    log(
      `Kafka ${services.kafka.source} · PostgreSQL ${settings.version} (${services.postgres.source}), fsync ${settings.fsync}, synchronous_commit ${settings.synchronous_commit}`,
    );

    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true });
    const producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
    const { produced, stepsProduced } = await produceAll(admin, producer, {
      topic,
      events,
      stepTopic,
      stepEvents,
      variants,
    }).finally(() => producer.disconnect());
    log(`produced ${events.toLocaleString('en-US')} events in ${produced.seconds.toFixed(1)} s`);

    log(`measuring the database's limits (${limitSeconds} s each)…`);
    const limits: DatabaseLimits = await measureDatabaseLimits(databaseUrl, limitSeconds);

    const results: VariantResult[] = [];
    const failures: string[] = [];
    let prefill: { rows: number; seconds: number } | undefined;
    const groupOf = new Map<VariantName, string>();
    // This run's processes: their CPU is part of what is measured, anyone else's disturbs it.
    const internals = devServicesInternals(services);
    const ownProcesses = [process.pid, internals?.kafkaPid(), internals?.postgresPid()];
    const db = pool;
    const prepareVariant = async (
      variant: VariantName,
    ): Promise<{ groupId: string; ledger: string; inbox?: string; ledgerBefore?: LedgerSummary }> => {
      if (variant === 'D') {
        // The replay: B's group and ledger, with Kafka's and oncely's offsets both set back to the
        // start, so every message is read again and must be classified a duplicate.
        const groupId = groupOf.get('B');
        if (groupId === undefined) throw new Error('D replays B’s range, and B did not run');
        const ledger = ledgerName('B');
        await rewindGroup(kafka, groupId, topic);
        await db.query('UPDATE oncely.offsets SET next_offset = 0 WHERE consumer_group = $1', [groupId]);
        // A replay happens long after the range was first processed, when autovacuum has long
        // analyzed it. Without this, the duplicate lookup's plan depends on when autoanalyze last
        // ran: statistics taken while only P's group existed made PostgreSQL scan the whole group
        // for each 500-id lookup (223 ms instead of 4 ms), and D varied fivefold between runs.
        await db.query('VACUUM (ANALYZE) oncely.inbox, oncely.offsets');
        return { groupId, ledger, ledgerBefore: await summarizeLedger(db, ledger) };
      }
      if (variant === 'B-full') {
        log(`prefilling the inbox with ${inboxRows.toLocaleString('en-US')} rows of other groups…`);
        prefill = await prefillInbox(db, inboxRows);
        log(`  prefill took ${prefill.seconds.toFixed(1)} s`);
      }
      const groupId = `bench-${variant.toLowerCase()}-${run}`;
      const ledger = ledgerName(variant);
      await resetLedger(db, ledger);
      groups.push(groupId);
      if (!HAND_WRITTEN_INBOX.includes(variant)) return { groupId, ledger };
      const inbox = inboxName(variant);
      await resetInbox(db, inbox);
      return { groupId, ledger, inbox };
    };
    for (const variant of variants) {
      try {
        // Preparing is part of the variant: when it fails, that variant fails and the run goes on.
        const { groupId, ledger, inbox, ledgerBefore } = await prepareVariant(variant);
        groupOf.set(variant, groupId);
        await checkpoint(pool);
        const onSteps = STEP_VARIANTS.includes(variant) && stepsProduced !== undefined;
        const input = onSteps ? stepsProduced : produced;
        const config: VariantConfig = {
          variant,
          brokers: services.kafka.brokers,
          databaseUrl,
          topic: onSteps ? stepTopic : topic,
          groupId,
          ledger,
          ...(inbox === undefined ? {} : { inbox }),
          events: input.events,
          totalCents: input.totalCents,
          endOffsets: input.endOffsets,
          ...(onSteps ? { providerLatencyMs: PROVIDER_LATENCY_MS } : {}),
          ...(ledgerBefore === undefined ? {} : { ledgerBefore }),
          idleTimeoutMs: 60_000,
        };
        log(`${variant}: running…`);
        const monitor = monitorHost(ownProcesses);
        const child = await runChild(config, profiled.has(variant), VARIANT_TIMEOUT_MS).catch((error: unknown) => {
          monitor.stop({ pid: undefined, cpuSeconds: 0 });
          throw error;
        });
        const otherLoad = monitor.stop({ pid: child.pid, cpuSeconds: child.result.cpuSecondsTotal });
        const result: VariantResult = otherLoad === undefined ? child.result : { ...child.result, otherLoad };
        results.push(result);
        log(
          `${variant}: ${Math.round(result.messagesPerSecond).toLocaleString('en-US')} msgs/s, ${result.seconds.toFixed(1)} s` +
            (result.problems.length > 0 ? ` — FAILED: ${result.problems.join('; ')}` : ''),
        );
        for (const problem of result.problems) failures.push(`${variant}: ${problem}`);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        log(`${variant}: FAILED — ${message}`);
        failures.push(`${variant}: ${message}`);
      }
    }

    const ratios = computeRatios(results);
    const rss = peakRss(results);
    const wallSeconds = (performance.now() - wallStarted) / 1000;
    const report = [
      '',
      `oncely bench · ${events.toLocaleString('en-US')} events of ~200 B · ${PARTITIONS} partitions · concurrency ${PARTITIONS} · ${new Date().toISOString()}`,
      `Node ${process.version} · ${os.cpus().length} CPUs (load average ${loadAverage.map((l) => l.toFixed(2)).join(' ')} before the run) · PostgreSQL ${settings.version} (fsync ${settings.fsync}, synchronous_commit ${settings.synchronous_commit}, wal_sync_method ${settings.wal_sync_method}, shared_buffers ${settings.shared_buffers}) · Kafka ${services.kafka.source}`,
      '',
      formatTable(results),
      ...formatDisturbance(results),
      '',
      formatVariantLegend(results),
      '',
      'Ratios of throughput and peak RSS against their goal and must (reported, not enforced):',
      formatRatios(ratios, rss),
      '',
      'This database’s limits, measured in this run:',
      formatLimits(limits),
      ...(prefill === undefined
        ? []
        : [
            `  inbox prefill for B-full: ${prefill.rows.toLocaleString('en-US')} rows in ${prefill.seconds.toFixed(1)} s (with VACUUM ANALYZE and CHECKPOINT)`,
          ]),
      `  produce: ${events.toLocaleString('en-US')} events in ${produced.seconds.toFixed(1)} s`,
      '',
      'Definitions:',
      ...Object.values(DEFINITIONS).map((d) => `  ${d}`),
      '',
      `wall time ${wallSeconds.toFixed(0)} s`,
    ].join('\n');
    console.log(report);

    await mkdir(RESULTS_DIR, { recursive: true });
    const json = {
      date: new Date().toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      loadAverageBefore: loadAverage,
      events,
      partitions: PARTITIONS,
      concurrency: PARTITIONS,
      kafka: { source: services.kafka.source },
      postgres: { source: services.postgres.source, ...settings },
      limits,
      produce: { seconds: produced.seconds },
      prefill,
      variants: results,
      // By name: B/B1, B/B0, G/P1, G/B, P/P1, D/B, B-full/B, …, peakRssMb (null: not measured).
      ratios: ratiosByName(ratios, rss),
      targets: [...ratios, rss],
      definitions: DEFINITIONS,
      wallSeconds,
      failures,
    };
    await writeFile(`${RESULTS_DIR}latest.json`, `${JSON.stringify(json, null, 2)}\n`);
    console.log(`results: bench/results/latest.json`);

    if (failures.length > 0) {
      console.error(`\nBENCH FAILED: ${failures.length} correctness check(s) did not hold:`);
      for (const failure of failures) console.error(`  ✗ ${failure}`);
      return 1;
    }
    return 0;
  } finally {
    await admin.deleteGroups(groups).catch(() => undefined);
    await admin.deleteTopics({ topics: [topic, stepTopic] }).catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
    await pool?.end();
    await serverPool.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await serverPool.end();
    await services.stop();
  }
}

process.exitCode = await main();
