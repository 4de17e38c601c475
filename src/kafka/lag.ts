import type { Admin } from 'kafkajs';

import { committedOffsets, topicLog } from './offsets.js';

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
 * Lag per partition, log end − committed, from two admin requests per topic (src/kafka/offsets.ts).
 * Read from Kafka's committed offsets (not from what a consumer has fetched), so a consumer that is
 * stuck, paused or not running at all shows a lag that keeps growing: what an alert must see.
 */
export async function readConsumerLag(
  admin: Admin,
  groupId: string,
  topics: readonly string[],
): Promise<PartitionLag[]> {
  const result: PartitionLag[] = [];
  for (const topic of topics) {
    const committed = await committedOffsets(admin, groupId, topic);
    for (const { partition, logStart, highWatermark } of await topicLog(admin, topic)) {
      const done = committed.get(partition);
      const lag = highWatermark - (done ?? logStart);
      result.push({
        topic,
        partition,
        logEnd: highWatermark.toString(),
        committed: done === undefined ? null : done.toString(),
        lag: lag < 0n ? 0 : Number(lag),
      });
    }
  }
  return result.sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
}
