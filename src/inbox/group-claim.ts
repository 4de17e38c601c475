import type pg from 'pg';

import { type ManyIds, textArrayLiteral } from './claims.js';

export interface GroupClaimRequest extends ManyIds {
  /** Each id's `attempts` as claimed (1, or 0 for a tombstone to skip). */
  readonly attempts: readonly number[];
}

/**
 * Claims every id of a commit group in one statement, before the first handler runs: one round
 * trip per group instead of one per message. Rows are claimed as `processed`; the group records
 * the partition's next offset once, after its last message ({@link recordOffset}, which also
 * turns synchronous_commit on), and corrects the rows of messages that turn out otherwise
 * (`reclassifyChunkClaims`) or that it did not reach ({@link releaseGroupClaims}).
 *
 * The same concurrency rule as every claim: INSERT … ON CONFLICT DO NOTHING on the primary key, so
 * a concurrent claimer waits on the unique index and then sees the conflict. Rows are inserted in
 * offset order: an id twice in the group is claimed by its first occurrence, and the later one
 * conflicts with it like any duplicate. Answers with the offsets not claimed, only when there are
 * any (see `claimChunk`).
 */
export async function claimGroup(client: pg.ClientBase, request: GroupClaimRequest): Promise<ReadonlySet<string>> {
  const { messageIds, offsets, attempts } = request;
  if (
    request.payloadHashes.length !== messageIds.length * 32 ||
    offsets.length !== messageIds.length ||
    attempts.length !== messageIds.length
  ) {
    throw new TypeError('claimGroup: messageIds, offsets, attempts and payloadHashes must describe the same messages');
  }
  const { rows } = await client.query<{ conflicts: string[] | null }>({
    name: 'oncely_claim_group_v1',
    text: `
WITH input AS (
  SELECT * FROM unnest($4::text[], $5::bigint[], $6::int[]) WITH ORDINALITY AS t(message_id, "offset", attempts, ord)
), claimed AS (
  INSERT INTO oncely.inbox
    (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at)
  SELECT $1, message_id, $2, $3, "offset", substring($7::bytea FROM (ord::int - 1) * 32 + 1 FOR 32), 'processed', attempts, $8
    FROM input ORDER BY ord
  ON CONFLICT (consumer_group, message_id) DO NOTHING
  RETURNING "offset"
)
SELECT CASE WHEN (SELECT count(*) FROM claimed) < cardinality($4::text[])
            THEN ARRAY(SELECT "offset"::text FROM input WHERE "offset" NOT IN (SELECT "offset" FROM claimed))
       END AS conflicts`,
    values: [
      request.inboxScope,
      request.topic,
      request.partition,
      textArrayLiteral(messageIds),
      `{${offsets.join(',')}}`,
      `{${attempts.join(',')}}`,
      request.payloadHashes,
      request.firstSeenAt,
    ],
  });
  const conflicts = rows[0]?.conflicts;
  return conflicts === null || conflicts === undefined ? NO_CONFLICTS : new Set(conflicts);
}

const NO_CONFLICTS: ReadonlySet<string> = new Set();

/**
 * Deletes the rows this transaction claimed for messages the group did not reach (it ended early:
 * its time bound, or the partition was lost). Those messages are delivered again and must find
 * their ids free. The rows are this transaction's own, uncommitted: nobody else has seen them.
 * Each id is found by one primary-key lookup (the LATERAL form of `HOLDERS_SQL`).
 */
export async function releaseGroupClaims(
  client: pg.ClientBase,
  inboxScope: string,
  messageIds: readonly string[],
): Promise<void> {
  if (messageIds.length === 0) return;
  await client.query(
    `DELETE FROM oncely.inbox WHERE ctid = ANY(ARRAY(SELECT h.ctid FROM unnest($2::text[]) AS wanted(message_id)
       CROSS JOIN LATERAL (
         SELECT ctid FROM oncely.inbox i WHERE i.consumer_group = $1 AND i.message_id = wanted.message_id LIMIT 1
       ) h))`,
    [inboxScope, messageIds],
  );
}
