/**
 * The partitions a consumer holds paused, and why: attempts ran out (`onExhausted: 'pause'`), an
 * outcome could not be stored, or the recorded offsets disagree with the log. A paused partition
 * stays where it is — nothing is resolved past it — until `resume()` or until it leaves this member.
 */
import type { Logger } from 'pino';

import { OncelyError } from '../../errors.js';
import type { StoredError } from '../../inbox/dead-letters.js';
import type { ConsumedRecord, KafkaRunner } from '../../kafka/runner.js';

import { describeError } from '../record/error-record.js';
import type { EventHub, PauseReason } from '../../events/index.js';
import type { OffsetsMismatch } from './resume-points.js';

export interface PausedPartition {
  readonly topic: string;
  readonly partition: number;
  /** The message the partition stopped at (for an offsets mismatch: the recorded resume point). */
  readonly offset: string;
  readonly messageId: string | null;
  /** Why: attempts ran out (`onExhausted: 'pause'`), its outcome could not be stored, or the offsets disagree. */
  readonly reason: PauseReason;
  readonly error: StoredError;
  readonly pausedAt: Date;
}

export interface StoppedAt {
  readonly messageId: string | null;
  readonly reason: PauseReason;
  readonly error: StoredError;
  readonly attempts: number;
}

export class PartitionPauses {
  readonly #paused = new Map<string, PausedPartition>();
  readonly #groupId: string;
  readonly #logger: Logger;
  readonly #events: EventHub;
  readonly #runner: () => KafkaRunner | undefined;

  constructor(groupId: string, logger: Logger, events: EventHub, runner: () => KafkaRunner | undefined) {
    this.#groupId = groupId;
    this.#logger = logger;
    this.#events = events;
    this.#runner = runner;
  }

  has(topic: string, partition: number): boolean {
    return this.#paused.has(key(topic, partition));
  }

  list(): PausedPartition[] {
    return [...this.#paused.values()];
  }

  /** Nothing is resolved: the partition stays at this record, fetched again on resume(). */
  pauseAt(record: ConsumedRecord, stopped: StoppedAt): void {
    const { topic, partition, offset } = record;
    const { attempts, ...why } = stopped;
    const paused: PausedPartition = { topic, partition, offset, ...why, pausedAt: new Date() };
    this.#runner()?.pause(topic, partition);
    this.#paused.set(key(topic, partition), paused);
    this.#events.emit('partition:paused', () => ({ ...paused, groupId: this.#groupId, attempts }));
  }

  /**
   * The recorded resume point and the log disagree: skipping to where Kafka is would lose messages
   * silently, so the partition stops here until an operator decides (`oncely offsets show|reset`).
   */
  offsetsMismatch(topic: string, partition: number, found: OffsetsMismatch): void {
    if (this.has(topic, partition)) return;
    const groupId = this.#groupId;
    const { resumeAt, logStart, logEnd, problem } = found;
    const explanation =
      problem === 'ahead-of-log'
        ? `oncely.offsets says the next offset is ${resumeAt}, but the log ends at ${logEnd}: the topic was deleted and re-created, or its log truncated`
        : problem === 'other-log'
          ? `oncely.offsets says the next offset is ${resumeAt}, but the record at ${resumeAt - 1n} is not the one this group processed there: the topic was deleted and re-created (this is another log, ${logStart} to ${logEnd}), and its records below ${resumeAt} were never processed`
          : `oncely.offsets says the next offset is ${resumeAt}, but the log starts at ${logStart}: messages were deleted before they were processed`;
    const message =
      `Partition ${topic}/${partition} paused: ${explanation}. Nothing was skipped. ` +
      `Check with \`oncely offsets show --group ${groupId} --topic ${topic}\`, then move both offsets with ` +
      `\`oncely offsets reset --group ${groupId} --topic ${topic} --partitions ${partition} --to <offset|earliest|latest>\` ` +
      'while the group is stopped, and start the consumer again.';
    const offsets = {
      resumeOffset: resumeAt.toString(),
      logStartOffset: logStart.toString(),
      logEndOffset: logEnd.toString(),
    };
    const error = describeError(
      new OncelyError('ONCELY_OFFSETS_MISMATCH', message, { context: { topic, partition, ...offsets } }),
    );
    this.#logger.error({ topic, partition, ...offsets, problem }, message);
    this.#runner()?.pause(topic, partition);
    this.#paused.set(key(topic, partition), {
      topic,
      partition,
      offset: offsets.resumeOffset,
      messageId: null,
      reason: 'offsets-mismatch',
      error,
      pausedAt: new Date(),
    });
    this.#events.emit('partition:offsets-mismatch', () => ({ groupId, topic, partition, ...offsets, problem }));
  }

  /** Forgets a pause (resume() then fetches the partition again); false when it was not paused. */
  release(topic: string, partition: number): boolean {
    return this.#paused.delete(key(topic, partition));
  }

  /** Forgets the pauses of partitions that went to other members: their new owner decides afresh. */
  keepOnly(assigned: Readonly<Record<string, readonly number[]>>): void {
    for (const [k, paused] of this.#paused) {
      if (!(assigned[paused.topic]?.includes(paused.partition) ?? false)) this.#paused.delete(k);
    }
  }
}

function key(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}
