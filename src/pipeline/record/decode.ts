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
 * A decoder may return a promise and a schema may hold async refinements or transforms: every one
 * of them is awaited here, so a rejection becomes this message's verdict — never an unhandled
 * rejection that ends the process (and ends it again on every restart).
 */
export async function decode(
  handler: Pick<AnyHandlerDefinition, 'decode' | 'schema'>,
  info: MessageInfo,
): Promise<Decoded> {
  return decodeNow(handler, info);
}

/**
 * {@link decode} without a promise where none is needed: the default JSON decoding with no schema,
 * or with a schema made only of zod's own steps (sync-schema.ts). A chunk decodes its claimed
 * messages one after another, and most of them never need to wait.
 */
export function decodeNow(
  handler: Pick<AnyHandlerDefinition, 'decode' | 'schema'>,
  info: MessageInfo,
): Decoded | Promise<Decoded> {
  if (handler.decode !== undefined) return decodeWith(handler.decode, handler.schema, info);
  let value: unknown;
  try {
    value = decodeJson(info.value);
  } catch (error) {
    return { ok: false, error: decoderError(error) };
  }
  return validate(handler.schema, value);
}

async function decodeWith(
  decoder: NonNullable<AnyHandlerDefinition['decode']>,
  schema: AnyHandlerDefinition['schema'],
  info: MessageInfo,
): Promise<Decoded> {
  let value: unknown;
  try {
    value = await decoder(info.value, info);
  } catch (error) {
    return { ok: false, error: decoderError(error) };
  }
  return validate(schema, value);
}

// A decoder that throws (or rejects) has judged the bytes: deterministic, never retried.
function decoderError(error: unknown): Error {
  return error instanceof Error
    ? error
    : new OncelyError('ONCELY_INVALID_PAYLOAD', 'The decoder threw a non-error value.', { cause: error });
}

type Schema = NonNullable<AnyHandlerDefinition['schema']>;

function validate(schema: AnyHandlerDefinition['schema'], value: unknown): Decoded | Promise<Decoded> {
  if (schema === undefined) return { ok: true, event: value };
  // safeParseAsync unless the schema is only zod's own steps (sync-schema.ts): a synchronous parse
  // of a schema with an async refine drops the refine's promise (zod throws "use parseAsync"
  // instead), and that promise's rejection would then go unhandled.
  if (typeof schema.safeParseAsync === 'function' && !parsesSynchronously(schema)) return validateAsync(schema, value);
  try {
    return parsedOf(schema.safeParse(value));
  } catch (error) {
    return { ok: false, error: schemaError(error) };
  }
}

async function validateAsync(schema: Schema, value: unknown): Promise<Decoded> {
  try {
    return parsedOf(await schema.safeParseAsync(value));
  } catch (error) {
    return { ok: false, error: schemaError(error) };
  }
}

function parsedOf(parsed: { success: boolean; data?: unknown; error?: unknown }): Decoded {
  return parsed.success ? { ok: true, event: parsed.data } : { ok: false, error: parsed.error };
}

// A transform or refine that throws or rejects (`z.string().transform(BigInt)` on "abc"): the
// schema's verdict on this payload, as deterministic as a failed check. Never an outage.
function schemaError(error: unknown): OncelyError {
  return new OncelyError(
    'ONCELY_INVALID_PAYLOAD',
    `The handler's schema threw while validating the message (${errorName(error)}): a transform or refine that throws ` +
      'rejects the payload. Return z.NEVER after ctx.addIssue() in the transform to report it as a validation issue instead.',
    { cause: error },
  );
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
