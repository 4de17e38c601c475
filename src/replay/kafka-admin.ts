import { randomUUID } from 'node:crypto';

import type { Admin, Kafka, KafkaMessage } from 'kafkajs';

import { OncelyError } from '../errors.js';
import type { ConsumedRecord } from '../kafka/runner.js';

/*
 * Kafka only: the admin calls that offsets, replay and retention need, and the throwaway reader
 * a replay plan uses. No SQL here (test/unit/architecture.test.ts checks it).
 */

/** Runs `use` with a connected admin client, always disconnected afterwards. */
export async function withAdmin<T>(kafka: Kafka, use: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await use(admin);
  } finally {
    await admin.disconnect();
  }
}

/** A live member of a consumer group, as the group coordinator describes it. */
export interface GroupMember {
  readonly memberId: string;
  readonly clientId: string;
  readonly clientHost: string;
}

/** The members of `groupId` while it is not Empty or Dead (none otherwise). */
export async function liveMembers(admin: Admin, groupId: string): Promise<GroupMember[]> {
  const { groups } = await admin.describeGroups([groupId]);
  const group = groups.find((g) => g.groupId === groupId);
  if (group === undefined || group.state === 'Empty' || group.state === 'Dead') return [];
  return group.members.map(({ memberId, clientId, clientHost }) => ({ memberId, clientId, clientHost }));
}

/** Refuses, naming them, while the group has live members: moving their offsets under them would race their commits. */
export async function assertNoLiveMembers(admin: Admin, groupId: string, what: string): Promise<void> {
  const members = await liveMembers(admin, groupId);
  if (members.length === 0) return;
  const names = members.map((m) => `${m.clientId} (${m.memberId}) on ${m.clientHost}`).join(', ');
  throw new OncelyError(
    'ONCELY_GROUP_ACTIVE',
    `Cannot ${what}: consumer group "${groupId}" has ${members.length} live member${members.length === 1 ? '' : 's'}: ${names}. ` +
      'Stop every consumer of the group first (consumer.stop(), or stop the deployment), then run this again.',
    { context: { groupId, members } },
  );
}

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

/** One partition's range to read: offsets `start` (inclusive) to `end` (exclusive). */
export interface ReadRange {
  readonly partition: number;
  readonly start: bigint;
  readonly end: bigint;
}

/**
 * Reads each partition's range once, in order, handing every run of records to `onRecords`.
 *
 * How: a kafkajs consumer in a throwaway group (`oncely-replay-plan-<uuid>`) with auto-commit off,
 * so nothing is ever committed for it, subscribed to the topic and `seek`ed to each range start;
 * partitions outside the plan are paused. The group is deleted afterwards. The group being
 * replayed is never joined, so its members, assignment and offsets are untouched. Records fetched
 * before a seek took effect, or past a range end, are dropped here.
 */
export async function readRanges(
  kafka: Kafka,
  topic: string,
  ranges: readonly ReadRange[],
  onRecords: (partition: number, records: readonly ConsumedRecord[]) => Promise<void>,
  options: { readonly timeoutMs?: number } = {},
): Promise<void> {
  const pending = new Map(ranges.filter((r) => r.start < r.end).map((r) => [r.partition, r]));
  if (pending.size === 0) return;
  const next = new Map([...pending.values()].map((r) => [r.partition, r.start]));
  const groupId = `oncely-replay-plan-${randomUUID()}`;
  const consumer = kafka.consumer({
    groupId,
    maxBytesPerPartition: 8 * 1024 * 1024,
    maxBytes: 32 * 1024 * 1024,
    maxWaitTimeInMs: 100,
    sessionTimeout: 30_000,
    heartbeatInterval: 3_000,
  });
  let finish!: () => void;
  let fail!: (error: unknown) => void;
  const done = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const timeoutMs = options.timeoutMs ?? 10 * 60_000;
  const timer = setTimeout(() => {
    fail(
      new OncelyError(
        'ONCELY_REPLAY_READ_FAILED',
        `Reading ${topic} for the replay plan did not finish within ${timeoutMs} ms; partitions still unread: ${[...pending.keys()].join(', ')}.`,
        { context: { topic } },
      ),
    );
  }, timeoutMs);
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    consumer.on(consumer.events.CRASH, (event) => {
      if (!event.payload.restart) fail(event.payload.error);
    });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: async (payload) => {
        const { batch } = payload;
        const range = pending.get(batch.partition);
        if (range === undefined) return;
        const from = next.get(batch.partition) ?? range.start;
        const records = batch.messages
          .filter((m) => {
            const offset = BigInt(m.offset);
            return offset >= from && offset < range.end;
          })
          .map((m) => toRecord(topic, batch.partition, m));
        if (records.length > 0) {
          await onRecords(batch.partition, records);
          next.set(batch.partition, BigInt(records.at(-1)?.offset ?? from) + 1n);
        }
        await payload.heartbeat();
        // Offsets can have gaps (compaction, transaction markers): the batch's last offset says
        // how far the log has been read, not the last record handed over.
        const reached = BigInt(batch.lastOffset()) + 1n;
        if (reached >= range.end && pending.delete(batch.partition)) {
          consumer.pause([{ topic, partitions: [batch.partition] }]);
          if (pending.size === 0) finish();
        }
      },
    });
    for (const range of pending.values()) {
      consumer.seek({ topic, partition: range.partition, offset: range.start.toString() });
    }
    // Partitions of the topic outside the plan (or with nothing to read) are not fetched.
    const partitions = (await withAdmin(kafka, (admin) => admin.fetchTopicOffsets(topic))).map((p) => p.partition);
    const others = partitions.filter((p) => !pending.has(p));
    if (others.length > 0) consumer.pause([{ topic, partitions: others }]);
    await done;
  } finally {
    clearTimeout(timer);
    await consumer.disconnect().catch(() => undefined);
    // Nothing was committed, but the coordinator may still list the empty group: tidy up.
    await withAdmin(kafka, (admin) => admin.deleteGroups([groupId])).catch(() => undefined);
  }
}

function toRecord(topic: string, partition: number, message: KafkaMessage): ConsumedRecord {
  return {
    topic,
    partition,
    offset: message.offset,
    key: message.key ?? null,
    value: message.value ?? null,
    headers: message.headers ?? {},
    timestamp: message.timestamp,
  };
}
