/**
 * Who does what in a Kafka cluster right now, read from metadata: the leader of a partition, the
 * coordinator of a consumer group, partitions short of in-sync replicas. For fault injection and
 * for operators; no SQL here.
 */
import type { Admin } from 'kafkajs';

import { OncelyError } from '../errors.js';

const GROUP_METADATA_TOPIC = '__consumer_offsets';

/** The node leading `topic`/`partition` now. */
export async function partitionLeaderOf(admin: Admin, topic: string, partition: number): Promise<number> {
  const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
  const leader = topics[0]?.partitions.find((p) => p.partitionId === partition)?.leader;
  if (leader === undefined || leader < 0) {
    throw new OncelyError('ONCELY_KAFKA_ERROR', `partition ${topic}/${partition} has no leader now.`, {
      retriable: true,
      context: { topic, partition },
    });
  }
  return leader;
}

/**
 * Java's `String.hashCode` (UTF-16 code units, 32-bit wrap-around): the broker places a group's
 * offsets and coordinator by it, so the same group lands on the same partition here.
 */
export function javaStringHash(text: string): number {
  let hash = 0;
  for (let i = 0; i < text.length; i++) hash = (Math.imul(hash, 31) + text.charCodeAt(i)) | 0;
  return hash;
}

/** The `__consumer_offsets` partition of a group: `Utils.abs(groupId.hashCode) % partitions`, as the broker computes it. */
export function groupMetadataPartition(groupId: string, partitions: number): number {
  const hash = javaStringHash(groupId);
  const abs = hash === -2_147_483_648 ? 0 : Math.abs(hash);
  return abs % partitions;
}

/** The node coordinating `groupId` now: the leader of its `__consumer_offsets` partition. */
export async function groupCoordinatorOf(admin: Admin, groupId: string): Promise<number> {
  const { topics } = await admin.fetchTopicMetadata({ topics: [GROUP_METADATA_TOPIC] });
  const partitions = topics[0]?.partitions ?? [];
  if (partitions.length === 0) {
    throw new OncelyError(
      'ONCELY_KAFKA_ERROR',
      `${GROUP_METADATA_TOPIC} does not exist yet: no group has asked for a coordinator.`,
      { retriable: true, context: { groupId } },
    );
  }
  return partitionLeaderOf(admin, GROUP_METADATA_TOPIC, groupMetadataPartition(groupId, partitions.length));
}

/**
 * Partitions of `topics` whose in-sync replicas are fewer than their replicas now. A broker leaves
 * the replicas it cannot reach out of its answer and names them offline, so both lists count.
 */
export async function underReplicatedPartitions(admin: Admin, topics: readonly string[]): Promise<number> {
  const metadata = await admin.fetchTopicMetadata({ topics: [...topics] });
  let count = 0;
  for (const topic of metadata.topics) {
    for (const partition of topic.partitions) {
      const replicas = new Set([...partition.replicas, ...(partition.offlineReplicas ?? [])]);
      if (partition.isr.length < replicas.size) count++;
    }
  }
  return count;
}
