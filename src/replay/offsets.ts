import type { KafkaClient } from '../kafka/client.js';
import type pg from 'pg';

import { OncelyError } from '../errors.js';
import { payloadFingerprint } from '../kafka/message-identity.js';
import { committedOffsets, type PartitionLog, recordsAt, setCommittedOffsets, topicLog } from '../kafka/offsets.js';
import { type LogIdentity, markOffset, recogniseLog } from '../pipeline/lifecycle/resume-points.js';
import { assertNoLiveMembers, withAdmin } from '../kafka/admin.js';
import { inPooledTransaction, readResumePoints, setResumePoints } from './store.js';

/**
 * What one partition's offsets say, from both stores:
 * - `ok`: the resume point lies within the log;
 * - `db-ahead-of-log`: the database resume point is above the high watermark (topic deleted and
 *   re-created, log truncated): consuming would skip everything up to it;
 * - `below-log-start`: the resume point is below the first offset Kafka still has: the records
 *   between them are gone and were never processed;
 * - `other-log`: the record before the resume point is not the one the group recorded there: the
 *   topic was deleted and re-created (whatever the new log's length), its records were never
 *   processed;
 * - `kafka-ahead-of-db`: Kafka's committed offset is above the database resume point, which
 *   oncely never does by itself (a hand-edited or restored database);
 * - `no-offsets`: neither store has a position for this partition yet.
 */
export type OffsetsVerdict =
  'ok' | 'db-ahead-of-log' | 'below-log-start' | 'other-log' | 'kafka-ahead-of-db' | 'no-offsets';

export interface PartitionOffsets {
  readonly groupId: string;
  readonly topic: string;
  readonly partition: number;
  /** Kafka's committed offset for the group; null when none. */
  readonly kafkaCommitted: string | null;
  /** The `oncely.offsets` resume point; null when none. */
  readonly databaseResumePoint: string | null;
  readonly logStart: string;
  readonly highWatermark: string;
  readonly verdict: OffsetsVerdict;
}

export interface ShowOffsetsOptions {
  readonly pool: pg.Pool;
  readonly kafka: KafkaClient;
  /** Only this group. Default: every group with a resume point in `oncely.offsets`. */
  readonly groupId?: string;
  /** Only this topic. Default: every topic of the group(s). */
  readonly topic?: string;
}

export function offsetsVerdict(
  kafkaCommitted: bigint | undefined,
  resumePoint: bigint | undefined,
  log: Pick<PartitionLog, 'logStart' | 'highWatermark'>,
  identity: LogIdentity = 'unmarked',
): OffsetsVerdict {
  if (resumePoint === undefined) return kafkaCommitted === undefined ? 'no-offsets' : 'ok';
  if (resumePoint > log.highWatermark) return 'db-ahead-of-log';
  if (identity === 'other') return 'other-log';
  if (resumePoint < log.logStart) return 'below-log-start';
  if (kafkaCommitted !== undefined && kafkaCommitted > resumePoint) return 'kafka-ahead-of-db';
  return 'ok';
}

/** Kafka's committed offset, the database resume point and the log bounds of every partition, with a verdict. */
export async function showOffsets(options: ShowOffsetsOptions): Promise<PartitionOffsets[]> {
  const rows = await readResumePoints(options.pool, { groupId: options.groupId, topic: options.topic });
  const pairs = new Map<string, { groupId: string; topic: string }>();
  for (const row of rows) pairs.set(JSON.stringify([row.groupId, row.topic]), row);
  if (options.groupId !== undefined && options.topic !== undefined) {
    pairs.set(JSON.stringify([options.groupId, options.topic]), { groupId: options.groupId, topic: options.topic });
  }
  const resume = new Map(rows.map((r) => [JSON.stringify([r.groupId, r.topic, r.partition]), r]));
  return withAdmin(options.kafka, async (admin) => {
    const result: PartitionOffsets[] = [];
    for (const { groupId, topic } of pairs.values()) {
      const [log, committed] = await Promise.all([topicLog(admin, topic), committedOffsets(admin, groupId, topic)]);
      // The record before each marked resume point, to tell the log it was recorded in from another.
      const points = new Map(log.map((p) => [p.partition, resume.get(JSON.stringify([groupId, topic, p.partition]))]));
      const wanted = new Map<number, bigint>();
      for (const p of log) {
        const point = points.get(p.partition);
        const at = point === undefined ? undefined : markOffset(point, { start: p.logStart, end: p.highWatermark });
        if (at !== undefined) wanted.set(p.partition, at);
      }
      const marks = await recordsAt(options.kafka, topic, wanted);
      for (const partition of log) {
        const kafkaOffset = committed.get(partition.partition);
        const point = points.get(partition.partition);
        const resumePoint = point?.nextOffset;
        const identity = wanted.has(partition.partition)
          ? recogniseLog(point?.previous, marks.get(partition.partition))
          : 'unmarked';
        result.push({
          groupId,
          topic,
          partition: partition.partition,
          kafkaCommitted: kafkaOffset?.toString() ?? null,
          databaseResumePoint: resumePoint?.toString() ?? null,
          logStart: partition.logStart.toString(),
          highWatermark: partition.highWatermark.toString(),
          verdict: offsetsVerdict(kafkaOffset, resumePoint, partition, identity),
        });
      }
    }
    return result;
  });
}

