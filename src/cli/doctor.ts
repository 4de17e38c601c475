import { createKafkaClient, type KafkaAdmin } from '../kafka/client.js';
import pg from 'pg';

import { countOpenDeadLetters } from '../inbox/status.js';
import { readConsumerLag } from '../kafka/lag.js';
import { latestMigrationId, migrationStatus } from '../migrate/migrate.js';
import { colours } from './output.js';

export type CheckVerdict = 'OK' | 'WARN' | 'FAIL';

export interface Check {
  readonly name: string;
  readonly verdict: CheckVerdict;
  readonly detail: string;
  /** What to do about a WARN or FAIL. */
  readonly fix?: string;
}

export interface DoctorOptions {
  readonly databaseUrl: string;
  readonly brokers?: string;
  /** Only these groups; default: every group that has recorded offsets. */
  readonly group?: string[];
  /** Lag above this many records is a WARN. */
  readonly maxLag: number;
  /** A session idle in a transaction longer than this many seconds is a WARN (a wedged pool). Default 30. */
  readonly maxIdleInTransaction?: number;
  readonly json?: boolean;
}

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/**
 * `oncely doctor`: the database and its schema, then per group its topics, state in Kafka, lag and
 * open dead letters. Each check says OK, WARN or FAIL, and what to do about anything but OK. Exits
 * with 1 when a check fails, so a deployment pipeline can run it.
 */
export async function runDoctor(options: DoctorOptions): Promise<void> {
  const checks: Check[] = [];
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 2, connectionTimeoutMillis: 5_000 });
  pool.on('error', () => undefined);
  try {
    await diagnose(options, pool, checks);
  } finally {
    await pool.end();
  }
  if (options.json === true) {
    process.stdout.write(`${JSON.stringify({ checks }, null, 2)}\n`);
  } else {
    const c = colours();
    const paint = { OK: c.green, WARN: c.yellow, FAIL: c.red };
    const lines = checks.flatMap((check) => [
      `${paint[check.verdict](check.verdict.padEnd(4))}  ${c.bold(check.name)}: ${check.detail}`,
      ...(check.fix === undefined ? [] : [`      fix: ${check.fix}`]),
    ]);
    const failed = checks.filter((x) => x.verdict === 'FAIL').length;
    const warned = checks.filter((x) => x.verdict === 'WARN').length;
    lines.push('', `${checks.length} checks: ${failed} failed, ${warned} warnings.`);
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  if (checks.some((x) => x.verdict === 'FAIL')) process.exitCode = 1;
}

