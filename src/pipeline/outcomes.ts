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
import { ConnectionLostError, type OpenTransaction, type Transactions } from '../inbox/transaction.js';
import type { DeadLetterTopic } from '../kafka/dead-letter-topic.js';
import type { ConsumedRecord } from '../kafka/runner.js';
import { recordDeadLetter } from './dead-letter.js';
import { describeError, redactError } from './error-record.js';
import type { DuplicateClass, EventHub, MessageCoordinates } from './events.js';
import { backoffDelay, classifyFailure, type FailureKind, MAX_CONTENTION_RETRIES, type RetryPolicy } from './retry.js';

/** What the pipeline needs from the consumer around it. */
export interface PipelineContext {
  readonly groupId: string;
  /** The inbox (and dead letters) this consumer claims in: `inboxScope`, by default the group id. */
  readonly inboxScope: string;
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
  /** Partitions already warned about messages without an id of their own (`topic\u0000partition`). */
  readonly warnedCoordinateIds?: Set<string>;
  /** Cancels the statement a timed-out handler still runs, from another connection. */
  readonly cancelBackend?: ((backendPid: number) => Promise<void>) | undefined;
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
  /**
   * Not even a dead letter of the record could be stored (a database that refuses it): nothing
   * recorded; the partition must stop here with an alert rather than skip the record.
   */
  | {
      readonly kind: 'unrecordable';
      readonly messageId: string | null;
      readonly error: StoredError;
      readonly attempts: number;
    }
  /** The consumer stopped (or lost the partition) before an outcome was recorded: redelivered later. */
  | { readonly kind: 'abandoned' };

/** A failure of the user's handler (as opposed to one of oncely's own statements). */
export class HandlerFailure extends Error {
  constructor(readonly error: unknown) {
    super('the handler failed', { cause: error });
  }
}

/**
 * What made an attempt fail (unwrapped from {@link HandlerFailure} and {@link ConnectionLostError})
 * and how to treat it: any failure on a connection that died is the database's, not the message's.
 */
export function classifyAttemptFailure(failure: unknown): { readonly error: unknown; readonly kind: FailureKind } {
  const connectionLost = failure instanceof ConnectionLostError;
  const inner = connectionLost ? failure.cause : failure;
  const handlerFailure = inner instanceof HandlerFailure ? inner : undefined;
  const error = handlerFailure !== undefined ? handlerFailure.error : inner;
  const kind = classifyFailure({ error, inHandler: handlerFailure !== undefined, connectionLost });
  return { error, kind };
}

/**
 * Counts an attempt's failures by kind and says how long to wait before the next try, or that
 * the message's attempts are used up. Outages never use up attempts; contention does only past
 * {@link MAX_CONTENTION_RETRIES}, so a handler that deadlocks with itself still ends.
 */
export class FailureBudget {
  #outages = 0;
  #contention = 0;
  attempts = 0;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly attemptBudget: number = policy.attempts,
  ) {}

