/**
 * Where each partition starts in a group generation: the resume point recorded in PostgreSQL,
 * checked against the log and Kafka's committed offset (README: "Offsets that disagree").
 */
import type { ResolvedConsumerConfig } from '../config.js';
import { loadNextOffsets } from '../inbox/claims.js';
import type { KafkaRunner, PartitionBatch } from '../kafka/runner.js';

import type { PipelineContext } from './context.js';
import { redactError } from './error-record.js';
import { backoffDelay } from './retry.js';

/** The recorded resume point disagrees with the log; see `partition:offsets-mismatch`. */
export interface OffsetsMismatch {
  readonly resumeAt: bigint;
  readonly logStart: bigint;
  readonly logEnd: bigint;
  readonly problem: 'ahead-of-log' | 'behind-log-start';
}

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
    const resumePoints = await loadNextOffsets(this.#config.pool, this.#config.groupId, topic);
    const [bounds, committed] =
      runner === undefined || resumePoints.size === 0
        ? [new Map<number, { start: bigint; end: bigint }>(), new Map<number, bigint>()]
        : await Promise.all([runner.logBounds(topic), runner.committedOffsets(topic)]);
    const starts = new Map<number, PartitionStart>();
    for (const [partition, resumeAt] of resumePoints) {
      const start = decideStart(resumeAt, bounds.get(partition), committed.get(partition));
      starts.set(partition, start);
      if (!this.#actions.assigned(topic, partition)) continue;
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
 * Where a partition with a recorded resume point starts. Kafka's committed offset wins when it is
 * later (an operator moved it on purpose); a resume point past the log's end, or a start before the
 * log's beginning, is a mismatch; no committed offset (or an earlier one) means: move to the resume point.
 */
export function decideStart(
  resumeAt: bigint,
  bounds: { readonly start: bigint; readonly end: bigint } | undefined,
  committed: bigint | undefined,
): PartitionStart {
  if (bounds === undefined) return { resumeAt };
  const effective = committed !== undefined && committed > resumeAt ? committed : resumeAt;
  if (resumeAt > bounds.end) {
    return { resumeAt, mismatch: { resumeAt, logStart: bounds.start, logEnd: bounds.end, problem: 'ahead-of-log' } };
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
