import type pg from 'pg';

import { type ClaimRequest, type ClaimResult, claimResult } from './claims.js';

/**
 * Claims one id like `claimMessage`, without recording the partition's next offset: for a record
 * of a partition that runs on lanes, whose outcomes commit out of offset order. Its resume point is
 * the partition's watermark, written by the pipeline as the transaction's last statement
 * (`recordOffset`, which also turns synchronous_commit on) — never "this record + 1", which could
 * pass a lower offset not recorded yet.
 *
 * The same concurrency rule as every claim: INSERT … ON CONFLICT DO NOTHING on the primary key, so
 * a concurrent claimer waits on the unique index, then sees the conflict. Unnamed: it is planned
 * as the table is now (it reads nothing, so there is little to plan), and a consumer without lanes
 * never prepares it.
 */
export async function claimUnordered(
  client: pg.ClientBase,
  request: Omit<ClaimRequest, 'nextOffset' | 'groupId' | 'timestamp'>,
): Promise<ClaimResult> {
  const { rows } = await client.query<{ row: string }>(
    `INSERT INTO oncely.inbox
       (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at)
     VALUES ($1, $2, $3, $4, $5::bigint, $6, $7, $8, $9)
     ON CONFLICT (consumer_group, message_id) DO NOTHING
     RETURNING ctid::text AS row`,
    [
      request.inboxScope,
      request.messageId,
      request.topic,
      request.partition,
      request.offset,
      request.payloadHash,
      request.status,
      request.attempts,
      request.firstSeenAt,
    ],
  );
  return claimResult(client, request, rows[0]?.row);
}
