/**
 * Where each partition starts in a group generation: the resume point recorded in PostgreSQL,
 * checked against the log and Kafka's committed offset (docs/operating.md, "Runbook: offsets that disagree").
 */
import type { ResolvedConsumerConfig } from '../options.js';
import { loadResumePoints, type ResumeMark, type ResumePoint } from '../../inbox/claims.js';
import { payloadFingerprint } from '../../kafka/message-identity.js';
import type { LoggedRecord } from '../../kafka/offsets.js';
import type { KafkaRunner, PartitionBatch } from '../../kafka/runner.js';

import type { PipelineContext } from '../context.js';
import { redactError } from '../record/error-record.js';
import { backoffDelay } from '../retry.js';

/**
 * How a resume point disagrees with the log: past its end, before its start, or inside it but
 * next to another record than the one recorded there (`other-log`: the topic was deleted and
 * re-created, however long the new log is).
 */
export type OffsetsProblem = 'ahead-of-log' | 'behind-log-start' | 'other-log';

/** The recorded resume point disagrees with the log; see `partition:offsets-mismatch`. */
export interface OffsetsMismatch {
  readonly resumeAt: bigint;
  readonly logStart: bigint;
  readonly logEnd: bigint;
  readonly problem: OffsetsProblem;
}

/**
 * Whether the log at a resume point is the one it was recorded in, judged by the record before it:
 * `same` or `other` when that record was compared; `unmarked` when the resume point carries no
 * mark (recorded before migration 0007); `unreadable` when the record is not in the log to compare
 * (below its start, compacted away, a transaction marker); `none` when there is nothing before it.
 */
export type LogIdentity = 'same' | 'other' | 'unmarked' | 'unreadable' | 'none';

/** Where a partition starts in this group generation. */
export interface PartitionStart {
  /** The next offset recorded in `oncely.offsets`; undefined when none is. */
  readonly resumeAt: bigint | undefined;
  /** Kafka had no committed offset (or an earlier one): the partition was moved to `resumeAt`. */
  readonly seekTo?: bigint;
  readonly mismatch?: OffsetsMismatch;
}

export interface ResumeActions {
  assigned(topic: string, partition: number): boolean;
  seek(topic: string, partition: number, offset: string): void;
  mismatch(topic: string, partition: number, found: OffsetsMismatch): void;
}

/**
 * Per partition, where to start: the next offset recorded in `oncely.offsets`, checked against
 * the log's bounds and Kafka's committed offset, once per group generation (after each join) and
 * per topic. Acts on what it finds for the partitions this member owns: moves a partition Kafka
 * has no offset for back to its resume point (instead of the log's end, which would skip what was
 * produced meanwhile), and stops one whose resume point is outside the log.
 */
export class ResumePoints {
  readonly #config: ResolvedConsumerConfig;
  readonly #actions: ResumeActions;
  readonly #runner: () => KafkaRunner | undefined;
  #byTopic = new Map<string, Promise<Map<number, PartitionStart>>>();
  /** Partitions moved to their resume point whose first batch from there has not come yet. */
  #seeking = new Set<string>();

  constructor(config: ResolvedConsumerConfig, actions: ResumeActions, runner: () => KafkaRunner | undefined) {
    this.#config = config;
    this.#actions = actions;
    this.#runner = runner;
  }

  clear(): void {
    this.#byTopic = new Map();
    this.#seeking = new Set();
  }

  seekPending(batch: PartitionBatch): boolean {
    return this.#seeking.has(`${batch.topic}\u0000${batch.partition}`);
  }

  seekDone(batch: PartitionBatch): void {
    this.#seeking.delete(`${batch.topic}\u0000${batch.partition}`);
  }

