import { isUtf8 } from 'node:buffer';

import { OncelyError } from '../../errors.js';
import type { ConsumedRecord } from '../../kafka/runner.js';
import type { AnyHandlerDefinition, MessageInfo } from '../handler.js';
import { parsesSynchronously } from './sync-schema.js';

export type Decoded = { readonly ok: true; readonly event: unknown } | { readonly ok: false; readonly error: unknown };

/** The record as a handler sees it (`ctx.message`). */
export function toMessageInfo(record: ConsumedRecord): MessageInfo {
  return {
    topic: record.topic,
    partition: record.partition,
    offset: record.offset,
    key: record.key,
    value: record.value,
    headers: record.headers,
    timestamp: new Date(Number(record.timestamp)),
  };
}

/**
 * Decodes (the handler's decoder, or strict UTF-8 JSON) and validates with the handler's schema.
 * Async on purpose: a decoder may return a promise and a schema may hold async refinements or
 * transforms. Every one of them is awaited here, so a rejection becomes this message's verdict —
 * never an unhandled rejection that ends the process (and ends it again on every restart).
 */
export async function decode(
  handler: Pick<AnyHandlerDefinition, 'decode' | 'schema'>,
  info: MessageInfo,
): Promise<Decoded> {
  let value: unknown;
  try {
    value = handler.decode !== undefined ? await handler.decode(info.value, info) : decodeJson(info.value);
  } catch (error) {
    // A decoder that throws (or rejects) has judged the bytes: deterministic, never retried.
    return {
      ok: false,
      error:
        error instanceof Error
          ? error
          : new OncelyError('ONCELY_INVALID_PAYLOAD', 'The decoder threw a non-error value.', { cause: error }),
    };
  }
  const schema = handler.schema;
  if (schema === undefined) return { ok: true, event: value };
  try {
    // safeParseAsync unless the schema is only zod's own steps (sync-schema.ts): a synchronous parse
    // of a schema with an async refine drops the refine's promise (zod throws "use parseAsync"
    // instead), and that promise's rejection would then go unhandled.
    const parsed =
      typeof schema.safeParseAsync === 'function' && !parsesSynchronously(schema)
        ? await schema.safeParseAsync(value)
        : schema.safeParse(value);
    return parsed.success ? { ok: true, event: parsed.data } : { ok: false, error: parsed.error };
  } catch (error) {
    // A transform or refine that throws or rejects (`z.string().transform(BigInt)` on "abc"):
    // the schema's verdict on this payload, as deterministic as a failed check. Never an outage.
    return {
      ok: false,
      error: new OncelyError(
        'ONCELY_INVALID_PAYLOAD',
        `The handler's schema threw while validating the message (${errorName(error)}): a transform or refine that throws ` +
          'rejects the payload. Return z.NEVER after ctx.addIssue() in the transform to report it as a validation issue instead.',
        { cause: error },
      ),
    };
  }
}

/**
 * The handler's own id for a record, for `deriveMessageId`: decodes the record (the id is read
 * from the event) and awaits `messageId(event, message)`, which may be async. A messageId that
 * throws or rejects makes the id invalid (`invalid_message_id`), as the thunk rethrows it where
 * `deriveMessageId` reports a throwing messageId. `fromHandler` is undefined when the record did
 * not decode: then the id comes from the headers or coordinates, and the decoding failure is the
 * verdict.
 */
export async function decodeForId(
  handler: Pick<AnyHandlerDefinition, 'decode' | 'schema' | 'messageId'>,
  info: MessageInfo,
): Promise<{ readonly decoded: Decoded; readonly fromHandler: (() => unknown) | undefined }> {
  const decoded = await decode(handler, info);
  const messageId = handler.messageId;
  if (!decoded.ok || messageId === undefined) return { decoded, fromHandler: undefined };
  let id: unknown;
  try {
    id = await messageId(decoded.event, info);
  } catch (error) {
    return {
      decoded,
      fromHandler: () => {
        throw error;
      },
    };
  }
  return { decoded, fromHandler: () => id };
}

function decodeJson(value: Buffer | null): unknown {
  if (value === null) {
    throw new OncelyError(
      'ONCELY_INVALID_PAYLOAD',
      "The message has no value (a tombstone). Set the handler's `tombstone` option to 'skip' them or to a function that handles them.",
    );
  }
  // Checked first, then converted: Buffer#toString would turn invalid bytes into U+FFFD silently,
  // and a payment event whose bytes were replaced is not the event that was sent.
  if (!isUtf8(value)) {
    throw new OncelyError('ONCELY_INVALID_PAYLOAD', 'The message value is not valid UTF-8, so it cannot be JSON.');
  }
  try {
    // A leading byte order mark is not part of the JSON text (as a UTF-8 TextDecoder would drop it).
    const start = value[0] === 0xef && value[1] === 0xbb && value[2] === 0xbf ? 3 : 0;
    return JSON.parse(value.toString('utf8', start)) as unknown;
  } catch (error) {
    // V8's message quotes the start of the input ("card-41111"… is not valid JSON): payment data
    // must not reach the logs through it, so only the position is kept, and not the cause.
    const position = /at position (\d+)/.exec((error as Error).message)?.[1];
    throw new OncelyError(
      'ONCELY_INVALID_PAYLOAD',
      `The message value is not valid JSON${position === undefined ? '' : ` (syntax error at position ${position})`}.`,
    );
  }
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : typeof error;
}