async function diagnose(options: DoctorOptions, pool: pg.Pool, checks: Check[]): Promise<void> {
  try {
    await pool.query('SELECT 1');
    checks.push({ name: 'database', verdict: 'OK', detail: 'reachable' });
  } catch (error) {
    checks.push({
      name: 'database',
      verdict: 'FAIL',
      detail: message(error),
      fix: 'check --database-url / DATABASE_URL and that PostgreSQL accepts connections from here',
    });
    return;
  }

  const status = await migrationStatus(pool);
  const needed = await latestMigrationId();
  const newest = Math.max(0, ...status.applied.map((m) => m.id));
  if (newest > needed) {
    checks.push({
      name: 'migrations',
      verdict: 'FAIL',
      detail: `the schema is at version ${newest}, newer than this oncely knows (${needed})`,
      fix: 'upgrade oncely here: consumers of this version refuse to start (ONCELY_SCHEMA_TOO_NEW)',
    });
  } else if (status.pending.length > 0) {
    checks.push({
      name: 'migrations',
      verdict: 'FAIL',
      detail: `${status.pending.length} pending (${status.pending.map((m) => m.name).join(', ')})`,
      fix: 'run `oncely migrate` (or `await migrate(db)` at start-up)',
    });
    return;
  } else {
    checks.push({ name: 'migrations', verdict: 'OK', detail: `${status.applied.length} applied, schema current` });
  }

  checks.push(await connectionsCheck(pool, options.maxIdleInTransaction ?? 30));

  const recorded = await pool.query<{ consumer_group: string; topic: string }>(
    'SELECT DISTINCT consumer_group, topic FROM oncely.offsets ORDER BY 1, 2',
  );
  const topicsOf = new Map<string, string[]>();
  for (const row of recorded.rows)
    topicsOf.set(row.consumer_group, [...(topicsOf.get(row.consumer_group) ?? []), row.topic]);
  const groups = options.group ?? [...topicsOf.keys()];
  if (groups.length === 0) {
    checks.push({
      name: 'groups',
      verdict: 'WARN',
      detail: 'no consumer group has recorded an outcome yet',
      fix: 'start a consumer, or name one with --group',
    });
  }

  for (const group of groups) {
    const open = (await countOpenDeadLetters(pool, group)).reduce((sum, row) => sum + row.open, 0);
    checks.push(
      open === 0
        ? { name: `${group}: dead letters`, verdict: 'OK', detail: 'none open' }
        : {
            name: `${group}: dead letters`,
            verdict: 'WARN',
            detail: `${open} open`,
            fix: `inspect with \`oncely dead-letters list --group ${group}\`, then retry or discard each`,
          },
    );
  }

  if (options.brokers === undefined || options.brokers === '') {
    checks.push({
      name: 'kafka',
      verdict: 'WARN',
      detail: 'not checked: no brokers given',
      fix: 'pass --brokers host:port (or set KAFKA_BROKERS) to check topics, group state and lag',
    });
    return;
  }
  const kafka = createKafkaClient({
    clientId: 'oncely-doctor',
    brokers: options.brokers,
    connectionTimeoutMs: 3_000,
    retries: 1,
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
  } catch (error) {
    checks.push({
      name: 'kafka',
      verdict: 'FAIL',
      detail: message(error),
      fix: 'check --brokers / KAFKA_BROKERS and that the brokers are reachable from here',
    });
    return;
  }
  try {
    checks.push({ name: 'kafka', verdict: 'OK', detail: `reachable at ${options.brokers}` });
    const existing = new Set(await admin.listTopics());
    for (const group of groups) await diagnoseGroup(admin, group, topicsOf.get(group) ?? [], existing, options, checks);
  } finally {
    await admin.disconnect();
  }
}

async function diagnoseGroup(
  admin: KafkaAdmin,
  group: string,
  recordedTopics: readonly string[],
  existing: ReadonlySet<string>,
  options: DoctorOptions,
  checks: Check[],
): Promise<void> {
  const missing = recordedTopics.filter((t) => !existing.has(t));
  if (recordedTopics.length > 0) {
    checks.push(
      missing.length === 0
        ? { name: `${group}: topics`, verdict: 'OK', detail: recordedTopics.join(', ') }
        : {
            name: `${group}: topics`,
            verdict: 'FAIL',
            detail: `missing on the broker: ${missing.join(', ')}`,
            fix: 'a topic was deleted or the brokers are the wrong cluster; re-creating it restarts its offsets (runbook: docs/operating.md#runbook-offsets-that-disagree)',
          },
    );
  }
  const { groups } = await admin.describeGroups([group]);
  const state = groups[0]?.state ?? 'Unknown';
  const members = groups[0]?.members.length ?? 0;
  checks.push(
    state === 'Stable'
      ? { name: `${group}: group`, verdict: 'OK', detail: `Stable, ${members} member${members === 1 ? '' : 's'}` }
      : {
          name: `${group}: group`,
          verdict: 'WARN',
          detail: `${state}${members === 0 ? ', no member running' : ''}`,
          fix:
            state === 'Empty' || state === 'Dead'
              ? 'no consumer of this group is running: start one, or ignore if it is meant to be stopped'
              : 'the group is rebalancing: look again in a minute; if it stays so, check consumer logs for crashes',
        },
  );
  const present = recordedTopics.filter((t) => existing.has(t));
  if (present.length === 0) return;
  const lags = await readConsumerLag(admin, group, present);
  const total = lags.reduce((sum, p) => sum + p.lag, 0);
  const worst = lags.reduce((a, b) => (b.lag > a.lag ? b : a), lags[0] ?? { topic: '', partition: 0, lag: 0 });
  checks.push(
    total <= options.maxLag
      ? { name: `${group}: lag`, verdict: 'OK', detail: `${total} records behind` }
      : {
          name: `${group}: lag`,
          verdict: 'WARN',
          detail: `${total} records behind (most on ${worst.topic}/${worst.partition}: ${worst.lag})`,
          fix: 'check that consumers run and are not paused or failing (logs, consumer.paused()); add consumers or raise concurrency if they keep up too slowly',
        },
  );
}

/**
 * Pool exhaustion as the database sees it: sessions of this database that sit idle inside a
 * transaction for longer than `maxIdleSeconds` (a process holding pooled connections while it waits
 * for something that does not come: the wedge of issue 20), and connections near the server's
 * `max_connections`. Another process's pool is not visible from here: `poolReadiness()` reports it
 * from inside.
 */
async function connectionsCheck(pool: pg.Pool, maxIdleSeconds: number): Promise<Check> {
  const { rows } = await pool.query<{ idle: number; oldest: number | null; used: number; allowed: number }>(
    `SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%'
                               AND now() - state_change > $1 * interval '1 second')::int AS idle,
            extract(epoch FROM max(now() - state_change) FILTER (WHERE state LIKE 'idle in transaction%'))::float8 AS oldest,
            (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend') AS used,
            current_setting('max_connections')::int AS allowed
       FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid()`,
    [maxIdleSeconds],
  );
  const row = rows[0] ?? { idle: 0, oldest: null, used: 0, allowed: 0 };
  if (row.idle > 0) {
    return {
      name: 'connections',
      verdict: 'WARN',
      detail:
        `${row.idle} session(s) idle in a transaction for over ${maxIdleSeconds} s (oldest ${Math.round(row.oldest ?? 0)} s): ` +
        'a process may hold its pool while waiting for a connection it cannot get',
      fix:
        "see the sessions in pg_stat_activity (application_name, client_addr); check that process's poolReadiness() " +
        'and size its pool: max ≥ 2 × idempotent requests at once + a consumer’s concurrency + 1',
    };
  }
  if (row.allowed > 0 && row.used >= 0.9 * row.allowed) {
    return {
      name: 'connections',
      verdict: 'WARN',
      detail: `${row.used} of the server's ${row.allowed} connections in use`,
      fix: "lower the pools' max, or raise max_connections (or put a connection pooler in front)",
    };
  }
  return {
    name: 'connections',
    verdict: 'OK',
    detail: `${row.used} of ${row.allowed} in use; none idle in a transaction for over ${maxIdleSeconds} s`,
  };
}
