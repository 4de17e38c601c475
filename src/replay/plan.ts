import type { KafkaAdmin, KafkaClient } from '../kafka/client.js';
import type pg from 'pg';

import { isOncelyError, OncelyError } from '../errors.js';
import { resolveInboxScope } from '../inbox/scopes.js';
import type { ConsumedRecord } from '../kafka/runner.js';
import { deriveMessageId } from '../kafka/message-identity.js';
import { committedOffsets, offsetsAtTime, topicLog } from '../kafka/offsets.js';
import { decodeForId, toMessageInfo } from '../pipeline/record/decode.js';
import type { AnyHandlerDefinition } from '../pipeline/handler.js';
import { readRanges, withAdmin } from '../kafka/admin.js';
import { lookUpInbox, readHorizons, readPurgedUntil, readResumePoints } from './store.js';

/**
 * One end of a replay range: an offset (a whole number, as number, bigint or decimal string), an
 * ISO 8601 time or a Date (resolved per partition to the first offset at or after it, through
 * Kafka's offsets-by-timestamp), `'earliest'` (the log start) or `'latest'` (the high watermark).
 */
export type RangeBound = bigint | number | string | Date;

export interface PlanReplayOptions {
  readonly pool: pg.Pool;
  readonly kafka: KafkaClient;
  /** The group to replay: its offsets are the ones read (and, by a run, moved). */
  readonly groupId: string;
  /**
   * The inbox scope the group claims in, where messages are looked up. Default: the scope the
   * group's consumer recorded at its last start (`oncely.group_scopes`), or the group id when it
   * recorded none. A scope that contradicts the recorded one is refused (`ONCELY_CONFIG`).
   */
  readonly inboxScope?: string;
  readonly topic: string;
  /** Only these partitions. Default: every partition of the topic. */
  readonly partitions?: readonly number[];
  /** The first message of the range (inclusive). */
  readonly from: RangeBound;
  /** The end of the range (exclusive). Default `'latest'`. */
  readonly to?: RangeBound;
  /**
   * The consumer's handlers, when one of them derives ids with `messageId(event)`: the plan then
   * derives ids exactly as the consumer does. Without them, ids come from the `message-id` /
   * `idempotency-key` headers or the coordinates, which is exact for every other handler.
   */
  readonly handlers?: readonly AnyHandlerDefinition[];
  /** Called as the range is read: offsets covered so far, of `total`. */
  readonly onProgress?: (read: number, total: number) => void;
}

/** What a replay of one partition would do, message by message. */
export interface PartitionPlan {
  readonly partition: number;
  /** The range asked for, resolved to offsets: [start, end). */
  readonly start: string;
  readonly end: string;
  /**
   * The end asked for, when the plan had to go further: a run re-reads everything from the start
   * up to the group's current position, so the plan covers that much. Null otherwise.
   */
  readonly extendedFrom: string | null;
  /** The first offset the group will re-read: the start, or the log start when Kafka no longer has the start. */
  readonly readFrom: string;
  /** The group's resume point now (database), or null. */
  readonly position: string | null;
  /** The inbox is complete for offsets ≥ horizon (null: nothing of this partition was ever purged). */
  readonly horizon: string | null;
  /** Messages read from Kafka in the range. */
  readonly messages: number;
  /** In the inbox as processed: will be skipped as duplicates. */
  readonly skipped: number;
  /** Not in the inbox and written after the scope's last purge, at or above the horizon: never processed, will be applied. */
  readonly applied: number;
  /**
   * Not in the inbox, and below the horizon or written (record timestamp) at or before the scope's
   * last purge: their ids' rows may have been purged, so they could apply twice.
   */
  readonly atRisk: number;
  /** In the inbox as dead-lettered (or without a valid id): recorded again as duplicates, not re-run. */
  readonly deadLettered: number;
  /** Offsets in the range below the log start: KafkaClient no longer has them; they cannot be replayed. */
  readonly gone: number;
  /** The first and last at-risk offsets, or null. */
  readonly atRiskRange: { readonly first: string; readonly last: string } | null;
}

