/**
 * The outbox's SQL: inserting rows in the caller's transaction, and what the relay, the CLI and
 * retention do with them. No Kafka here.
 */
import type pg from 'pg';

import type { StoredHeader } from '../inbox/dead-letters.js';

export const OUTBOX_STATUSES = ['pending', 'sent', 'parked', 'discarded'] as const;
export type OutboxStatus = (typeof OUTBOX_STATUSES)[number];

/** The channel the insert trigger notifies (migrations/0003_outbox.sql). */
export const OUTBOX_CHANNEL = 'oncely_outbox';

/** The part of a pg client (or pool) these functions use. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}

export interface OutboxInsert {
  readonly messageId: string;
  readonly topic: string;
  readonly partition?: number | undefined;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: readonly StoredHeader[];
  readonly causationId: string | null;
}

export const INSERT_OUTBOX_SQL =
  'INSERT INTO oncely.outbox (message_id, topic, partition, key, value, headers, causation_id) ' +
  'VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) RETURNING id';

export function insertOutboxValues(row: OutboxInsert): unknown[] {
  return [
    row.messageId,
    row.topic,
    row.partition ?? null,
    row.key,
    row.value,
    JSON.stringify(row.headers),
    row.causationId,
  ];
}

/** Inserts one outbox row on a connection inside the caller's transaction. */
export async function insertOutboxRow(client: Queryable, row: OutboxInsert): Promise<bigint> {
  const { rows } = await client.query<{ id: string }>(INSERT_OUTBOX_SQL, insertOutboxValues(row));
  return BigInt(rows[0]?.id ?? '0');
}

/** A row as the relay sends it. */
export interface PendingRow {
  readonly id: string;
  readonly messageId: string;
  readonly topic: string;
  readonly partition: number | null;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: StoredHeader[];
  readonly attempts: number;
}

/**
 * The oldest pending rows, in insertion order, leaving out every row behind a parked row of the
 * same (topic, key): order per key holds, so those wait until the parked one is retried or
 * discarded. Rows of other keys, and rows without a key (which Kafka orders by nothing), go on.
 */
export async function fetchPending(client: Queryable, limit: number): Promise<PendingRow[]> {
  const { rows } = await client.query<{
    id: string;
    message_id: string;
    topic: string;
    partition: number | null;
    key: Buffer | null;
    value: Buffer | null;
    headers: StoredHeader[];
    attempts: number;
  }>(
    `SELECT o.id, o.message_id, o.topic, o.partition, o.key, o.value, o.headers, o.attempts
       FROM oncely.outbox o
      WHERE o.status = 'pending'
        AND NOT EXISTS (SELECT 1 FROM oncely.outbox p
                         WHERE p.status = 'parked' AND p.topic = o.topic AND p.key = o.key AND p.id < o.id)
      ORDER BY o.id
      LIMIT $1`,
    [limit],
  );
  return rows.map((r) => ({
    id: r.id,
    messageId: r.message_id,
    topic: r.topic,
    partition: r.partition,
    key: r.key,
    value: r.value,
    headers: r.headers,
    attempts: r.attempts,
  }));
}

/** A row just marked sent: its topic and `sent_at − created_at`, for the relay latency metric. */
export interface SentRow {
  readonly topic: string;
  readonly latencySeconds: number;
}

/**
 * Marks rows sent: only ever after the broker acknowledged them. With `withLatency` (the relay
 * has metrics), returns what was marked with the latency measured by the database's own clock (no
 * skew between hosts); without, returns nothing, so a relay without metrics does not read 500 rows
 * back per batch.
 */
export async function markSent(client: Queryable, ids: readonly string[], withLatency = false): Promise<SentRow[]> {
  if (ids.length === 0) return [];
  const update = `UPDATE oncely.outbox SET status = 'sent', sent_at = now(), attempts = attempts + 1
      WHERE id = ANY($1::bigint[]) AND status = 'pending'`;
  if (!withLatency) {
    await client.query(update, [ids]);
    return [];
  }
  const { rows } = await client.query<{ topic: string; latency: number }>(
    `${update}
      RETURNING topic, extract(epoch FROM sent_at - created_at)::float8 AS latency`,
    [ids],
  );
  return rows.map((r) => ({ topic: r.topic, latencySeconds: r.latency }));
}

