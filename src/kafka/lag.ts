import type { Admin } from 'kafkajs';

/** One partition's lag: how many records the group has yet to commit past. */
export interface PartitionLag {
  readonly topic: string;
  readonly partition: number;
  /** The partition's log end offset (the next offset a producer writes). */
  readonly logEnd: string;
  /** The group's committed offset in Kafka; null when the group has committed nothing there yet. */
  readonly committed: string | null;
  /** `logEnd − committed` (from the log start when nothing is committed); never negative. */
  readonly lag: number;
}

/**
 * Lag per partition, log end − committed, from two admin requests per topic. Read from Kafka's
 * committed offsets (not from what a consumer has fetched), so a consumer that is stuck, paused or
 * not running at all shows a lag that keeps growing: exactly what an alert must see.
 */
export async function readConsumerLag(
  admin: Admin,
  groupId: string,
  topics: readonly string[],
): Promise<PartitionLag[]> {
  const committed = await admin.fetchOffsets({ groupId, topics: [...topics] });
  const committedBy = new Map<string, string>();
  for (const { topic, partitions } of committed) {
    for (const { partition, offset } of partitions) committedBy.set(`${topic}\u0000${partition}`, offset);
  }
  const result: PartitionLag[] = [];
  for (const topic of topics) {
    const ends = await admin.fetchTopicOffsets(topic);
    for (const { partition, high, low } of ends) {
      const offset = committedBy.get(`${topic}\u0000${partition}`);
      const done = offset === undefined || BigInt(offset) < 0n ? null : offset;
      const lag = BigInt(high) - BigInt(done ?? low);
      result.push({ topic, partition, logEnd: high, committed: done, lag: lag < 0n ? 0 : Number(lag) });
    }
  }
  return result.sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
}