export interface ReplayPlan {
  readonly groupId: string;
  /** The inbox scope the messages were looked up in. */
  readonly inboxScope: string;
  /**
   * When a purge last deleted inbox rows of the scope (ISO time), or null: a message not in the
   * inbox whose record timestamp is at or before it is at risk, wherever it sits in the log.
   */
  readonly purgedUntil: string | null;
  readonly topic: string;
  readonly from: string;
  readonly to: string;
  readonly partitions: readonly PartitionPlan[];
  readonly totals: {
    readonly messages: number;
    readonly skipped: number;
    readonly applied: number;
    readonly atRisk: number;
    readonly deadLettered: number;
    readonly gone: number;
  };
  readonly plannedAt: string;
  readonly durationMs: number;
}

/**
 * A dry run of a replay: reads the range once from Kafka (see `readRanges`: a throwaway group
 * that never commits) and classifies every message exactly, with one indexed inbox look-up per
 * fetched batch. Nothing is changed, neither in Kafka nor in the database.
 */
export async function planReplay(options: PlanReplayOptions): Promise<ReplayPlan> {
  const started = Date.now();
  const { pool, kafka, groupId, topic } = options;
  const to = options.to ?? 'latest';
  // One keyspace: the inbox, its horizons and its purges are the scope's; the positions are the group's.
  const inboxScope = await resolveInboxScope(pool, groupId, options.inboxScope);

  const [horizons, purgedUntil, resumeRows] = await Promise.all([
    readHorizons(pool, inboxScope, topic),
    readPurgedUntil(pool, inboxScope),
    readResumePoints(pool, { groupId, topic }),
  ]);
  const resume = new Map(resumeRows.map((r) => [r.partition, r.nextOffset]));
  const ranges = await withAdmin(kafka, (admin) => resolveRanges(admin, { ...options, to }, resume));
  const counts = await classifyRanges(options, ranges, {
    inboxScope,
    horizons,
    // Record timestamps are whole milliseconds: a copy written before the purge has a timestamp at
    // or below the purge moment truncated to the millisecond.
    purgedUntilMs: purgedUntil === undefined ? undefined : Math.floor(purgedUntil.getTime()),
  });

  const partitions = ranges.map((r) => partitionPlan(r, counts.get(r.partition), resume, horizons));
  const sum = (key: 'messages' | 'skipped' | 'applied' | 'atRisk' | 'deadLettered' | 'gone'): number =>
    partitions.reduce((s, p) => s + p[key], 0);
  return {
    groupId,
    inboxScope,
    purgedUntil: purgedUntil?.toISOString() ?? null,
    topic,
    from: describeBound(options.from),
    to: describeBound(to),
    partitions,
    totals: {
      messages: sum('messages'),
      skipped: sum('skipped'),
      applied: sum('applied'),
      atRisk: sum('atRisk'),
      deadLettered: sum('deadLettered'),
      gone: sum('gone'),
    },
    plannedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
  };
}

/** One partition's range, resolved to offsets. */
interface PlannedRange {
  readonly partition: number;
  readonly start: bigint;
  /** Where reading ends: the end asked for, or further, up to the group's position. */
  readonly end: bigint;
  readonly readFrom: bigint;
  /** The end asked for. */
  readonly asked: bigint;
  readonly gone: bigint;
}

/**
 * The range of every partition asked for, checked against the topic's log and the group's
 * offsets: a missing topic, a group that never consumed it, a backwards range or an offset past
 * the end of every partition is refused before anything is read.
 */