/** Rows counted per backlog read at most: the read stays bounded however far behind the relay is. */
export const BACKLOG_COUNT_LIMIT = 100_000;

/**
 * Unsent rows per topic and status (pending, parked), counting at most
 * {@link BACKLOG_COUNT_LIMIT} rows of each status, and the oldest pending row's age. The scans
 * use the partial indexes of pending and parked rows; sent rows are never read.
 */
export async function readOutboxBacklog(
  client: Queryable,
  limit = BACKLOG_COUNT_LIMIT,
): Promise<{
  counts: { topic: string; status: 'pending' | 'parked'; rows: number }[];
  oldestPendingAgeSeconds: number | null;
}> {
  const { rows } = await client.query<{ topic: string; status: 'pending' | 'parked'; n: string }>(
    `SELECT topic, 'pending' AS status, count(*)::text AS n
       FROM (SELECT topic FROM oncely.outbox WHERE status = 'pending' ORDER BY id LIMIT $1) p GROUP BY topic
     UNION ALL
     SELECT topic, 'parked', count(*)::text
       FROM (SELECT topic FROM oncely.outbox WHERE status = 'parked' LIMIT $1) k GROUP BY topic`,
    [limit],
  );
  const { rows: oldest } = await client.query<{ age: number | null }>(
    `SELECT extract(epoch FROM now() - created_at)::float8 AS age
       FROM oncely.outbox WHERE status = 'pending' ORDER BY id LIMIT 1`,
  );
  return {
    counts: rows.map((r) => ({ topic: r.topic, status: r.status, rows: Number(r.n) })),
    oldestPendingAgeSeconds: oldest[0]?.age ?? null,
  };
}

/** Counts a failed attempt of one row; parks it when it can never be sent. */
export async function recordAttemptFailed(
  client: Queryable,
  id: string,
  error: Record<string, unknown>,
  park: boolean,
): Promise<void> {
  await client.query(
    `UPDATE oncely.outbox
        SET attempts = attempts + 1, last_error = $2::jsonb,
            status = CASE WHEN $3::boolean THEN 'parked' ELSE status END
      WHERE id = $1 AND status = 'pending'`,
    [id, JSON.stringify(error), park],
  );
}

export interface OutboxEntry {
  readonly id: string;
  readonly messageId: string;
  readonly topic: string;
  readonly key: string | null;
  readonly status: OutboxStatus;
  readonly attempts: number;
  readonly lastError: Record<string, unknown> | null;
  readonly causationId: string | null;
  readonly createdAt: Date;
  readonly sentAt: Date | null;
}

export interface OutboxFilter {
  /** Default `parked`. `all` lists every status. */
  readonly status?: OutboxStatus | 'all';
  readonly topic?: string;
  /** Default 100. */
  readonly limit?: number;
}

/** Outbox rows, oldest first (no payloads: keys are shown as text or base64). */
export async function listOutbox(client: Queryable, filter: OutboxFilter = {}): Promise<OutboxEntry[]> {
  const status = filter.status ?? 'parked';
  const { rows } = await client.query<{
    id: string;
    message_id: string;
    topic: string;
    key: Buffer | null;
    status: OutboxStatus;
    attempts: number;
    last_error: Record<string, unknown> | null;
    causation_id: string | null;
    created_at: Date;
    sent_at: Date | null;
  }>(
    `SELECT id, message_id, topic, key, status, attempts, last_error, causation_id, created_at, sent_at
       FROM oncely.outbox
      WHERE ($1::text = 'all' OR status = $1) AND ($2::text IS NULL OR topic = $2)
      ORDER BY id LIMIT $3`,
    [status, filter.topic ?? null, filter.limit ?? 100],
  );
  return rows.map((r) => ({
    id: r.id,
    messageId: r.message_id,
    topic: r.topic,
    key: r.key === null ? null : r.key.toString('utf8'),
    status: r.status,
    attempts: r.attempts,
    lastError: r.last_error,
    causationId: r.causation_id,
    createdAt: r.created_at,
    sentAt: r.sent_at,
  }));
}

