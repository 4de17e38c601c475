import { type SQL, sql } from 'drizzle-orm';

import { OncelyError } from '../errors.js';
import { MAX_MESSAGE_ID_LENGTH, MESSAGE_ID_HEADER } from '../kafka/message-identity.js';
import { activeTraceHeaders } from '../tracing/trace-context.js';
import { encodeHeaders, type HeaderValue } from '../inbox/headers.js';
import { uuidv7 } from './message-id.js';
import { insertOutboxRow, type OutboxInsert, type Queryable } from './store.js';

/** Header naming the inbound message an event was published for. */
export const CAUSATION_ID_HEADER = 'causation-id';
/** W3C trace context header: the active span's, or the inbound record's, on the events it causes. */
export const TRACEPARENT_HEADER = 'traceparent';
/** W3C trace state, sent with a `traceparent` taken from the active span when that span has one. */
export const TRACESTATE_HEADER = 'tracestate';

/** An event to publish through the outbox. */
export interface OutboxMessage {
  /** The Kafka topic. It must exist when the relay sends the event (see the relay's `maxAttempts`). */
  readonly topic: string;
  /** The record key: events with one key are sent in the order they were published. Default none. */
  readonly key?: string | Buffer | null;
  /**
   * The record value. A `Buffer` (or `Uint8Array`) is sent as is; `null` sends a tombstone;
   * anything else is JSON-encoded (UTF-8).
   */
  readonly value: unknown;
  /** Extra record headers. `message-id`, `causation-id` and `traceparent` are set by oncely. */
  readonly headers?: Readonly<Record<string, HeaderValue | undefined>>;
  /** A fixed partition. Default: the producer's partitioner (by key). */
  readonly partition?: number;
}

/** Options of `publish(tx, message, options)`. */
export interface PublishOptions {
  /**
   * The event's `message-id`, fixed now and carried by every re-send. Default: a UUIDv7. Pass a
   * deterministic id (e.g. `<idempotency key>:<n>`) when the same logical event may be published
   * by a retried request, so the downstream consumer dedupes it.
   */
  readonly messageId?: string;
  /** The id of what caused this event (an inbound message, a request); sent as `causation-id`. Default none. */
  readonly causationId?: string;
  /**
   * W3C `traceparent` to send with the event. Default: the active OpenTelemetry span's context
   * (with its `tracestate`), when `@opentelemetry/api` is installed and a span is active; none
   * otherwise.
   */
  readonly traceparent?: string;
  /** W3C `tracestate` sent with `traceparent`. Default: the active span's, when it gave the traceparent. */
  readonly tracestate?: string;
}

/** What `publish` recorded. */
export interface PublishedEvent {
  /** The `message-id` the event will carry. */
  readonly messageId: string;
  /** The outbox row's id (insertion order). */
  readonly outboxId: bigint;
}

/** A drizzle node-postgres transaction (any schema), or a `pg` client inside a transaction. */
export type PublishTarget = { execute(query: SQL): Promise<unknown> } | Queryable;

/**
 * Writes an event to `oncely.outbox` in the caller's transaction; a relay sends it to Kafka after
 * that transaction commits. The event exists if and only if the transaction commits: publish
 * inside the same transaction as the effects it reports.
 *
 * ```ts
 * await db.transaction(async (tx) => {
 *   await tx.insert(payouts).values(payout);
 *   await publish(tx, { topic: 'payouts', key: payout.accountId, value: { payoutId: payout.id } });
 * });
 * ```
 * Inside a consumer's handler use `ctx.publish(...)`, which derives the id from the inbound message.
 */
