import { randomUUID } from 'node:crypto';

import type { Admin, Kafka } from 'kafkajs';

import { OncelyError } from '../errors.js';
import { type ConsumedRecord, toRecord } from './runner.js';

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
 * records of partitions outside the plan are ignored. The group is deleted afterwards. The group being
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
    // A rebalance of the throwaway group (a session timeout on a busy machine) forgets seeks and
    // pauses: put every partition back where this read had got to.
    let joined = false;
    consumer.on(consumer.events.GROUP_JOIN, () => {
      if (!joined) {
        joined = true;
        return;
      }
      for (const [partition, offset] of next) {
        if (pending.has(partition)) consumer.seek({ topic, partition, offset: offset.toString() });
      }
    });
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
        // In slices, heartbeating between them: a fetch can hold tens of thousands of records,
        // and a member that misses its session timeout is rebalanced out and loses its seeks.
        for (let start = 0; start < records.length; start += 5_000) {
          const slice = records.slice(start, start + 5_000);
          await onRecords(batch.partition, slice);
          next.set(batch.partition, BigInt(slice.at(-1)?.offset ?? from) + 1n);
          await payload.heartbeat();
        }
        if (records.length === 0) await payload.heartbeat();
        // Moves this throwaway group's fetch position past the batch; nothing is committed
        // (autoCommit is off). Without it kafkajs fetches the same records again and the read stalls.
        payload.resolveOffset(batch.lastOffset());
        // Offsets can have gaps (compaction, transaction markers): the batch's last offset says
        // how far the log has been read, not the last record handed over.
        const reached = BigInt(batch.lastOffset()) + 1n;
        // Not paused when done (a pause inside eachBatch stalled the other partitions' fetches
        // on kafkajs 2.2.4 in a 1 M-message read): a finished partition's records are ignored.
        if (reached >= range.end && pending.delete(batch.partition) && pending.size === 0) finish();
      },
    });
    for (const range of pending.values()) {
      consumer.seek({ topic, partition: range.partition, offset: range.start.toString() });
    }
    await done;
  } finally {
    clearTimeout(timer);
    await consumer.disconnect().catch(() => undefined);
    // Nothing was committed, but the coordinator may still list the empty group: tidy up.
    await withAdmin(kafka, (admin) => admin.deleteGroups([groupId])).catch(() => undefined);
  }
}
