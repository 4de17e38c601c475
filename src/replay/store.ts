import type pg from 'pg';

import type { InboxStatus } from '../inbox/claims.js';

import { resolveInboxScope } from '../inbox/scopes.js';
import { lockScopeRetention } from '../retention/store.js';

/*
 * SQL only: what offsets, replay plans and replay runs read and write in PostgreSQL. No Kafka here
 * (test/unit/architecture.test.ts checks it).
 */

/** Runs `use` in a transaction on one pooled connection: COMMIT when it resolves, ROLLBACK when it throws. */
export async function inPooledTransaction<T>(pool: pg.Pool, use: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: unknown;
  try {
    await client.query('BEGIN');
    const result = await use(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch((rollbackError: unknown) => {
      broken = rollbackError;
    });
    throw error;
  } finally {
    // A connection whose ROLLBACK failed is in an unknown state: destroy it rather than reuse it.
    client.release(broken instanceof Error ? broken : undefined);
  }
}

export interface ResumePointRow {
  readonly groupId: string;
  readonly topic: string;
  readonly partition: number;
  readonly nextOffset: bigint;
  /** The record before the resume point that marks it (migration 0007); undefined when none is recorded. */
  readonly previous: { readonly payloadHash: Buffer; readonly timestamp: string } | undefined;
}

/** `oncely.offsets` rows, optionally narrowed to one group and/or topic. */
export async function readResumePoints(
  pool: pg.Pool | pg.PoolClient,
  filter: { readonly groupId?: string | undefined; readonly topic?: string | undefined },
): Promise<ResumePointRow[]> {
  const { rows } = await pool.query<{
    consumer_group: string;
    topic: string;
    partition: number;
    next_offset: string;
    previous_payload_hash: Buffer | null;
    previous_timestamp: string | null;
  }>(
    `SELECT consumer_group, topic, partition, next_offset, previous_payload_hash, previous_timestamp FROM oncely.offsets
      WHERE ($1::text IS NULL OR consumer_group = $1) AND ($2::text IS NULL OR topic = $2)
      ORDER BY 1, 2, 3`,
    [filter.groupId ?? null, filter.topic ?? null],
  );
  return rows.map((r) => ({
    groupId: r.consumer_group,
    topic: r.topic,
    partition: r.partition,
    nextOffset: BigInt(r.next_offset),
    previous:
      r.previous_payload_hash === null || r.previous_timestamp === null
        ? undefined
        : { payloadHash: r.previous_payload_hash, timestamp: r.previous_timestamp },
  }));
}

/** Where a resume point is moved to, with the record before it that marks it (see `ResumeMark`). */
export interface ResumePointMove {
  readonly partition: number;
  readonly offset: bigint;
  /** The record at `offset − 1`; absent when there is none to read (offset at the log's start). */
  readonly previous?: { readonly payloadHash: Buffer; readonly timestamp: string } | undefined;
}

/**
 * Moves the group's resume points to exactly these offsets (down as well as up: unlike the
 * pipeline's GREATEST, an operator's reset is meant to rewind). Takes the retention lock of the
 * group's inbox scope for the transaction first, so a purge of the scope (which reads the offsets
 * of every group reading it) never computes its bounds from offsets being moved.
 *
 * The old mark belongs to the old offset, so it is always replaced: by the record before the new
 * offset when the caller read it, by null (the consumer then does not check that resume point
 * until it records the next outcome) when there is none.
 */
export async function setResumePoints(
  client: pg.PoolClient,
  groupId: string,
  topic: string,
  offsets: readonly ResumePointMove[],
): Promise<void> {
  await lockScopeRetention(client, await resolveInboxScope(client, groupId));
  await client.query(
    `INSERT INTO oncely.offsets AS o (consumer_group, topic, partition, next_offset, previous_payload_hash, previous_timestamp)
     SELECT $1, $2, p, n, decode(h, 'hex'), ts FROM unnest($3::int[], $4::bigint[], $5::text[], $6::bigint[]) AS t(p, n, h, ts)
     ON CONFLICT (consumer_group, topic, partition)
     DO UPDATE SET next_offset = EXCLUDED.next_offset, previous_payload_hash = EXCLUDED.previous_payload_hash,
       previous_timestamp = EXCLUDED.previous_timestamp, updated_at = now()`,
    [
      groupId,
      topic,
      offsets.map((o) => o.partition),
      offsets.map((o) => o.offset.toString()),
      offsets.map((o) => o.previous?.payloadHash.toString('hex') ?? null),
      offsets.map((o) => o.previous?.timestamp ?? null),
    ],
  );
}

/** Per partition of the topic, the scope's offset horizon: rows below it may have been purged (absent: nothing purged). */
export async function readHorizons(pool: pg.Pool, inboxScope: string, topic: string): Promise<Map<number, bigint>> {
  const { rows } = await pool.query<{ partition: number; horizon_offset: string }>(
    'SELECT partition, horizon_offset FROM oncely.inbox_horizons WHERE consumer_group = $1 AND topic = $2',
    [inboxScope, topic],
  );
  return new Map(rows.map((r) => [r.partition, BigInt(r.horizon_offset)]));
}

/**
 * The latest moment a purge deleted inbox rows of the scope, on any topic (ids are per scope, so a
 * copy on one topic may be of an id purged from another); undefined when nothing was ever purged.
 */
export async function readPurgedUntil(pool: pg.Pool, inboxScope: string): Promise<Date | undefined> {
  const { rows } = await pool.query<{ purged_until: Date | null }>(
    'SELECT max(purged_at) AS purged_until FROM oncely.inbox_horizons WHERE consumer_group = $1',
    [inboxScope],
  );
  return rows[0]?.purged_until ?? undefined;
}

/** The inbox status of each of `ids` that has a row; one indexed statement per 5,000 ids. */
export async function lookUpInbox(
  pool: pg.Pool,
  inboxScope: string,
  ids: readonly string[],
): Promise<Map<string, InboxStatus>> {
  const found = new Map<string, InboxStatus>();
  for (let start = 0; start < ids.length; start += 5_000) {
    const { rows } = await pool.query<{ message_id: string; status: InboxStatus }>(
      'SELECT message_id, status FROM oncely.inbox WHERE consumer_group = $1 AND message_id = ANY($2::text[])',
      [inboxScope, ids.slice(start, start + 5_000)],
    );
    for (const row of rows) found.set(row.message_id, row.status);
  }
  return found;
}

export interface ReplayRange {
  readonly partition: number;
  /** The first offset re-read. */
  readonly start: string;
  /** The end of the range (exclusive). */
  readonly end: string;
}

export interface ReplayAudit {
  readonly groupId: string;
  /** Where the plan looked its messages up, and where progress is counted. Default: the group id. */
  readonly inboxScope?: string;
  readonly topic: string;
  readonly from: string;
  readonly to: string;
  readonly ranges: readonly ReplayRange[];
  readonly report: unknown;
  readonly forced: boolean;
  readonly requestedBy: string;
}

export async function insertReplay(client: pg.PoolClient, audit: ReplayAudit): Promise<string> {
  const { rows } = await client.query<{ id: string }>(
    `INSERT INTO oncely.replays (consumer_group, topic, partitions, range_from, range_to, ranges, report, forced, requested_by, inbox_scope)
     VALUES ($1, $2, $3::int[], $4, $5, $6, $7, $8, $9, $10) RETURNING id`,
    [
      audit.groupId,
      audit.topic,
      audit.ranges.map((r) => r.partition),
      audit.from,
      audit.to,
      JSON.stringify(audit.ranges),
      JSON.stringify(audit.report),
      audit.forced,
      audit.requestedBy,
      audit.inboxScope ?? audit.groupId,
    ],
  );
  return rows[0]?.id ?? '';
}

export interface ReplayRow {
  readonly id: string;
  readonly groupId: string;
  readonly inboxScope: string;
  readonly topic: string;
  readonly from: string;
  readonly to: string;
  readonly ranges: readonly ReplayRange[];
  readonly report: unknown;
  readonly forced: boolean;
  readonly requestedBy: string;
  readonly createdAt: Date;
  readonly completedAt: Date | null;
}

export async function readReplays(
  pool: pg.Pool,
  filter: { readonly id?: string; readonly groupId?: string; readonly limit?: number } = {},
): Promise<ReplayRow[]> {
  const { rows } = await pool.query<{
    id: string;
    consumer_group: string;
    topic: string;
    range_from: string;
    range_to: string;
    ranges: ReplayRange[];
    report: unknown;
    forced: boolean;
    requested_by: string;
    created_at: Date;
    completed_at: Date | null;
    inbox_scope: string | null;
  }>(
    `SELECT * FROM oncely.replays WHERE ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR consumer_group = $2)
      ORDER BY id DESC LIMIT $3`,
    [filter.id ?? null, filter.groupId ?? null, filter.limit ?? 20],
  );
  return rows.map((r) => ({
    id: r.id,
    groupId: r.consumer_group,
    // Rows written before migration 0009 looked up the group's own id.
    inboxScope: r.inbox_scope ?? r.consumer_group,
    topic: r.topic,
    from: r.range_from,
    to: r.range_to,
    ranges: r.ranges,
    report: r.report,
    forced: r.forced,
    requestedBy: r.requested_by,
    createdAt: r.created_at,
    completedAt: r.completed_at,
  }));
}

/** Per partition of a replay: where the group is now, and how many rows it applied since the replay began. */
export async function replayProgressCounts(
  pool: pg.Pool,
  replay: ReplayRow,
): Promise<Map<number, { position: bigint | undefined; appliedSince: number }>> {
  const { rows } = await pool.query<{ partition: number; next_offset: string | null; applied: string }>(
    `SELECT r.partition, o.next_offset,
            (SELECT count(*) FROM oncely.inbox i
              WHERE i.consumer_group = $5 AND i.topic = $2 AND i.partition = r.partition
                AND i."offset" >= r.start AND i."offset" < r."end"
                -- processed_at ≥ first_seen_at: lets the processed_at index narrow the scan.
                AND i.processed_at >= $3 AND i.first_seen_at >= $3) AS applied
       FROM jsonb_to_recordset($4::jsonb) AS r(partition int, start bigint, "end" bigint)
       LEFT JOIN oncely.offsets o ON o.consumer_group = $1 AND o.topic = $2 AND o.partition = r.partition`,
    [replay.groupId, replay.topic, replay.createdAt, JSON.stringify(replay.ranges), replay.inboxScope],
  );
  return new Map(
    rows.map((r) => [
      r.partition,
      {
        position: r.next_offset === null ? undefined : BigInt(r.next_offset),
        appliedSince: Number(r.applied),
      },
    ]),
  );
}

export async function markReplayCompleted(pool: pg.Pool, id: string): Promise<void> {
  await pool.query('UPDATE oncely.replays SET completed_at = now() WHERE id = $1 AND completed_at IS NULL', [id]);
}