  /** `retry` with a delay (and whether an attempt was used), or `exhausted`. */
  next(
    kind: FailureKind,
  ): { readonly retry: true; readonly delayMs: number; readonly counted: boolean } | { readonly retry: false } {
    if (kind === 'transient') {
      this.#outages += 1;
      return { retry: true, delayMs: backoffDelay(this.policy, this.#outages), counted: false };
    }
    if (kind === 'contention' && this.#contention < MAX_CONTENTION_RETRIES) {
      this.#contention += 1;
      return { retry: true, delayMs: backoffDelay(this.policy, Math.min(this.#contention, 4)), counted: false };
    }
    this.attempts += 1;
    if (kind === 'non_retriable' || this.attempts >= this.attemptBudget) return { retry: false };
    return { retry: true, delayMs: backoffDelay(this.policy, this.attempts), counted: true };
  }
}

/**
 * Runs an oncely-only transaction (dead-lettering) until it commits. An outage is waited out for
 * as long as the partition is ours: giving up would lose the record's outcome. Any other failure
 * is retried per the policy, then `fallback` (a smaller record of the same outcome) is tried the
 * same way; if that cannot be stored either, the partition stops here with `unrecordable`, an
 * alert — never a skip, never an endless loop.
 */
export async function untilCommitted(
  pipeline: PipelineContext,
  control: PartitionControl,
  where: MessageCoordinates,
  work: (t: OpenTransaction) => Promise<Outcome>,
  fallback?: (t: OpenTransaction) => Promise<Outcome>,
): Promise<Outcome> {
  let budget = new FailureBudget(pipeline.retry);
  for (;;) {
    let failure: unknown;
    try {
      return await control.transactions.run(work);
    } catch (caught) {
      failure = caught;
    }
    const { error, kind } = classifyAttemptFailure(failure);
    const next = budget.next(kind);
    if (!next.retry) {
      if (fallback !== undefined) {
        pipeline.logger.error(
          { ...locate(where), err: redactError(error) },
          'the outcome could not be stored as it is; storing it without headers and with a shortened error',
        );
        work = fallback;
        fallback = undefined;
        budget = new FailureBudget(pipeline.retry);
        continue;
      }
      const stored = describeError(error);
      pipeline.logger.error(
        { ...locate(where), err: redactError(error) },
        'the outcome of this message cannot be stored; stopping the partition here instead of skipping it',
      );
      return { kind: 'unrecordable', messageId: where.messageId, error: stored, attempts: budget.attempts };
    }
    pipeline.logger.warn(
      { ...locate(where), err: redactError(error), delayMs: next.delayMs },
      'could not record the outcome; retrying',
    );
    if (!(await waitHeartbeating(next.delayMs, control))) return { kind: 'abandoned' };
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
  const stored = await recordDeadLetter(pipeline, t, { record, messageId, reason: 'key_reuse', error, attempts: 0 });
  return stored
    ? { kind: 'dead_lettered', reason: 'key_reuse', error, attempts: 0 }
    : deadLetteredBefore(record, payloadHash);
}

/**
 * The record's own dead letter was stored before (it was replayed or redelivered): the outcome is
 * already recorded, so this is a duplicate of it — a redelivery — and not a second alert.
 */
export function deadLetteredBefore(record: ConsumedRecord, payloadHash: Buffer): Outcome {
  const { topic, partition, offset } = record;
  return {
    kind: 'duplicate',
    duplicateClass: 'redelivery',
    original: { topic, partition, offset, payloadHash, status: 'dead_lettered', processedAt: null },
  };
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

/** A record's place, for log lines: the logger already carries the group id. */
export function locate(where: MessageCoordinates): Omit<MessageCoordinates, 'groupId'> {
  return { topic: where.topic, partition: where.partition, offset: where.offset, messageId: where.messageId };
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
        logger.debug({ ...locate(where), outcome: 'processed', attempts: outcome.attempts }, 'processed');
      }
      events.emit('message:processed', () => ({
        ...where,
        attempts: outcome.attempts,
        durationMs,
        headers: record.headers,
      }));
      return;
    case 'skipped':
      if (logger.isLevelEnabled('debug')) logger.debug({ ...locate(where), outcome: 'skipped' }, 'tombstone skipped');
      events.emit('message:skipped', () => ({
        ...where,
        reason: 'tombstone' as const,
        durationMs,
        headers: record.headers,
      }));
      return;
    case 'duplicate':
      if (logger.isLevelEnabled('debug')) {
        logger.debug(
          { ...locate(where), outcome: 'duplicate', duplicateClass: outcome.duplicateClass },
          'duplicate skipped',
        );
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
    case 'dead_lettered': {
      // Bad input (and a handler's NonRetriableError) is expected in a payments stream: one concise
      // warn line, the stack only at debug. A handler that failed until its attempts ran out is not:
      // logged as an error with everything stored.
      const { stack, issues, ...brief } = outcome.error;
      const expected = outcome.reason !== 'handler_failed' || outcome.error.code === 'ONCELY_NON_RETRIABLE';
      const fields = {
        ...locate(where),
        outcome: 'dead_lettered',
        reason: outcome.reason,
        attempts: outcome.attempts,
        error: expected ? brief : outcome.error,
        ...(pipeline.logPayloads ? { value: record.value?.toString('utf8') } : {}),
      };
      const line = `dead-lettered (${outcome.reason}): ${outcome.error.message}`;
      if (!expected) logger.error(fields, line);
      else {
        logger.warn(fields, line);
        if (logger.isLevelEnabled('debug')) logger.debug({ ...locate(where), stack, issues }, 'dead letter details');
      }
      events.emit('message:dead-lettered', () => ({
        ...where,
        reason: outcome.reason,
        error: outcome.error,
        attempts: outcome.attempts,
        durationMs,
        headers: record.headers,
      }));
      return;
    }
    case 'paused':
      logger.error(
        { ...locate(where), outcome: 'paused', attempts: outcome.attempts, error: outcome.error },
        'attempts exhausted; pausing the partition until resume()',
      );
      return;
    case 'unrecordable':
      return; // logged where it was decided, with the database's error
    case 'abandoned':
      logger.info(
        { ...locate(where), outcome: 'abandoned' },
        'stopped before an outcome was recorded; the message will be redelivered',
      );
      return;
  }
}