  /** Starts reading a topic's starts now (after a join); problems are retried by the batches. */
  check(topic: string, pipeline: PipelineContext): void {
    this.#load(topic).catch((error: unknown) => {
      pipeline.logger.warn(
        { err: redactError(error), topic },
        'could not check resume points yet; retrying with the next batch',
      );
    });
  }

  /** The batch's partition's start; undefined if the consumer stopped first. */
  async startOf(batch: PartitionBatch, pipeline: PipelineContext): Promise<PartitionStart | undefined> {
    for (let failures = 1; ; failures++) {
      try {
        return (await this.#load(batch.topic)).get(batch.partition) ?? { resumeAt: undefined };
      } catch (error) {
        const delayMs = backoffDelay(pipeline.retry, failures);
        pipeline.logger.warn(
          { err: redactError(error), topic: batch.topic, delayMs },
          'could not read resume points; retrying',
        );
        if (!batch.isActive()) return undefined;
        await batch.heartbeat();
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
    }
  }

  #load(topic: string): Promise<Map<number, PartitionStart>> {
    let pending = this.#byTopic.get(topic);
    if (pending === undefined) {
      pending = this.#read(topic);
      this.#byTopic.set(topic, pending);
      // A failed read is not kept: the next batch reads again.
      pending.catch(() => {
        if (this.#byTopic.get(topic) === pending) this.#byTopic.delete(topic);
      });
    }
    return pending;
  }

  async #read(topic: string): Promise<Map<number, PartitionStart>> {
    const runner = this.#runner();
    // PostgreSQL first, the log after: the log's end only grows, so a resume point committed
    // before this read can never look ahead of the end read after it.
    const resumePoints = await loadResumePoints(this.#config.pool, this.#config.groupId, topic);
    const [bounds, committed] =
      runner === undefined || resumePoints.size === 0
        ? [new Map<number, { start: bigint; end: bigint }>(), new Map<number, bigint>()]
        : await Promise.all([runner.logBounds(topic), runner.committedOffsets(topic)]);
    // The record before each owned resume point, fetched once per partition and generation: the
    // resume point is only trusted in the log it was recorded in (DESIGN.md 3a, topic identity).
    const wanted = new Map<number, bigint>();
    for (const [partition, point] of resumePoints) {
      const at = markOffset(point, bounds.get(partition));
      if (at !== undefined && this.#actions.assigned(topic, partition)) wanted.set(partition, at);
    }
    const records =
      runner === undefined || wanted.size === 0
        ? new Map<number, LoggedRecord>()
        : await runner.recordsAt(topic, wanted);
    const starts = new Map<number, PartitionStart>();
    for (const [partition, point] of resumePoints) {
      const identity = wanted.has(partition)
        ? recogniseLog(point.previous, records.get(partition))
        : point.nextOffset === 0n
          ? 'none'
          : point.previous === undefined
            ? 'unmarked'
            : 'unreadable';
      const resumeAt = point.nextOffset;
      const start = decideStart(resumeAt, bounds.get(partition), committed.get(partition), identity);
      starts.set(partition, start);
      if (!this.#actions.assigned(topic, partition)) continue;
      if (identity === 'unmarked' && start.mismatch === undefined) {
        // A row from before migration 0007: nothing to recognise its log by. Said once per
        // assignment; the next outcome recorded in this partition marks it.
        this.#config.logger.info(
          { topic, partition, resumeAt: resumeAt.toString() },
          'resume point recorded before oncely marked them (migration 0007): not checked against the log this time',
        );
      } else if (identity === 'unreadable' && wanted.has(partition) && start.mismatch === undefined) {
        // Asked for, not there: a compacted topic may have removed it. The bounds alone decide.
        this.#config.logger.info(
          { topic, partition, resumeAt: resumeAt.toString() },
          'the record before the resume point is no longer in the log (compacted?): its log could not be recognised this time',
        );
      }
      if (start.mismatch !== undefined) this.#actions.mismatch(topic, partition, start.mismatch);
      else if (start.seekTo !== undefined) {
        this.#seeking.add(`${topic}\u0000${partition}`);
        this.#actions.seek(topic, partition, start.seekTo.toString());
      }
    }
    return starts;
  }
}

/**
 * The offset of the record that marks `point` (the one before it), when the resume point has a
 * mark and that record can still be in the log; undefined otherwise (nothing to fetch).
 */
export function markOffset(
  point: ResumePoint,
  bounds: { readonly start: bigint; readonly end: bigint } | undefined,
): bigint | undefined {
  if (point.previous === undefined || bounds === undefined) return undefined;
  const at = point.nextOffset - 1n;
  return at >= bounds.start && at < bounds.end ? at : undefined;
}

/**
 * Compares the record found before a resume point with the mark recorded there: the same payload
 * fingerprint and the same Kafka timestamp, or it is another log. Absent: it could not be read.
 */
export function recogniseLog(mark: ResumeMark | undefined, found: LoggedRecord | undefined): LogIdentity {
  if (mark === undefined) return 'unmarked';
  if (found === undefined) return 'unreadable';
  return found.timestamp === mark.timestamp && payloadFingerprint(found.value).equals(mark.payloadHash)
    ? 'same'
    : 'other';
}

/**
 * Where a partition with a recorded resume point starts. Kafka's committed offset wins when it is
 * later (an operator moved it on purpose); a resume point past the log's end, a start before the
 * log's beginning, or a record before it that is not the one recorded there (`identity` `other`:
 * another log, whatever its length) is a mismatch; no committed offset (or an earlier one) means:
 * move to the resume point.
 */
export function decideStart(
  resumeAt: bigint,
  bounds: { readonly start: bigint; readonly end: bigint } | undefined,
  committed: bigint | undefined,
  identity: LogIdentity = 'unmarked',
): PartitionStart {
  if (bounds === undefined) return { resumeAt };
  const effective = committed !== undefined && committed > resumeAt ? committed : resumeAt;
  if (resumeAt > bounds.end) {
    return { resumeAt, mismatch: { resumeAt, logStart: bounds.start, logEnd: bounds.end, problem: 'ahead-of-log' } };
  }
  // Checked before the log's start: a new log that starts past the old resume point is not
  // "messages deleted before they were processed", and saying which is what lets an operator act.
  if (identity === 'other') {
    return { resumeAt, mismatch: { resumeAt, logStart: bounds.start, logEnd: bounds.end, problem: 'other-log' } };
  }
  if (effective < bounds.start) {
    return {
      resumeAt,
      mismatch: { resumeAt, logStart: bounds.start, logEnd: bounds.end, problem: 'behind-log-start' },
    };
  }
  if (committed === undefined || committed < resumeAt) return { resumeAt, seekTo: resumeAt };
  return { resumeAt };
}
