import type pg from 'pg';

import { type ClaimRequest, type ClaimResult, claimResult } from './claims.js';

/**
 * Claims one message of a commit group: the inbox insert of {@link claimMessage} without the
 * offsets upsert and without `synchronous_commit`. A group records the partition's next offset
 * once, after its last message ({@link recordOffset}, which also turns synchronous_commit on for
 * the transaction): one offsets row version per group instead of one per message.
 *
 * Same concurrency rule as the single claim: INSERT … ON CONFLICT DO NOTHING on the primary key,
 * so a concurrent claimer waits on the unique index and then sees the conflict.
 */
export const GROUP_CLAIM = {
  name: 'oncely_group_claim_v1',
  text: `
INSERT INTO oncely.inbox
  (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at)
VALUES ($1, $2, $3, $4, $5::bigint, $6, $7, $8, $9)
ON CONFLICT (consumer_group, message_id) DO NOTHING
RETURNING ctid::text AS row`,
} as const;

export async function claimInGroup(
  client: pg.ClientBase,
  request: Omit<ClaimRequest, 'groupId' | 'nextOffset'>,
): Promise<ClaimResult> {
  const { rows } = await client.query<{ row: string }>({
    ...GROUP_CLAIM,
    values: [
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
  });
  return claimResult(client, request, rows[0]?.row);
}
