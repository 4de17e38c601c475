/**
 * Kafka's offsets, read and set through an admin client: a partition's log bounds, a group's
 * committed offsets, offsets by time, and the one record a resume point is recognised by. The one
 * place that reads them, for the consumer's resume points, lag metrics and status, `oncely
 * offsets`, replay and retention. Kafka only: no SQL.
 */
import type { Admin, Kafka } from 'kafkajs';

import { OncelyError } from '../errors.js';

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

/** A record as the resume-point check compares it: its offset, value and Kafka timestamp. */
export interface LoggedRecord {
  readonly offset: string;
  readonly value: Buffer | null;
  /** Milliseconds since the epoch, as a decimal string (as kafkajs gives it to the consumer). */
  readonly timestamp: string;
}

/** The parts of kafkajs's internal cluster and broker that {@link recordsAt} uses. */
interface ClusterHandle {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  addTargetTopic(topic: string): Promise<void>;
  findLeaderForPartitions(topic: string, partitions: number[]): Record<string, number[]>;
  findBroker(request: { nodeId: string }): Promise<BrokerHandle>;
}

interface BrokerHandle {
  fetch(request: {
    replicaId: number;
    isolationLevel: number;
    maxWaitTime: number;
    minBytes: number;
    maxBytes: number;
    topics: { topic: string; partitions: { partition: number; fetchOffset: string; maxBytes: number }[] }[];
  }): Promise<{
    responses: {
      partitions: {
        partition: number;
        messages: { offset: string; value: Buffer | null; timestamp: string; isControlRecord?: boolean }[];
      }[];
    }[];
  }>;
}

/** kafkajs 2.x keeps the factory of its cluster connections under this symbol's description. */
const CREATE_CLUSTER = 'private:Kafka:createCluster';
const READ_COMMITTED = 1;

function clusterOf(kafka: Kafka): ClusterHandle {
  const symbol = Object.getOwnPropertySymbols(kafka).find((s) => s.description === CREATE_CLUSTER);
  const create = symbol === undefined ? undefined : (kafka as unknown as Record<symbol, unknown>)[symbol];
  if (typeof create !== 'function') {
    throw new OncelyError(
      'ONCELY_KAFKA_ERROR',
      'This kafkajs has no cluster factory oncely can fetch one record with (expected kafkajs 2.x). ' +
        'Install the kafkajs version in oncely’s peerDependencies.',
    );
  }
  return (create as (options: object) => ClusterHandle)({ allowAutoTopicCreation: false });
}

/**
 * The record at one offset of each partition in `wanted`, read with one Fetch request per leader
 * — no consumer group is joined, nothing is committed. A partition whose offset holds no data
 * record (compacted away, a transaction marker, outside the log) is absent.
 *
 * kafkajs has no public call that reads one record without joining a group (a throwaway group
 * would cost a join per check, on every rebalance), so this uses the cluster connection its own
 * consumer fetches with; a unit test pins that kafkajs still has it. Requests go one at a time:
 * kafkajs opens a broker's fetch connection on first use, and two requests racing to open it
 * would open two.
 */
export async function recordsAt(
  kafka: Kafka,
  topic: string,
  wanted: ReadonlyMap<number, bigint>,
): Promise<Map<number, LoggedRecord>> {
  const found = new Map<number, LoggedRecord>();
  if (wanted.size === 0) return found;
  const cluster = clusterOf(kafka);
  await cluster.connect();
  try {
    await cluster.addTargetTopic(topic);
    const leaders = cluster.findLeaderForPartitions(topic, [...wanted.keys()]);
    const led = new Set(Object.values(leaders).flat());
    const leaderless = [...wanted.keys()].filter((p) => !led.has(p));
    if (leaderless.length > 0) throw new Error(`Partitions ${leaderless.join(', ')} of ${topic} have no leader now`);
    for (const [nodeId, partitions] of Object.entries(leaders)) {
      const broker = await cluster.findBroker({ nodeId });
      try {
        await fetchInto(found, broker, topic, partitions, wanted);
      } catch (error) {
        // One partition moved out of the log between reading its bounds and this fetch fails the
        // whole answer: ask for each alone, and leave out the ones that are gone.
        if (!isOutOfRange(error)) throw error;
        for (const partition of partitions) {
          await fetchInto(found, broker, topic, [partition], wanted).catch((alone: unknown) => {
            if (!isOutOfRange(alone)) throw alone;
          });
        }
      }
    }
  } finally {
    await cluster.disconnect().catch(() => undefined);
  }
  return found;
}

function isOutOfRange(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { type?: unknown }).type === 'OFFSET_OUT_OF_RANGE';
}

async function fetchInto(
  found: Map<number, LoggedRecord>,
  broker: BrokerHandle,
  topic: string,
  partitions: readonly number[],
  wanted: ReadonlyMap<number, bigint>,
): Promise<void> {
  const response = await broker.fetch({
    replicaId: -1,
    isolationLevel: READ_COMMITTED,
    maxWaitTime: 0,
    minBytes: 1,
    maxBytes: 1_048_576,
    topics: [
      {
        topic,
        // The broker sends the whole first record batch of a partition even when it is larger (KIP-74).
        partitions: partitions.map((partition) => ({
          partition,
          fetchOffset: String(wanted.get(partition)),
          maxBytes: 65_536,
        })),
      },
    ],
  });
  for (const answer of response.responses[0]?.partitions ?? []) {
    const fetchOffset = String(wanted.get(answer.partition));
    // The answer starts at the batch holding the offset: pick the record itself.
    const record = answer.messages.find((m) => m.offset === fetchOffset && m.isControlRecord !== true);
    if (record !== undefined) {
      found.set(answer.partition, { offset: record.offset, value: record.value ?? null, timestamp: record.timestamp });
    }
  }
}
