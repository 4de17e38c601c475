import type { Logger } from 'pino';
import type { z } from 'zod';

import { configError } from '../errors.js';
import type { OncelyTransaction } from '../inbox/database.js';
import type { RecordHeaders } from '../kafka/message-identity.js';
import type { StepCallContext, StepFunction, StepOptions } from '../steps/runner.js';
import type { OutboxMessage, PublishedEvent } from '../outbox/publish.js';

/** The consumed record, as a handler sees it (`ctx.message`). */
export interface MessageInfo {
  readonly topic: string;
  readonly partition: number;
  /** Kafka offsets are 64-bit: a decimal string, compare with BigInt. */
  readonly offset: string;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  /** Raw header values (bytes), exactly as produced. */
  readonly headers: RecordHeaders;
  readonly timestamp: Date;
}

/**
 * The second argument of `handle(event, ctx)`. It belongs to one attempt: once the attempt has
 * ended (returned, thrown or timed out), `tx`, `step` and `publish` refuse every use with
 * `ONCELY_ATTEMPT_ENDED`.
 */
export interface HandlerContext {
  /**
   * The message's database transaction. Every write the handler makes through it commits
   * together with the inbox row, or not at all. Await every query; do not keep it after `handle`.
   * Transaction control (`COMMIT`, `ROLLBACK`, `BEGIN`) is refused with `ONCELY_TX_CONTROL` and
   * dead-letters the message: throw to roll back, or use `tx.transaction()` for a savepoint.
   */
  readonly tx: OncelyTransaction;
  readonly message: MessageInfo;
  /** The id the message was deduplicated by (docs/guarantees.md, "Message identity"). */
  readonly messageId: string;
  /** A pino logger carrying group, topic, partition, offset and messageId. */
  readonly log: Logger;
  /** 1 on the first attempt, 2 on the first retry, … */
  readonly attempt: number;
  /**
   * Aborts when the attempt runs past `handlerTimeoutMs`. Pass it to slow calls (`fetch(url, {
   * signal: ctx.signal })`) so they stop with the attempt.
   */
  readonly signal: AbortSignal;
  /**
   * Runs an external call (a charge, a payout) at most once per message: `ctx.step(name, fn, {
   * compensate? })`. A completed step's result is recorded at once and returned on every later
   * attempt without calling `fn` again; `fn({ idempotencyKey, signal })` gets a key that is the same on
   * every attempt (`<group>:<messageId>:<name>`): pass it to the provider. Names are unique per
   * attempt. When the message is finally dead-lettered, `compensate` runs (docs/steps.md).
   */
  readonly step: StepFunction;
  /**
   * Publishes an event through the outbox, in this message's transaction: it is sent to Kafka (by
   * a relay) only if the transaction commits. Its `message-id` is `<messageId>:<n>` (n counts this
   * attempt's publishes from 0), the same on every retry, so a downstream oncely consumer dedupes
   * re-sends; `causation-id` is this message's id and `traceparent` is copied when present.
   */
  readonly publish: (message: OutboxMessage) => Promise<PublishedEvent>;
}

/**
 * `ctx.step(event, name, fn, { compensate? })` in batch handlers: a step of one event's message,
 * with the same guarantees as {@link HandlerContext.step}; names are unique per event and attempt.
 */
export type BatchStepFunction = <T>(
  event: { readonly messageId: string },
  name: string,
  fn: (ctx: StepCallContext) => Promise<T> | T,
  options?: StepOptions<T>,
) => Promise<T>;

/** Turns the raw value into the event the schema validates (or a promise of it). Default: strict UTF-8 JSON. */
export type Decoder = (value: Buffer | null, message: MessageInfo) => unknown;

