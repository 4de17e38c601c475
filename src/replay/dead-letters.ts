import { pino, type Logger } from 'pino';

import { configError, OncelyError } from '../errors.js';
import { createTransactionBinder, type DatabaseInput, type OncelyDatabase, resolvePool } from '../inbox/database.js';
import {
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterSummary,
  lockInboxStatus,
  markInboxProcessed,
  recordRetryFailure,
  resolveDeadLetter,
  selectDeadLetter,
  selectDeadLetters,
} from '../inbox/dead-letter-store.js';
import type { StoredError } from '../inbox/dead-letters.js';
import { inTransaction, type OpenTransaction } from '../inbox/transaction.js';
import type { ConsumedRecord } from '../kafka/runner.js';
import { decodeHeaders } from '../inbox/headers.js';
import { decode, toMessageInfo } from '../pipeline/record/decode.js';
import { describeError } from '../pipeline/record/error-record.js';
import { type AnyHandlerDefinition, isHandlerDefinition } from '../pipeline/handler.js';
import { applyOne, type AttemptLease, MessageContext, runBounded } from '../pipeline/record/run-handler.js';
import { singleAttemptSteps } from '../pipeline/record/steps.js';

export type { DeadLetter, DeadLetterFilter, DeadLetterSummary };

/** Dead letters matching `filter` (default: the open ones, up to 100), oldest first. */
export async function listDeadLetters(db: DatabaseInput, filter: DeadLetterFilter = {}): Promise<DeadLetterSummary[]> {
  return withPool(db, (pool) => selectDeadLetters(pool, filter));
}

/** One dead letter in full, or undefined. */
export async function getDeadLetter(db: DatabaseInput, id: string | number | bigint): Promise<DeadLetter | undefined> {
  return withPool(db, (pool) => selectDeadLetter(pool, String(id)));
}

export interface ResolveResult {
  readonly id: string;
  /** `discarded` / `processed` when this call resolved it; the other values when it did nothing. */
  readonly outcome:
    'discarded' | 'processed' | 'already_processed' | 'not_open' | 'not_found' | 'not_retriable' | 'failed';
  /** What happened, in a sentence. */
  readonly message: string;
  /** The handler's error, when a retry failed. */
  readonly error?: StoredError;
}

/** Marks an open dead letter discarded, keeping why. Nothing is deleted. */
export async function discardDeadLetter(
  db: DatabaseInput,
  id: string | number | bigint,
  reason: string,
): Promise<ResolveResult> {
  if (reason.trim() === '') throw configError('reason', 'say why the dead letter is discarded (it is kept with it)');
  const key = String(id);
  return withPool(db, async (pool) => {
    const letter = await selectDeadLetter(pool, key);
    if (letter === undefined) return { id: key, outcome: 'not_found', message: `Dead letter ${key} does not exist.` };
    if (!(await resolveDeadLetter(pool, key, 'discarded', `discarded: ${reason}`))) {
      return {
        id: key,
        outcome: 'not_open',
        message: `Dead letter ${key} is ${letter.status}, not open; nothing changed.`,
      };
    }
    return { id: key, outcome: 'discarded', message: `Dead letter ${key} discarded: ${reason}` };
  });
}

export interface RetryOptions {
  /** The consumer's drizzle database (its schema types ctx.tx as usual). */
  readonly db: OncelyDatabase;
  /** The handlers of the consumer group; the one for the dead letter's topic runs. */
  readonly handlers: readonly AnyHandlerDefinition[];
  /** Default 30 s, as for the consumer. 0 disables it. */
  readonly handlerTimeoutMs?: number;
  readonly logger?: Logger;
}

/**
 * Re-runs the handler for a stored dead letter in a fresh transaction: on success the handler's
 * writes, the inbox row (`dead_lettered` → `processed`) and the dead letter (`open` → `retried`)
 * commit together; on failure nothing changes but the dead letter's attempt count and error.
 * A dead letter whose message has already been processed is left alone, and the result says so.
 * Key reuse and invalid ids cannot be retried under their id: discard them (and re-publish a
 * corrected event with an id of its own).
 */