export interface ResetOffsetsOptions {
  readonly pool: pg.Pool;
  readonly kafka: KafkaClient;
  readonly groupId: string;
  readonly topic: string;
  /** An offset (number, bigint or decimal string), or `'earliest'` / `'latest'`: the log start or end of each partition. */
  readonly to: bigint | number | string;
  /** Only these partitions. Default: every partition of the topic. */
  readonly partitions?: readonly number[];
}

export interface ResetResult {
  readonly groupId: string;
  readonly topic: string;
  readonly partitions: readonly { partition: number; from: string | null; to: string }[];
}

/**
 * Sets Kafka's committed offset and the `oncely.offsets` resume point of each partition to the
 * same offset. Refuses (`ONCELY_GROUP_ACTIVE`, naming the members) while the group has live
 * members, and refuses offsets outside the log (`ONCELY_OFFSET_OUT_OF_RANGE`).
 */
export async function resetOffsets(options: ResetOffsetsOptions): Promise<ResetResult> {
  return moveGroupOffsets(options, () => Promise.resolve());
}

/**
 * The body of resetOffsets, with `alsoInTransaction` run inside the database transaction that
 * moves the resume points (a replay's audit row). The order is what makes the pair safe:
 * 1. the database transaction takes the group's retention lock and writes the resume points;
 * 2. Kafka's committed offsets are set while it is open (refused by the broker if a member joined);
 * 3. then it commits. If 2 fails, nothing moved; if 3 fails after 2, KafkaClient alone was moved — the
 *    error says so and running the same reset again repairs it.
 */
export async function moveGroupOffsets(
  options: ResetOffsetsOptions,
  alsoInTransaction: (client: pg.PoolClient) => Promise<unknown>,
  targets?: readonly { partition: number; offset: bigint }[],
): Promise<ResetResult> {
  const { groupId, topic } = options;
  return withAdmin(options.kafka, async (admin) => {
    await assertNoLiveMembers(admin, groupId, `move the offsets of ${topic}`);
    const log = await topicLog(admin, topic);
    if (log.length === 0) {
      throw new OncelyError('ONCELY_TOPIC_NOT_FOUND', `Topic "${topic}" does not exist on the broker.`, {
        context: { topic },
      });
    }
    const wanted = options.partitions ?? log.map((p) => p.partition);
    const moves =
      targets ?? wanted.map((partition) => ({ partition, offset: targetOffset(options.to, log, partition, topic) }));
    const before = new Map(
      (await readResumePoints(options.pool, { groupId, topic })).map((r) => [r.partition, r.nextOffset]),
    );
    // Each new resume point is marked by the record before it in this log, so the consumer
    // recognises the log it was moved in (and not a topic re-created after this reset).
    const marks = await recordsAt(
      options.kafka,
      topic,
      new Map(
        moves
          .filter((m) => m.offset > (log.find((p) => p.partition === m.partition)?.logStart ?? m.offset))
          .map((m) => [m.partition, m.offset - 1n]),
      ),
    );
    const marked = moves.map((m) => {
      const record = marks.get(m.partition);
      return {
        ...m,
        previous:
          record === undefined
            ? undefined
            : { payloadHash: payloadFingerprint(record.value), timestamp: record.timestamp },
      };
    });
    let kafkaMoved = false;
    try {
      await inPooledTransaction(options.pool, async (client) => {
        await setResumePoints(client, groupId, topic, marked);
        await alsoInTransaction(client);
        await setCommittedOffsets(admin, groupId, topic, moves);
        kafkaMoved = true;
      });
    } catch (error) {
      if (!kafkaMoved) throw error;
      throw new OncelyError(
        'ONCELY_OFFSETS_RESET_INCOMPLETE',
        `Kafka's committed offsets of group "${groupId}" on ${topic} were moved, but the database transaction failed to commit. ` +
          'Run the same `oncely offsets reset` again before starting consumers.',
        { context: { groupId, topic }, cause: error },
      );
    }
    return {
      groupId,
      topic,
      partitions: moves.map((m) => ({
        partition: m.partition,
        from: before.get(m.partition)?.toString() ?? null,
        to: m.offset.toString(),
      })),
    };
  });
}

function targetOffset(to: ResetOffsetsOptions['to'], log: readonly PartitionLog[], partition: number, topic: string) {
  const bounds = log.find((p) => p.partition === partition);
  if (bounds === undefined) {
    throw new OncelyError('ONCELY_OFFSET_OUT_OF_RANGE', `Topic ${topic} has no partition ${partition}.`, {
      context: { topic, partition },
    });
  }
  if (to === 'earliest') return bounds.logStart;
  if (to === 'latest') return bounds.highWatermark;
  let offset: bigint;
  try {
    offset = BigInt(to);
  } catch {
    throw new OncelyError(
      'ONCELY_OFFSET_OUT_OF_RANGE',
      `"${String(to)}" is not an offset: give a whole number, 'earliest' or 'latest'.`,
      { context: { topic, partition } },
    );
  }
  if (offset < bounds.logStart || offset > bounds.highWatermark) {
    throw new OncelyError(
      'ONCELY_OFFSET_OUT_OF_RANGE',
      `Offset ${offset} is outside partition ${topic}/${partition}'s log (${bounds.logStart} to ${bounds.highWatermark}). ` +
        "Give an offset in that range, or 'earliest' / 'latest'.",
      { context: { topic, partition, offset: offset.toString() } },
    );
  }
  return offset;
}