export interface HandlerOptions<TEvent> {
  /** The topic this handler consumes. One handler per topic. */
  readonly topic: string;
  /**
   * Validates the decoded value. A message that fails it is dead-lettered with reason
   * `invalid_payload`, without retries. Without a schema the handler receives `unknown`.
   */
  readonly schema?: z.ZodType<TEvent>;
  /**
   * Replaces the default JSON decoder. May be async; a decoder that throws or rejects dead-letters
   * the message with `invalid_payload`.
   */
  readonly decode?: Decoder;
  /**
   * The message's id, taken from the event. Return `undefined` to fall back to the `message-id`
   * header, then `idempotency-key`, then the Kafka coordinates. Changing what this returns for
   * events already processed makes them look new: treat it as frozen once in production. May be
   * async; one that throws or rejects dead-letters the message with reason `invalid_message_id`.
   */
  readonly messageId?: (
    event: TEvent,
    message: MessageInfo,
  ) => string | undefined | null | Promise<string | undefined | null>;
  /** Applies the event. Throw to roll back and retry; throw `NonRetriableError` to dead-letter now. */
  readonly handle: (event: TEvent, ctx: HandlerContext) => Promise<void> | void;
  /**
   * What a record without a value (a tombstone, as on compacted topics) gets:
   * - `'dead-letter'` (default): dead-lettered with reason `invalid_payload`, nothing silently dropped;
   * - `'skip'`: its outcome is recorded (inbox row with attempts 0) and the handler is not run;
   * - a function: run instead of `handle`, in the same transaction and with the same retries.
   */
  readonly tombstone?: 'dead-letter' | 'skip' | ((ctx: HandlerContext) => Promise<void> | void);
}

const handlerBrand: unique symbol = Symbol.for('oncely.handler');

export interface HandlerDefinition<TEvent = unknown> extends HandlerOptions<TEvent> {
  readonly kind: 'message';
  readonly [handlerBrand]: true;
}

/** One freshly claimed message of a chunk, as `handleBatch` receives it. */
export interface BatchEvent<TEvent> {
  readonly event: TEvent;
  readonly messageId: string;
  readonly message: MessageInfo;
}

/** The second argument of `handleBatch(events, ctx)`. */
export interface BatchContext {
  /** The chunk's transaction: the handler's writes commit with the inbox rows of the whole chunk. */
  readonly tx: OncelyTransaction;
  readonly topic: string;
  readonly partition: number;
  /** 1 on the first attempt of this chunk, 2 on its first retry, … */
  readonly attempt: number;
  /** Aborts when the attempt runs past `handlerTimeoutMs`. */
  readonly signal: AbortSignal;
  /** A pino logger carrying group, topic and partition. */
  readonly log: Logger;
  /** A step of one event's message: `ctx.step(event, name, fn, { compensate? })` (see {@link BatchStepFunction}). */
  readonly step: BatchStepFunction;
  /**
   * Publishes an event through the outbox, in the chunk's transaction, for one event of the batch:
   * `ctx.publish(message, { causedBy: events[i] })`. Its `message-id` is `<that event's
   * messageId>:<n>` (n counts publishes for that event from 0), so the ids do not depend on how
   * the chunk was split or retried; `causation-id` and `traceparent` come from that event.
   */
  publish(message: OutboxMessage, options: { readonly causedBy: BatchEvent<unknown> }): Promise<PublishedEvent>;
}

export interface BatchHandlerOptions<TEvent> extends Pick<
  HandlerOptions<TEvent>,
  'topic' | 'schema' | 'decode' | 'messageId'
> {
  /**
   * Applies a chunk of one partition's messages, in offset order, in one transaction. It receives
   * only messages claimed in this transaction: duplicates and invalid messages are already
   * recorded and left out. Throw to roll the whole chunk back; a chunk that keeps failing is split
   * until the failing message is alone, so the others still commit once.
   */
  readonly handleBatch: (events: readonly BatchEvent<TEvent>[], ctx: BatchContext) => Promise<void> | void;
  /** Records without a value: `'dead-letter'` (default) or `'skip'` (recorded, not passed on). */
  readonly tombstone?: 'dead-letter' | 'skip';
}