export async function publish(
  tx: PublishTarget,
  message: OutboxMessage,
  options: PublishOptions = {},
): Promise<PublishedEvent> {
  const row = outboxRow(message, options);
  if (typeof (tx as { execute?: unknown }).execute === 'function') {
    const [messageId, topic, partition, key, value, headers, causationId] = [
      row.messageId,
      row.topic,
      row.partition ?? null,
      row.key,
      row.value,
      JSON.stringify(row.headers),
      row.causationId,
    ];
    const result = (await (tx as { execute(query: SQL): Promise<unknown> }).execute(
      sql`INSERT INTO oncely.outbox (message_id, topic, partition, key, value, headers, causation_id)
          VALUES (${messageId}, ${topic}, ${partition}, ${key}, ${value}, ${headers}::jsonb, ${causationId})
          RETURNING id`,
    )) as { rows?: { id: string }[] };
    return { messageId: row.messageId, outboxId: BigInt(result.rows?.[0]?.id ?? '0') };
  }
  if (typeof (tx as { query?: unknown }).query === 'function') {
    return { messageId: row.messageId, outboxId: await insertOutboxRow(tx as Queryable, row) };
  }
  throw invalid('the first argument must be a drizzle transaction or a pg client inside a transaction');
}

/** Validates and encodes an event into its outbox row. */
export function outboxRow(message: OutboxMessage, options: PublishOptions = {}): OutboxInsert {
  if (typeof message !== 'object' || message === null) throw invalid('pass { topic, value }');
  const { topic, key, value, headers = {}, partition } = message;
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > 249) {
    throw invalid('`topic` must be a Kafka topic name (1 to 249 characters)');
  }
  if (partition !== undefined && (!Number.isInteger(partition) || partition < 0)) {
    throw invalid('`partition` must be a whole number ≥ 0, or left out');
  }
  const messageId = options.messageId ?? uuidv7();
  // Counted in code points, as inbound message ids are (derived ids are bounded the same way).
  if (
    typeof messageId !== 'string' ||
    messageId.length === 0 ||
    (messageId.length > MAX_MESSAGE_ID_LENGTH && [...messageId].length > MAX_MESSAGE_ID_LENGTH)
  ) {
    throw invalid(`\`messageId\` must be 1 to ${MAX_MESSAGE_ID_LENGTH} characters`);
  }
  for (const name of [MESSAGE_ID_HEADER, CAUSATION_ID_HEADER, TRACEPARENT_HEADER]) {
    if (Object.keys(headers).some((h) => h.toLowerCase() === name)) {
      throw invalid(
        `do not set the \`${name}\` header yourself: oncely sets it (pass options.messageId, causationId or traceparent instead)`,
      );
    }
  }
  const own: Record<string, string> = { [MESSAGE_ID_HEADER]: messageId };
  if (options.causationId !== undefined) own[CAUSATION_ID_HEADER] = options.causationId;
  // Published inside a span (an HTTP request's, a job's): the downstream consumer's span becomes
  // its child. The caller's own traceparent wins.
  const trace =
    options.traceparent === undefined
      ? activeTraceHeaders()
      : { traceparent: options.traceparent, tracestate: options.tracestate };
  if (trace !== undefined) {
    own[TRACEPARENT_HEADER] = trace.traceparent;
    const userTracestate = Object.keys(headers).some((h) => h.toLowerCase() === TRACESTATE_HEADER);
    if (trace.tracestate !== undefined && !userTracestate) own[TRACESTATE_HEADER] = trace.tracestate;
  }
  return {
    messageId,
    topic,
    partition,
    key: key === undefined || key === null ? null : typeof key === 'string' ? Buffer.from(key, 'utf8') : key,
    value: encodeValue(value, topic),
    headers: encodeHeaders({ ...headers, ...own }),
    causationId: options.causationId ?? null,
  };
}

function encodeValue(value: unknown, topic: string): Buffer | null {
  if (value === null) return null;
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    throw invalid(`the value for topic "${topic}" cannot be JSON-encoded (${(error as Error).message})`, error);
  }
  if (text === undefined)
    throw invalid(`the value for topic "${topic}" is undefined or a function; pass null for a tombstone`);
  return Buffer.from(text, 'utf8');
}

function invalid(message: string, cause?: unknown): OncelyError {
  return new OncelyError('ONCELY_INVALID_EVENT', `Cannot publish the event: ${message}.`, { cause });
}
