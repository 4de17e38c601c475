/**
 * What per-message and batch processing share: the context they run in, the outcomes they record,
 * and how an outcome is announced (logs and events) once committed.
 */
import type { Logger } from 'pino';
import type pg from 'pg';

import { OncelyError } from '../errors.js';
import type { InboxEntry } from '../inbox/claims.js';
import type { TransactionBinder } from '../inbox/database.js';
import type { DeadLetterReason, StoredError } from '../inbox/dead-letters.js';
import type { OpenTransaction, Transactions } from '../inbox/transaction.js';
import type { DeadLetterTopic } from '../kafka/dead-letter-topic.js';
import type { ConsumedRecord } from '../kafka/runner.js';
import { recordDeadLetter } from './dead-letter.js';
import { describeError } from './error-record.js';
import type { DuplicateClass, EventHub, MessageCoordinates } from './events.js';
import { backoffDelay, classifyFailure, type FailureKind, type RetryPolicy } from './retry.js';

/** What the pipeline needs from the consumer around it. */
export interface PipelineContext {
  readonly groupId: string;
  readonly pool: pg.Pool;
  readonly bind: TransactionBinder;
  readonly retry: RetryPolicy;
  readonly logger: Logger;
  readonly logPayloads: boolean;
  readonly events: EventHub;
  /** 0: no timeout. */
  readonly handlerTimeoutMs: number;
  /** Refuse records whose id would be their Kafka coordinates. */
  readonly requireMessageId: boolean;
  /** Larger values are dead-lettered; undefined: no limit. */
  readonly maxPayloadBytes: number | undefined;
  /** When a handler's attempts run out: dead-letter the message, or pause its partition. */
  readonly onExhausted: 'dead-letter' | 'pause';
  readonly deadLetterTopic: DeadLetterTopic | undefined;
}

/** The partition's levers the pipeline uses while a record is in flight. */
export interface PartitionControl {
  heartbeat(): Promise<void>;
  isActive(): boolean;
  /** Where the partition's transactions run: one held connection, one after another. */
  readonly transactions: Transactions;
}

export type Outcome =
  | { readonly kind: 'processed'; readonly attempts: number }
  /** A tombstone recorded and skipped (the handler's `tombstone: 'skip'`). */
  | { readonly kind: 'skipped' }
  | { readonly kind: 'duplicate'; readonly duplicateClass: DuplicateClass; readonly original: InboxEntry }
  | {
      readonly kind: 'dead_lettered';
      readonly reason: DeadLetterReason;
      readonly error: StoredError;
      readonly attempts: number;
    }
  /** Attempts ran out with `onExhausted: 'pause'`: nothing recorded; the partition must pause here. */
  | { readonly kind: 'paused'; readonly messageId: string; readonly error: StoredError; readonly attempts: number }
  /** The consumer stopped (or lost the partition) before an outcome was recorded: redelivered later. */
  | { readonly kind: 'abandoned' };

/** A failure of the user's handler, with the transaction it happened in (to ask about the connection). */
export class HandlerFailure extends Error {
  constructor(
    readonly error: unknown,
    readonly transaction: OpenTransaction,
  ) {
    super('the handler failed', { cause: error });
  }
}

/**
 * What made an attempt fail (unwrapped from {@link HandlerFailure}) and how to treat it: a failure
 * inside the handler on a connection that died is the database's, not the message's.
 */
export function classifyAttemptFailure(failure: unknown): { readonly error: unknown; readonly kind: FailureKind } {
  const handlerFailure = failure instanceof HandlerFailure ? failure : undefined;
  const error = handlerFailure !== undefined ? handlerFailure.error : failure;
  const kind = classifyFailure({
    error,
    inHandler: handlerFailure !== undefined,
    connectionLost: handlerFailure?.transaction.connectionLost() ?? false,
  });
  return { error, kind };
}

/**
 * `SET LOCAL statement_timeout` with the handler timeout: a handler stuck in the database is cut
 * off by PostgreSQL at the same moment the JavaScript timer gives up on it, so the ROLLBACK that
 * follows is not queued behind a query that never ends.
 */
export function transactionSettings(pipeline: PipelineContext): { statementTimeoutMs?: number } {
  return pipeline.handlerTimeoutMs > 0 ? { statementTimeoutMs: pipeline.handlerTimeoutMs } : {};
}

/**
 * Runs an oncely-only transaction (dead-lettering) until it commits. Its statements cannot fail
 * because of the message, so every failure is the database's (or the dead-letter topic's): wait
 * and retry, for as long as the partition is ours. Giving up would lose the record's outcome.
 */
export async function untilCommitted(
  pipeline: PipelineContext,
  control: PartitionControl,
  where: MessageCoordinates,
  work: (t: OpenTransaction) => Promise<Outcome>,
): Promise<Outcome> {
  for (let failures = 1; ; failures++) {
    try {
      return await control.transactions.run(work);
    } catch (error) {
      const delayMs = backoffDelay(pipeline.retry, failures);
      pipeline.logger.warn({ ...where, err: error, delayMs }, 'could not record the outcome; retrying');
      if (!(await waitHeartbeating(delayMs, control))) return { kind: 'abandoned' };
    }
  }
}