export interface BatchHandlerDefinition<TEvent = unknown> extends BatchHandlerOptions<TEvent> {
  readonly kind: 'batch';
  readonly [handlerBrand]: true;
}

/** Either kind of handler definition. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyHandlerDefinition = HandlerDefinition<any> | BatchHandlerDefinition<any>;

/**
 * Declares how one topic's messages are applied. The event type is inferred from `schema`.
 *
 * ```ts
 * const captured = defineHandler({
 *   topic: 'payments',
 *   schema: z.object({ paymentId: z.string(), amountCents: z.number().int() }),
 *   async handle(event, ctx) {
 *     await ctx.tx.insert(ledger).values({ paymentId: event.paymentId, amountCents: event.amountCents });
 *   },
 * });
 * ```
 */
export function defineHandler<TEvent = unknown>(options: HandlerOptions<TEvent>): HandlerDefinition<TEvent> {
  assertHandlerOptions(options);
  return Object.freeze({ ...options, kind: 'message' as const, [handlerBrand]: true as const });
}

/**
 * Declares how one topic's messages are applied in chunks (consumer `mode: 'batch'`): one
 * transaction and one claim statement per chunk of a partition.
 *
 * ```ts
 * const ledger = defineBatchHandler({
 *   topic: 'payments',
 *   schema: paymentEvent,
 *   async handleBatch(events, ctx) {
 *     await ctx.tx.insert(ledgerEntries).values(events.map(({ event, messageId }) => ({ messageId, ...event })));
 *   },
 * });
 * ```
 */
export function defineBatchHandler<TEvent = unknown>(
  options: BatchHandlerOptions<TEvent>,
): BatchHandlerDefinition<TEvent> {
  assertHandlerOptions(options, 'defineBatchHandler', 'handleBatch');
  return Object.freeze({ ...options, kind: 'batch' as const, [handlerBrand]: true as const });
}

/** Checks what TypeScript cannot check for JavaScript callers, with the fix in the message. */
function assertHandlerOptions<TEvent>(
  options: HandlerOptions<TEvent> | BatchHandlerOptions<TEvent>,
  define: 'defineHandler' | 'defineBatchHandler' = 'defineHandler',
  apply: 'handle' | 'handleBatch' = 'handle',
): void {
  const fail = (option: string, message: string): never => {
    throw configError(`${define}.${option}`, message);
  };
  if (typeof options !== 'object' || options === null) fail('(options)', `pass { topic, ${apply} }`);
  if (typeof options.topic !== 'string' || options.topic.length === 0) {
    fail('topic', 'give the topic name as a non-empty string');
  }
  if (typeof (options as unknown as Record<string, unknown>)[apply] !== 'function') {
    fail(apply, `give a function (${apply === 'handle' ? 'event' : 'events'}, ctx) => Promise<void>`);
  }
  if (options.schema !== undefined && typeof (options.schema as { safeParse?: unknown }).safeParse !== 'function') {
    fail('schema', 'give a zod schema, e.g. z.object({ … })');
  }
  for (const name of ['decode', 'messageId'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'function') {
      fail(name, 'give a function or leave it out');
    }
  }
  const tombstone = options.tombstone;
  const functionAllowed = apply === 'handle';
  if (
    tombstone !== undefined &&
    tombstone !== 'dead-letter' &&
    tombstone !== 'skip' &&
    !(functionAllowed && typeof tombstone === 'function')
  ) {
    fail(
      'tombstone',
      functionAllowed
        ? "use 'dead-letter', 'skip' or a function (ctx) => Promise<void>"
        : "use 'dead-letter' or 'skip'",
    );
  }
}

export function isHandlerDefinition(value: unknown): value is AnyHandlerDefinition {
  return typeof value === 'object' && value !== null && (value as { [handlerBrand]?: unknown })[handlerBrand] === true;
}