export async function retryDeadLetter(options: RetryOptions, id: string | number | bigint): Promise<ResolveResult> {
  const handlers = handlersByTopic(options.handlers);
  const { pool } = resolvePool(options.db);
  const timeoutMs = options.handlerTimeoutMs ?? 30_000;
  const retry: DeadLetterRetry = {
    key: String(id),
    handlers,
    pool,
    logger: options.logger ?? pino({ name: 'oncely', level: process.env.ONCELY_LOG_LEVEL ?? 'info' }),
    timeoutMs,
    failure: undefined,
  };
  return inTransaction(
    pool,
    createTransactionBinder(options.db),
    (t) => retryInTransaction(t, retry),
    timeoutMs > 0 ? { statementTimeoutMs: timeoutMs } : {},
  ).catch(async (error: unknown): Promise<ResolveResult> => {
    if (retry.failure === undefined) throw error;
    // The handler (or the still-invalid payload) failed: its writes rolled back. Keep the latest error.
    const stored = describeError(retry.failure.error);
    await recordRetryFailure(pool, retry.key, stored);
    return {
      id: retry.key,
      outcome: 'failed',
      message: `Retrying dead letter ${retry.key} failed: ${stored.message}`,
      error: stored,
    };
  });
}

/** One retry of one dead letter. */
interface DeadLetterRetry {
  /** The dead letter's id. */
  readonly key: string;
  readonly handlers: ReadonlyMap<string, AnyHandlerDefinition>;
  readonly pool: ReturnType<typeof resolvePool>['pool'];
  readonly logger: Logger;
  readonly timeoutMs: number;
  /** Set when the handler or the payload failed (recorded on the dead letter), not the retry itself. */
  failure: { error: unknown } | undefined;
}

/** The retry's transaction: checks the dead letter and its inbox row, then runs the handler. */
async function retryInTransaction(t: OpenTransaction, retry: DeadLetterRetry): Promise<ResolveResult> {
  const { key } = retry;
  // The row lock makes concurrent retries of one dead letter take turns: the second finds it retried.
  const letter = await selectDeadLetter(t.client, key, { lock: true });
  if (letter === undefined) return { id: key, outcome: 'not_found', message: `Dead letter ${key} does not exist.` };
  const checked = retriableId(letter, key);
  if ('refused' in checked) return checked.refused;
  const { messageId } = checked;
  const inbox = await lockInboxStatus(t.client, letter.groupId, messageId);
  if (inbox === undefined) {
    // Applying it now would leave its id unrecorded, so a redelivery could apply it again.
    return {
      id: key,
      outcome: 'not_retriable',
      message: `Message ${messageId} has no inbox row (purged by retention?); retrying it could apply it twice. Discard it instead.`,
    };
  }
  if (inbox.status === 'processed') {
    await resolveDeadLetter(t.client, key, 'retried', 'the message was already processed');
    return {
      id: key,
      outcome: 'already_processed',
      message: `Message ${messageId} was already processed; dead letter ${key} closed without running the handler again.`,
    };
  }
  const handler = retry.handlers.get(letter.topic);
  if (handler === undefined) {
    throw configError(
      'handlers',
      `no handler for topic "${letter.topic}" among the handlers given; pass the consumer's handlers`,
    );
  }
  const attempt = letter.attempts + 1;
  const apply = await handlerCall(t, retry, { letter, messageId, handler, attempt });
  await markInboxProcessed(t.client, letter.groupId, messageId, attempt);
  if (apply !== undefined) {
    try {
      await runBounded({ transaction: t, timeoutMs: retry.timeoutMs, messageId }, apply);
    } catch (error) {
      retry.failure = { error };
      throw error;
    }
  }
  await resolveDeadLetter(t.client, key, 'retried', `retried successfully on attempt ${attempt}`);
  return {
    id: key,
    outcome: 'processed',
    message: `Dead letter ${key} retried: message ${messageId} processed on attempt ${attempt}.`,
  };
}