async function resolveRanges(
  admin: KafkaAdmin,
  options: Pick<PlanReplayOptions, 'groupId' | 'topic' | 'partitions' | 'from'> & { readonly to: RangeBound },
  resume: ReadonlyMap<number, bigint>,
): Promise<PlannedRange[]> {
  const { groupId, topic } = options;
  const log = await topicLog(admin, topic);
  if (log.length === 0) {
    throw new OncelyError('ONCELY_TOPIC_NOT_FOUND', `Topic "${topic}" does not exist on the broker.`, {
      context: { topic },
    });
  }
  const committed = await committedOffsets(admin, groupId, topic);
  // A group that never consumed the topic has nothing to replay, and a run would create its
  // offsets at the range start: most often the name is misspelt. Refused before anything is read.
  if (resume.size === 0 && committed.size === 0) {
    throw new OncelyError(
      'ONCELY_CONFIG',
      `Consumer group "${groupId}" has no offsets for topic ${topic}, neither in Kafka nor in oncely.offsets: ` +
        'it never consumed the topic, so there is nothing to replay. Check the group and topic names ' +
        '(`oncely offsets show` lists every group oncely has recorded).',
      { context: { option: 'groupId', groupId, topic } },
    );
  }
  const wanted = options.partitions ?? log.map((p) => p.partition);
  const resolveBound = boundResolver(admin, topic);
  // Partitions differ in length: an offset past the end of some of them is a range that is
  // empty there, but an offset past the end of every partition asked for is a slip (a typo, the
  // wrong topic) and is refused, as `offsets reset` refuses it.
  const pastEnd = { from: [] as unknown[], to: [] as unknown[] };
  const clampPastEnd = (which: 'from' | 'to', bounds: Bounds) => (error: unknown) => {
    if (!isPastEnd(error)) throw error;
    pastEnd[which].push(error);
    return bounds.highWatermark;
  };
  const ranges = await Promise.all(
    wanted.map(async (partition): Promise<PlannedRange> => {
      const bounds = log.find((p) => p.partition === partition);
      if (bounds === undefined) {
        throw new OncelyError('ONCELY_OFFSET_OUT_OF_RANGE', `Topic ${topic} has no partition ${partition}.`, {
          context: { topic, partition },
        });
      }
      const start = await resolveBound(options.from, partition, bounds, 'from').catch(clampPastEnd('from', bounds));
      const asked = min(
        await resolveBound(options.to, partition, bounds, 'to').catch(clampPastEnd('to', bounds)),
        bounds.highWatermark,
      );
      if (start > asked) {
        throw new OncelyError(
          'ONCELY_CONFIG',
          `The range is backwards on ${topic}/${partition}: from (${describeBound(options.from)}) resolves to offset ${start}, ` +
            `after to (${describeBound(options.to)}, offset ${asked}). Give a from that comes before to.`,
          { context: { option: 'from', topic, partition } },
        );
      }
      // A run rewinds the partition to the start and the group re-reads everything up to where
      // it was: the plan must cover that much, whatever `to` says.
      const position = resume.get(partition) ?? committed.get(partition);
      const end = position !== undefined && position > asked ? min(position, bounds.highWatermark) : asked;
      const readFrom = start < bounds.logStart ? bounds.logStart : start;
      return {
        partition,
        start,
        end,
        readFrom,
        asked,
        gone: start < bounds.logStart ? min(bounds.logStart, end) - start : 0n,
      };
    }),
  );
  for (const which of ['from', 'to'] as const) {
    if (wanted.length > 0 && pastEnd[which].length === wanted.length) throw pastEnd[which][0];
  }
  return ranges;
}

/** What a partition's messages would become, counted as its range is read. */
interface RangeCounts {
  messages: number;
  skipped: number;
  applied: number;
  atRisk: number;
  deadLettered: number;
  /** The first and last at-risk offsets; -1 while there is none. */
  first: bigint;
  last: bigint;
  /** Offsets of the range read so far (for progress). */
  covered: number;
}