/**
 * The id is already recorded. Same coordinates: the record came again (a crash or rebalance
 * before the offset commit). Same bytes elsewhere: it was published again. Other bytes: the
 * producer reused the id for another payload — a bug that is dead-lettered, never skipped.
 */
export async function resolveDuplicate(
  pipeline: PipelineContext,
  t: OpenTransaction,
  record: ConsumedRecord,
  messageId: string,
  payloadHash: Buffer,
  existing: InboxEntry,
): Promise<Outcome> {
  const duplicateClass = classifyDuplicate(record, payloadHash, existing);
  if (duplicateClass !== 'key_reuse') return { kind: 'duplicate', duplicateClass, original: existing };
  const error = keyReuseError(messageId, payloadHash, existing);
  await recordDeadLetter(pipeline, t, { record, messageId, reason: 'key_reuse', error, attempts: 0 });
  return { kind: 'dead_lettered', reason: 'key_reuse', error, attempts: 0 };
}

/** The error stored with a key-reuse dead letter: both fingerprints and where the id was first seen. */
function keyReuseError(messageId: string, payloadHash: Buffer, existing: InboxEntry): StoredError {
  return {
    ...describeError(
      new OncelyError(
        'ONCELY_KEY_REUSE',
        `Message id "${messageId}" was first seen at ${existing.topic}/${existing.partition}/${existing.offset} ` +
          'with a different payload. A producer reused the id for another event; give every event its own id.',
      ),
    ),
    firstPayloadHash: existing.payloadHash.toString('hex'),
    payloadHash: payloadHash.toString('hex'),
    first: { topic: existing.topic, partition: existing.partition, offset: existing.offset, status: existing.status },
  };
}

function classifyDuplicate(
  record: { readonly topic: string; readonly partition: number; readonly offset: string },
  payloadHash: Buffer,
  existing: InboxEntry,
): DuplicateClass | 'key_reuse' {
  if (!payloadHash.equals(existing.payloadHash)) return 'key_reuse';
  const sameCoordinates =
    existing.topic === record.topic && existing.partition === record.partition && existing.offset === record.offset;
  return sameCoordinates ? 'redelivery' : 'republish';
}

/** Waits `ms`, heartbeating; false when the partition stopped being ours to work on meanwhile. */
export async function waitHeartbeating(ms: number, control: PartitionControl): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (!control.isActive()) return false;
    await control.heartbeat();
    const left = until - Date.now();
    if (left <= 0) return control.isActive();
    await new Promise((resolve) => setTimeout(resolve, Math.min(left, 250)));
  }
}

export function announce(
  pipeline: PipelineContext,
  where: MessageCoordinates,
  outcome: Outcome,
  durationMs: number,
  record: ConsumedRecord,
): void {
  const { logger, events } = pipeline;
  switch (outcome.kind) {
    case 'processed':
      if (logger.isLevelEnabled('debug')) {
        logger.debug({ ...where, outcome: 'processed', attempts: outcome.attempts }, 'processed');
      }
      events.emit('message:processed', () => ({
        ...where,
        attempts: outcome.attempts,
        durationMs,
        headers: record.headers,
      }));
      return;
    case 'skipped':
      if (logger.isLevelEnabled('debug')) logger.debug({ ...where, outcome: 'skipped' }, 'tombstone skipped');
      events.emit('message:skipped', () => ({
        ...where,
        reason: 'tombstone' as const,
        durationMs,
        headers: record.headers,
      }));
      return;
    case 'duplicate':
      if (logger.isLevelEnabled('debug')) {
        logger.debug({ ...where, outcome: 'duplicate', duplicateClass: outcome.duplicateClass }, 'duplicate skipped');
      }
      events.emit('message:duplicate', () => ({
        ...where,
        duplicateClass: outcome.duplicateClass,
        original: {
          topic: outcome.original.topic,
          partition: outcome.original.partition,
          offset: outcome.original.offset,
          processedAt: outcome.original.processedAt,
        },
        durationMs,
        headers: record.headers,
      }));
      return;
    case 'dead_lettered':
      logger.error(
        {
          ...where,
          outcome: 'dead_lettered',
          reason: outcome.reason,
          attempts: outcome.attempts,
          error: outcome.error,
          ...(pipeline.logPayloads ? { value: record.value?.toString('utf8') } : {}),
        },
        `dead-lettered (${outcome.reason})`,
      );
      events.emit('message:dead-lettered', () => ({
        ...where,
        reason: outcome.reason,
        error: outcome.error,
        attempts: outcome.attempts,
        durationMs,
        headers: record.headers,
      }));
      return;
    case 'paused':
      logger.error(
        { ...where, outcome: 'paused', attempts: outcome.attempts, error: outcome.error },
        'attempts exhausted; pausing the partition until resume()',
      );
      return;
    case 'abandoned':
      logger.info(
        { ...where, outcome: 'abandoned' },
        'stopped before an outcome was recorded; the message will be redelivered',
      );
      return;
  }
}
