import type pg from 'pg';

import type { DeadLetterReason, StoredError, StoredHeader } from './dead-letters.js';
import type { InboxStatus } from './claims.js';

export type DeadLetterStatus = 'open' | 'retried' | 'discarded';

/** One row of `oncely dead-letters list`. */
export interface DeadLetterSummary {
  readonly id: string;
  readonly groupId: string;
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly messageId: string | null;
  readonly reason: DeadLetterReason;
  readonly attempts: number;
  readonly status: DeadLetterStatus;
  readonly errorMessage: string;
  readonly createdAt: Date;
  readonly resolvedAt: Date | null;
}

/** A dead letter in full: the stored record and everything known about its failure. */
export interface DeadLetter extends DeadLetterSummary {
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: readonly StoredHeader[];
  readonly error: StoredError;
  readonly resolution: string | null;
  /** The record's Kafka timestamp (null for dead letters stored before it was kept). */
  readonly recordTimestamp: Date | null;
}

export interface DeadLetterFilter {
  readonly groupId?: string;
  readonly topic?: string;
  readonly reason?: DeadLetterReason;
  /** Default `open`; `all` lists every status. */
  readonly status?: DeadLetterStatus | 'all';
  /** Only the dead letters of this message id (exact). */
  readonly messageId?: string;
  /** Only those stored at or after this time. */
  readonly since?: Date;
  /** Only those stored before this time. */
  readonly until?: Date;
  /**
   * Only those whose value contains these bytes (a string is taken as UTF-8). A scan of the
   * matching rows' values: narrow it with the other filters on a large table.
   */
  readonly valueContains?: string | Buffer;
  /** Default 100. */
  readonly limit?: number;
}

interface Row {
  id: string;
  consumer_group: string;
  topic: string;
  partition: number;
  offset: string;
  message_id: string | null;
  reason: DeadLetterReason;
  attempts: number;
  status: DeadLetterStatus;
  error: StoredError;
  created_at: Date;
  resolved_at: Date | null;
  key?: Buffer | null;
  value?: Buffer | null;
  headers?: StoredHeader[];
  resolution?: string | null;
  record_timestamp?: Date | null;
}

const SUMMARY_COLUMNS = `id, consumer_group, topic, partition, "offset", message_id, reason, attempts, status,
  error, created_at, resolved_at`;

function toSummary(row: Row): DeadLetterSummary {
  return {
    id: row.id,
    groupId: row.consumer_group,
    topic: row.topic,
    partition: row.partition,
    offset: row.offset,
    messageId: row.message_id,
    reason: row.reason,
    attempts: row.attempts,
    status: row.status,
    errorMessage: row.error.message,
    createdAt: row.created_at,
    resolvedAt: row.resolved_at,
  };
}

function toDeadLetter(row: Row): DeadLetter {
  return {
    ...toSummary(row),
    key: row.key ?? null,
    value: row.value ?? null,
    headers: row.headers ?? [],
    error: row.error,
    resolution: row.resolution ?? null,
    recordTimestamp: row.record_timestamp ?? null,
  };
}

/**
 * Dead letters matching `filter`, oldest first. A group is looked up in its inbox scope (dead
 * letters are keyed by the scope, which a group renamed with `inboxScope` does not share its name
 * with): the scope its consumer recorded, or the group id itself.
 */
export async function selectDeadLetters(pool: pg.Pool, filter: DeadLetterFilter = {}): Promise<DeadLetterSummary[]> {
  const status = filter.status ?? 'open';
  const { rows } = await pool.query<Row>(
    `SELECT ${SUMMARY_COLUMNS} FROM oncely.dead_letters
      WHERE ($1::text IS NULL OR consumer_group = COALESCE(
              (SELECT inbox_scope FROM oncely.group_scopes WHERE consumer_group = $1), $1))
        AND ($2::text IS NULL OR topic = $2)
        AND ($3::text IS NULL OR reason = $3)
        AND ($4::text = 'all' OR status = $4)
        AND ($6::text IS NULL OR message_id = $6)
        AND ($7::timestamptz IS NULL OR created_at >= $7)
        AND ($8::timestamptz IS NULL OR created_at < $8)
        AND ($9::bytea IS NULL OR position($9::bytea IN value) > 0)
      ORDER BY id LIMIT $5`,
    [
      filter.groupId ?? null,
      filter.topic ?? null,
      filter.reason ?? null,
      status,
      filter.limit ?? 100,
      filter.messageId ?? null,
      filter.since ?? null,
      filter.until ?? null,
      filter.valueContains === undefined ? null : Buffer.from(filter.valueContains),
    ],
  );
  return rows.map(toSummary);
}

/** One dead letter in full; `lock` takes a row lock for the rest of the transaction. */
export async function selectDeadLetter(
  client: pg.ClientBase | pg.Pool,
  id: string,
  options: { lock?: boolean } = {},
): Promise<DeadLetter | undefined> {
  const { rows } = await client.query<Row>(
    `SELECT ${SUMMARY_COLUMNS}, key, value, headers, resolution, record_timestamp FROM oncely.dead_letters
      WHERE id = $1${options.lock === true ? ' FOR UPDATE' : ''}`,
    [id],
  );
  return rows[0] === undefined ? undefined : toDeadLetter(rows[0]);
}

/** The inbox status of a message id, locked for the rest of the transaction. */
export async function lockInboxStatus(
  client: pg.ClientBase,
  groupId: string,
  messageId: string,
): Promise<{ status: InboxStatus; attempts: number } | undefined> {
  const { rows } = await client.query<{ status: InboxStatus; attempts: number }>(
    'SELECT status, attempts FROM oncely.inbox WHERE consumer_group = $1 AND message_id = $2 FOR UPDATE',
    [groupId, messageId],
  );
  return rows[0];
}

/** Turns a dead-lettered inbox row into a processed one, in the re-drive's transaction. */
export async function markInboxProcessed(
  client: pg.ClientBase,
  groupId: string,
  messageId: string,
  attempts: number,
): Promise<void> {
  await client.query(
    `UPDATE oncely.inbox SET status = 'processed', attempts = $3, processed_at = now()
      WHERE consumer_group = $1 AND message_id = $2 AND status = 'dead_lettered'`,
    [groupId, messageId, attempts],
  );
}

export async function resolveDeadLetter(
  client: pg.ClientBase | pg.Pool,
  id: string,
  status: Exclude<DeadLetterStatus, 'open'>,
  resolution: string,
): Promise<boolean> {
  const { rowCount } = await client.query(
    `UPDATE oncely.dead_letters SET status = $2, resolution = $3, resolved_at = now()
      WHERE id = $1 AND status = 'open'`,
    [id, status, resolution],
  );
  return rowCount === 1;
}

/** Records a failed re-drive: one more attempt, the latest error, still open. */
export async function recordRetryFailure(pool: pg.Pool, id: string, error: StoredError): Promise<void> {
  await pool.query(
    `UPDATE oncely.dead_letters SET attempts = attempts + 1, error = $2::jsonb, resolution = $3
      WHERE id = $1 AND status = 'open'`,
    [id, JSON.stringify(error), `retry failed at ${new Date().toISOString()}`],
  );
}