/** Reads every range once and classifies each message, with one inbox look-up per fetched batch. */
async function classifyRanges(
  options: Pick<PlanReplayOptions, 'pool' | 'kafka' | 'topic' | 'handlers' | 'onProgress'>,
  ranges: readonly PlannedRange[],
  inbox: {
    readonly inboxScope: string;
    readonly horizons: ReadonlyMap<number, bigint>;
    readonly purgedUntilMs: number | undefined;
  },
): Promise<Map<number, RangeCounts>> {
  const { pool, kafka, topic } = options;
  const handler = options.handlers?.find((h) => h.topic === topic);
  const counts = new Map(
    ranges.map((r) => [
      r.partition,
      { messages: 0, skipped: 0, applied: 0, atRisk: 0, deadLettered: 0, first: -1n, last: -1n, covered: 0 },
    ]),
  );
  const total = ranges.reduce((sum, r) => sum + Math.max(0, Number(r.end - r.readFrom)), 0);
  let read = 0;
  options.onProgress?.(0, total);
  // Ids that will be applied earlier in this replay: a later record with the same id is a duplicate.
  const willApply = new Set<string>();

  await readRanges(
    kafka,
    topic,
    ranges.map((r) => ({ partition: r.partition, start: r.readFrom, end: r.end })),
    async (partition, records) => {
      const c = counts.get(partition);
      const range = ranges.find((r) => r.partition === partition);
      if (c === undefined || range === undefined) return;
      const ids: (string | null)[] = [];
      for (const record of records) ids.push(await messageIdOf(record, handler));
      const found = await lookUpInbox(
        pool,
        inbox.inboxScope,
        ids.filter((id): id is string => id !== null),
      );
      const horizon = inbox.horizons.get(partition);
      for (const [index, record] of records.entries()) {
        const id = ids[index] ?? null;
        const offset = BigInt(record.offset);
        c.messages++;
        const status = id === null ? 'dead_lettered' : found.get(id);
        if (status === 'processed' || (id !== null && willApply.has(id))) c.skipped++;
        else if (status === 'dead_lettered') c.deadLettered++;
        else if ((horizon !== undefined && offset < horizon) || writtenBeforePurge(record, inbox.purgedUntilMs)) {
          c.atRisk++;
          if (c.first < 0n) c.first = offset;
          c.last = offset;
        } else {
          c.applied++;
          if (id !== null) willApply.add(id);
        }
      }
      const covered = Number(BigInt(records.at(-1)?.offset ?? '0') + 1n - range.readFrom);
      read += covered - c.covered;
      c.covered = covered;
      options.onProgress?.(read, total);
    },
  );
  options.onProgress?.(total, total);
  return counts;
}

/** One partition's part of the plan. */
function partitionPlan(
  r: PlannedRange,
  counts: RangeCounts | undefined,
  resume: ReadonlyMap<number, bigint>,
  horizons: ReadonlyMap<number, bigint>,
): PartitionPlan {
  const c = counts ?? { messages: 0, skipped: 0, applied: 0, atRisk: 0, deadLettered: 0, first: -1n, last: -1n };
  return {
    partition: r.partition,
    start: r.start.toString(),
    end: r.end.toString(),
    extendedFrom: r.end > r.asked ? r.asked.toString() : null,
    readFrom: r.readFrom.toString(),
    position: resume.get(r.partition)?.toString() ?? null,
    horizon: horizons.get(r.partition)?.toString() ?? null,
    messages: c.messages,
    skipped: c.skipped,
    applied: c.applied,
    atRisk: c.atRisk,
    deadLettered: c.deadLettered,
    gone: Number(r.gone),
    atRiskRange: c.first < 0n ? null : { first: c.first.toString(), last: c.last.toString() },
  };
}

/**
 * The time half of the horizon. A purge deletes the rows of ids processed before its cutoff, and
 * notes when it did (`purged_at`). A copy of such an id — a producer retry, an outbox re-send —
 * that was consumed while the row still existed was skipped as a duplicate and left no row of its
 * own; it may sit at any offset, on any partition. It was written before it was consumed, so
 * before the purge: every message not in the inbox whose record timestamp is at or before the
 * scope's latest purge may be such a copy, and is at risk. A message written after it cannot have
 * met a purged row: it is new (or a copy arriving after its original's window, which no inbox
 * catches). Assumes record timestamps and PostgreSQL's clock agree; a record without a usable
 * timestamp counts as written before.
 */