/** Counts per status, for `oncely status`. */
export async function outboxCounts(client: Queryable): Promise<Record<OutboxStatus, number>> {
  const { rows } = await client.query<{ status: OutboxStatus; n: string }>(
    'SELECT status, count(*) AS n FROM oncely.outbox GROUP BY status',
  );
  const counts: Record<OutboxStatus, number> = { pending: 0, sent: 0, parked: 0, discarded: 0 };
  for (const r of rows) counts[r.status] = Number(r.n);
  return counts;
}

/**
 * Puts parked rows back to pending (attempts reset), so the relay sends them again; wakes the
 * relay. Returns how many rows changed. `ids` empty: every parked row (narrowed by `topic`).
 */
export async function retryParked(client: Queryable, ids: readonly string[], topic?: string): Promise<number> {
  const { rowCount } = await client.query(
    `UPDATE oncely.outbox SET status = 'pending', attempts = 0
      WHERE status = 'parked' AND (cardinality($1::bigint[]) = 0 OR id = ANY($1::bigint[]))
        AND ($2::text IS NULL OR topic = $2)`,
    [ids, topic ?? null],
  );
  if ((rowCount ?? 0) > 0) await client.query(`SELECT pg_notify('${OUTBOX_CHANNEL}', '')`);
  return rowCount ?? 0;
}

/**
 * Gives up on parked rows: they are never sent, and the rows of their key behind them go on. The
 * row is kept (status `discarded`, the reason in `last_error.discardReason`) until retention.
 */
export async function discardParked(client: Queryable, ids: readonly string[], reason: string): Promise<number> {
  const { rowCount } = await client.query(
    `UPDATE oncely.outbox
        SET status = 'discarded', sent_at = now(),
            last_error = coalesce(last_error, '{}'::jsonb) || jsonb_build_object('discardReason', $2::text)
      WHERE status = 'parked' AND id = ANY($1::bigint[])`,
    [ids, reason],
  );
  if ((rowCount ?? 0) > 0) await client.query(`SELECT pg_notify('${OUTBOX_CHANNEL}', '')`);
  return rowCount ?? 0;
}

export interface PurgeSentOptions {
  /** Sent (and discarded) rows older than this are deleted: milliseconds, or a cut-off Date. Default 1 day. */
  readonly olderThan?: number | Date;
  /** Rows deleted per statement (each its own short transaction). Default 1000. */
  readonly batchSize?: number;
}

/** One day: the default window of `purgeSentOutbox`. */
export const DEFAULT_OUTBOX_RETENTION_MS = 24 * 60 * 60 * 1000;

/**
 * Deletes sent and discarded outbox rows older than the window, oldest first, in small batches so
 * no statement holds locks for long. Pending and parked rows are never deleted: they are events
 * not yet delivered. Returns how many rows were deleted. (The retention job calls it.)
 */
export async function purgeSentOutbox(pool: Queryable, options: PurgeSentOptions = {}): Promise<number> {
  const olderThan = options.olderThan ?? DEFAULT_OUTBOX_RETENTION_MS;
  const cutoff = olderThan instanceof Date ? olderThan : new Date(Date.now() - olderThan);
  const batchSize = options.batchSize ?? 1000;
  let total = 0;
  for (;;) {
    const { rowCount } = await pool.query(
      `DELETE FROM oncely.outbox WHERE id IN (
         SELECT id FROM oncely.outbox
          WHERE status IN ('sent', 'discarded') AND sent_at < $1
          ORDER BY sent_at LIMIT $2)`,
      [cutoff, batchSize],
    );
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < batchSize) return total;
  }
}
