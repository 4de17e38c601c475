/**
 * Kafka's offsets, read and set through an admin client: a partition's log bounds, a group's
 * committed offsets, offsets by time. The one place that reads them, for the consumer's resume
 * points, lag metrics and status, `oncely offsets`, replay and retention. Kafka only: no SQL.
 */
import type { Admin } from 'kafkajs';

/** The log start (first offset Kafka still has) and the high watermark (next offset to be written). */
export interface PartitionLog {
  readonly partition: number;
  readonly logStart: bigint;
  readonly highWatermark: bigint;
}

export async function topicLog(admin: Admin, topic: string): Promise<PartitionLog[]> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets
    .map((o) => ({ partition: o.partition, logStart: BigInt(o.low), highWatermark: BigInt(o.high) }))
    .sort((a, b) => a.partition - b.partition);
}

/** Kafka's committed offset per partition of `topic` for `groupId`; partitions without one are absent. */
export async function committedOffsets(admin: Admin, groupId: string, topic: string): Promise<Map<number, bigint>> {
  const [entry] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const committed = new Map<number, bigint>();
  // kafkajs answers "-1" (or, from some brokers, "") for a partition with no committed offset.
  for (const p of entry?.partitions ?? []) {
    if (p.offset !== '-1' && p.offset !== '') committed.set(p.partition, BigInt(p.offset));
  }
  return committed;
}

/**
 * Sets the group's committed offsets. The broker refuses an offset commit without a member id
 * while the group has members, so this also guards against a member that joined after the check.
 */
export async function setCommittedOffsets(
  admin: Admin,
  groupId: string,
  topic: string,
  offsets: readonly { partition: number; offset: bigint }[],
): Promise<void> {
  if (offsets.length === 0) return;
  await admin.setOffsets({
    groupId,
    topic,
    partitions: offsets.map((o) => ({ partition: o.partition, offset: o.offset.toString() })),
  });
}

/** Per partition, the first offset whose record timestamp is at or after `at` (the high watermark if none). */
export async function offsetsAtTime(admin: Admin, topic: string, at: Date): Promise<Map<number, bigint>> {
  const found = await admin.fetchTopicOffsetsByTimestamp(topic, at.getTime());
  return new Map(found.map((o) => [o.partition, BigInt(o.offset)]));
}