export function writtenBeforePurge(record: ConsumedRecord, purgedUntilMs: number | undefined): boolean {
  if (purgedUntilMs === undefined) return false;
  const timestamp = Number(record.timestamp);
  return !Number.isFinite(timestamp) || timestamp < 0 || timestamp <= purgedUntilMs;
}

/**
 * The id the consumer would claim the record under (null: no valid id, dead-lettered). With the
 * topic's handler and its `messageId(event)`, decoded as the pipeline does; an event that does not
 * decode is dead-lettered by the consumer under its header or coordinates id, as here.
 */
async function messageIdOf(record: ConsumedRecord, handler: AnyHandlerDefinition | undefined): Promise<string | null> {
  let fromHandler: (() => unknown) | undefined;
  if (handler?.messageId !== undefined && record.value !== null) {
    // Awaited as the pipeline awaits it: decoder, schema and messageId() may be async.
    fromHandler = (await decodeForId(handler, toMessageInfo(record))).fromHandler;
  }
  const identity = deriveMessageId(record, fromHandler);
  return identity.ok ? identity.id : null;
}

type Bounds = { readonly logStart: bigint; readonly highWatermark: bigint };

/** The refusal of an offset above a partition's log end (not one below 0, which is always refused). */
function isPastEnd(error: unknown): boolean {
  if (!isOncelyError(error) || error.code !== 'ONCELY_OFFSET_OUT_OF_RANGE') return false;
  const offset = error.context?.offset;
  return typeof offset === 'string' && !offset.startsWith('-');
}

function boundResolver(
  admin: KafkaAdmin,
  topic: string,
): (bound: RangeBound, partition: number, log: Bounds, which: 'from' | 'to') => Promise<bigint> {
  const byTime = new Map<number, Promise<Map<number, bigint>>>();
  return async (bound, partition, log, which) => {
    if (bound === 'earliest') return log.logStart;
    if (bound === 'latest') return log.highWatermark;
    const offset =
      typeof bound === 'bigint'
        ? bound
        : typeof bound === 'number' && Number.isInteger(bound)
          ? BigInt(bound)
          : typeof bound === 'string' && /^[-+]?\d+$/.test(bound.trim())
            ? BigInt(bound.trim())
            : undefined;
    if (offset !== undefined) {
      // The same bounds `offsets reset` holds to: an offset past the log end (or below 0) is a
      // slip, not a range; below the log start is allowed and counted as gone.
      if (offset < 0n || offset > log.highWatermark) {
        throw new OncelyError(
          'ONCELY_OFFSET_OUT_OF_RANGE',
          `Offset ${offset} (${which}) is outside partition ${topic}/${partition}'s log (0 to ${log.highWatermark}): ` +
            "give an offset in that range, an ISO 8601 time, 'earliest' or 'latest'.",
          { context: { option: which, topic, partition, offset: offset.toString() } },
        );
      }
      return offset;
    }
    // Only an ISO 8601 date or time: Date() also reads "-5" or "5" as a year.
    const at =
      bound instanceof Date
        ? bound
        : typeof bound === 'string' && /^\d{4}-\d{2}-\d{2}/.test(bound.trim())
          ? new Date(bound)
          : new Date(Number.NaN);
    if (Number.isNaN(at.getTime())) {
      throw new OncelyError(
        'ONCELY_CONFIG',
        `Invalid replay bound "${String(bound)}" (${which}): give an offset, an ISO 8601 time (2026-12-01T10:00:00Z), 'earliest' or 'latest'.`,
        { context: { option: which } },
      );
    }
    let offsets = byTime.get(at.getTime());
    if (offsets === undefined) {
      offsets = offsetsAtTime(admin, topic, at);
      byTime.set(at.getTime(), offsets);
    }
    return (await offsets).get(partition) ?? log.highWatermark;
  };
}

function describeBound(bound: RangeBound): string {
  return bound instanceof Date ? bound.toISOString() : String(bound);
}

function min(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}
