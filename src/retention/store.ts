import type pg from 'pg';

/*
 * SQL only: the statements of the retention purge. No Kafka here (test/unit/architecture.test.ts
 * checks it); the bounds that come from Kafka are computed by purge.ts and passed in.
 */

/** First key of the advisory locks of retention (the second is the group id's hash). */
const RETENTION_LOCK = "hashtext('oncely.retention')";

/**
 * Holds the retention lock of the inbox scope until the transaction ends. An offsets reset or
 * replay run of a group takes its scope's lock, so it waits for a purge of that scope in progress
 * (whose bounds were read from the offsets it is about to move) and no purge of the scope starts
 * until the new offsets are committed.
 */
export async function lockScopeRetention(client: pg.ClientBase, inboxScope: string): Promise<void> {
  await client.query(`SELECT pg_advisory_xact_lock(${RETENTION_LOCK}, hashtext($1))`, [inboxScope]);
}

/** Tries the scope's session-level retention lock on `client`: false when another purge holds it. */
export async function tryLockPurge(client: pg.ClientBase, inboxScope: string): Promise<boolean> {
  const { rows } = await client.query<{ locked: boolean }>(
    `SELECT pg_try_advisory_lock(${RETENTION_LOCK}, hashtext($1)) AS locked`,
    [inboxScope],
  );
  return rows[0]?.locked === true;
}

export async function unlockPurge(client: pg.ClientBase, inboxScope: string): Promise<void> {
  await client.query(`SELECT pg_advisory_unlock(${RETENTION_LOCK}, hashtext($1))`, [inboxScope]);
}

/** Per topic and partition of the group, the next offset recorded in `oncely.offsets`. */
export async function groupResumePoints(
  client: pg.ClientBase,
  groupId: string,
): Promise<{ topic: string; partition: number; nextOffset: bigint }[]> {
  const { rows } = await client.query<{ topic: string; partition: number; next_offset: string }>(
    'SELECT topic, partition, next_offset FROM oncely.offsets WHERE consumer_group = $1',
    [groupId],
  );
  return rows.map((r) => ({ topic: r.topic, partition: r.partition, nextOffset: BigInt(r.next_offset) }));
}

export interface PurgeBound {
  readonly topic: string;
  readonly partition: number;
  /** Rows of this partition with an offset below this may go (if old enough). */
  readonly below: bigint;
}

/**
 * Deletes up to `limit` inbox rows of the scope, oldest first (by processed_at, from `after`
 * on), that were processed before `cutoff` and whose offset is below their partition's bound,
 * and raises each touched partition's horizon to the highest offset deleted + 1 — one statement,
 * so one transaction: a horizon never lags the rows it covers, and never moves without them.
 * It also sets the partition's `purged_at` to the clock after the delete: every copy of a deleted
 * id that a claim met while its row still existed was written before that moment (see plan.ts).
 *
 * A dead-lettered row whose dead letter is still open is kept: `dead-letters retry` needs it.
 * Rows locked by a claim in progress are skipped, never waited for.
 */
export async function deleteInboxBatch(
  client: pg.ClientBase,
  request: {
    /** The inbox scope (column `consumer_group`). */
    readonly inboxScope: string;
    readonly bounds: readonly PurgeBound[];
    readonly cutoff: Date;
    readonly after: Date | undefined;
    readonly limit: number;
  },
): Promise<{ deleted: number; last: Date | undefined }> {
  const { rows } = await client.query<{ deleted: string; last: Date | null }>(
    `WITH bounds (topic, partition, below) AS (
       SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[])
     ), victims AS (
       SELECT i.message_id, i.processed_at
         FROM oncely.inbox i
         JOIN bounds b ON b.topic = i.topic AND b.partition = i.partition
        WHERE i.consumer_group = $1
          AND i.processed_at < $5
          AND ($6::timestamptz IS NULL OR i.processed_at >= $6)
          AND i."offset" < b.below
          AND (i.status = 'processed' OR NOT EXISTS (
                SELECT 1 FROM oncely.dead_letters d
                 WHERE d.consumer_group = i.consumer_group AND d.topic = i.topic
                   AND d.partition = i.partition AND d."offset" = i."offset" AND d.status = 'open'))
        ORDER BY i.processed_at
        LIMIT $7
        FOR UPDATE OF i SKIP LOCKED
     ), deleted AS (
       DELETE FROM oncely.inbox i USING victims v
        WHERE i.consumer_group = $1 AND i.message_id = v.message_id
       RETURNING i.topic, i.partition, i."offset", i.processed_at
     ), raised AS (
       -- clock_timestamp(), not now(): read once the aggregate has every deleted row, so after
       -- every delete of the statement (now() is the start of the transaction).
       INSERT INTO oncely.inbox_horizons AS h (consumer_group, topic, partition, horizon_offset, purged_at)
       SELECT $1, topic, partition, max("offset") + 1, clock_timestamp() FROM deleted GROUP BY topic, partition
       ON CONFLICT (consumer_group, topic, partition)
       DO UPDATE SET horizon_offset = GREATEST(h.horizon_offset, EXCLUDED.horizon_offset),
                     purged_at = GREATEST(h.purged_at, EXCLUDED.purged_at), updated_at = now()
     )
     SELECT count(*) AS deleted, max(processed_at) AS last FROM deleted`,
    [
      request.inboxScope,
      request.bounds.map((b) => b.topic),
      request.bounds.map((b) => b.partition),
      request.bounds.map((b) => b.below.toString()),
      request.cutoff,
      request.after ?? null,
      request.limit,
    ],
  );
  const row = rows[0];
  return { deleted: Number(row?.deleted ?? 0), last: row?.last ?? undefined };
}

/** Deletes up to `limit` resolved (retried or discarded) dead letters of the scope resolved before `cutoff`. Open ones never. */
export async function deleteResolvedDeadLetters(
  client: pg.ClientBase,
  inboxScope: string,
  cutoff: Date,
  limit: number,
): Promise<number> {
  const { rowCount } = await client.query(
    `DELETE FROM oncely.dead_letters WHERE id IN (
       SELECT id FROM oncely.dead_letters
        WHERE consumer_group = $1 AND status IN ('retried', 'discarded')
          AND coalesce(resolved_at, created_at) < $2
        ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED)`,
    [inboxScope, cutoff, limit],
  );
  return rowCount ?? 0;
}

/** The scope's horizons, per topic and partition. */
export async function scopeHorizons(
  client: pg.ClientBase,
  inboxScope: string,
): Promise<{ topic: string; partition: number; horizon: bigint }[]> {
  const { rows } = await client.query<{ topic: string; partition: number; horizon_offset: string }>(
    'SELECT topic, partition, horizon_offset FROM oncely.inbox_horizons WHERE consumer_group = $1 ORDER BY 1, 2',
    [inboxScope],
  );
  return rows.map((r) => ({ topic: r.topic, partition: r.partition, horizon: BigInt(r.horizon_offset) }));
}