/** The id a dead letter is retried under, or why it cannot be (already retried, discarded, no id of its own). */
function retriableId(
  letter: DeadLetter,
  key: string,
): { readonly messageId: string } | { readonly refused: ResolveResult } {
  if (letter.status === 'retried') {
    return {
      refused: {
        id: key,
        outcome: 'already_processed',
        message: `Dead letter ${key} was already retried successfully; nothing to do.`,
      },
    };
  }
  if (letter.status === 'discarded') {
    return {
      refused: { id: key, outcome: 'not_open', message: `Dead letter ${key} was discarded; nothing to retry.` },
    };
  }
  if (letter.reason === 'key_reuse' || letter.messageId === null) {
    return {
      refused: {
        id: key,
        outcome: 'not_retriable',
        message:
          letter.reason === 'key_reuse'
            ? `Dead letter ${key} reuses the id of another message, which was processed; it cannot be applied under that id. Discard it, and re-publish the event with an id of its own if it is real.`
            : `Dead letter ${key} has no valid message id to record it under. Discard it, and re-publish it with a valid id.`,
      },
    };
  }
  return { messageId: letter.messageId };
}

/**
 * The handler's call for the dead letter's record, as the consumer would make it: the tombstone
 * handler for a tombstone (undefined for `'skip'`: recorded, not applied), else the decoded event's
 * handler. A payload that still does not decode fails the retry (recorded on the dead letter).
 */
async function handlerCall(
  t: OpenTransaction,
  retry: DeadLetterRetry,
  {
    letter,
    messageId,
    handler,
    attempt,
  }: { letter: DeadLetter; messageId: string; handler: AnyHandlerDefinition; attempt: number },
): Promise<((lease: AttemptLease) => Promise<void> | void) | undefined> {
  const { pool, logger } = retry;
  const record = toRecord(letter);
  const info = toMessageInfo(record);
  if (record.value === null && handler.tombstone !== undefined && handler.tombstone !== 'dead-letter') {
    const tombstone = handler.tombstone;
    if (typeof tombstone !== 'function') return undefined; // 'skip': recorded, not applied
    return (lease) =>
      tombstone(
        new MessageContext(
          t,
          info,
          letter.groupId,
          messageId,
          attempt,
          logger,
          lease,
          singleAttemptSteps(pool, letter.groupId, messageId, lease.signal).step,
        ),
      );
  }
  const decoded = await decode(handler, info);
  if (!decoded.ok) {
    retry.failure = { error: decoded.error };
    throw decoded.error;
  }
  return async (lease) => {
    const steps = singleAttemptSteps(pool, letter.groupId, messageId, lease.signal);
    await applyOne(handler, decoded.event, t, info, letter.groupId, messageId, attempt, logger, lease, steps.step);
    steps.finish();
  };
}

/** Retries every dead letter matching `filter` (default: all open ones), one by one, oldest first. */
export async function retryDeadLetters(options: RetryOptions, filter: DeadLetterFilter = {}): Promise<ResolveResult[]> {
  const letters = await listDeadLetters(options.db, { ...filter, status: 'open', limit: filter.limit ?? 10_000 });
  const results: ResolveResult[] = [];
  for (const letter of letters) results.push(await retryDeadLetter(options, letter.id));
  return results;
}

function handlersByTopic(handlers: readonly unknown[]): Map<string, AnyHandlerDefinition> {
  const byTopic = new Map<string, AnyHandlerDefinition>();
  for (const handler of handlers) {
    if (!isHandlerDefinition(handler)) throw configError('handlers', 'each handler must be made with defineHandler()');
    byTopic.set(handler.topic, handler);
  }
  return byTopic;
}

function toRecord(letter: DeadLetter): ConsumedRecord {
  return {
    topic: letter.topic,
    partition: letter.partition,
    offset: letter.offset,
    key: letter.key,
    value: letter.value,
    headers: decodeHeaders(letter.headers),
    timestamp: String((letter.recordTimestamp ?? letter.createdAt).getTime()),
  };
}

async function withPool<T>(
  db: DatabaseInput,
  work: (pool: ReturnType<typeof resolvePool>['pool']) => Promise<T>,
): Promise<T> {
  const { pool, owned } = resolvePool(db);
  try {
    return await work(pool);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === '42P01' || code === '3F000' || code === '42703') {
      throw new OncelyError(
        'ONCELY_NOT_MIGRATED',
        'The oncely schema is missing or out of date: run `oncely migrate`.',
        {
          cause: error,
        },
      );
    }
    throw error;
  } finally {
    if (owned) await pool.end();
  }
}
