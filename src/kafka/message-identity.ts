// A namespace import: `hash` is missing before Node 20.12, and a named import of it would fail to load.
import { isUtf8 } from 'node:buffer';
import * as crypto from 'node:crypto';

/**
 * Header values as Kafka clients hand them over: bytes, or strings when a producer in the same
 * process set them, possibly repeated.
 */
export type RecordHeaderValue = Buffer | string | ReadonlyArray<Buffer | string> | undefined;
export type RecordHeaders = Readonly<Record<string, RecordHeaderValue>>;

/** The coordinates and headers the message id can be derived from. */
export interface IdentitySource {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly headers: RecordHeaders;
}

export const MESSAGE_ID_HEADER = 'message-id';
export const IDEMPOTENCY_KEY_HEADER = 'idempotency-key';
export const MAX_MESSAGE_ID_LENGTH = 255;

export type MessageIdSource = 'handler' | typeof MESSAGE_ID_HEADER | typeof IDEMPOTENCY_KEY_HEADER | 'coordinates';

export type MessageIdResult =
  | { readonly ok: true; readonly id: string; readonly source: MessageIdSource }
  | { readonly ok: false; readonly source: MessageIdSource; readonly problem: string };

/**
 * UTF-8 bytes (already checked) as text, without one leading byte order mark: exactly what a
 * fatal UTF-8 TextDecoder returns, which is how header ids were always read (ids are frozen).
 */
function utf8WithoutBom(value: Buffer): string {
  return value.toString('utf8', value[0] === 0xef && value[1] === 0xbb && value[2] === 0xbf ? 3 : 0);
}

/**
 * Derives a message's id. NEVER CHANGE THIS FORMAT: the ids it returns are the keys of rows
 * already stored in `oncely.inbox`; a change would make every stored message look new and the
 * next replay or redelivery would apply effects twice. `test/unit/kafka/message-identity.test.ts`
 * pins sample outputs.
 *
 * Precedence, first present wins:
 * 1. `fromHandler()`, the handler's own `messageId(event, message)`, when it returns a value;
 * 2. the `message-id` header;
 * 3. the `idempotency-key` header;
 * 4. the record's coordinates, `<topic>/<partition>/<offset>`.
 *
 * Header names are matched exactly (lowercase) first. Only when neither header is present under its
 * exact name is each looked for in any case (`Idempotency-Key`, `Message-ID`, as HTTP-minded producers
 * write them): every input that had an exact-case header gets the id it always got, and one that
 * had only another case — deduplicated by its coordinates before, which is no deduplication against
 * a re-publish — now gets its header's id. Several spellings of one header count as a repeated
 * header. A source that is present but invalid — empty,
 * longer than 255 characters (Unicode code points), not valid UTF-8, containing NUL (which
 * PostgreSQL text cannot hold), or a header repeated with different values — is rejected, never
 * truncated, and never skipped in favour of the next source: falling through would silently give
 * the message another identity.
 */
export function deriveMessageId(source: IdentitySource, fromHandler?: () => unknown): MessageIdResult {
  if (fromHandler !== undefined) {
    let value: unknown;
    try {
      value = fromHandler();
    } catch (error) {
      return {
        ok: false,
        source: 'handler',
        problem: `messageId() threw: ${(error as Error)?.message ?? String(error)}`,
      };
    }
    if (value !== undefined && value !== null) {
      if (typeof value !== 'string') {
        return { ok: false, source: 'handler', problem: `messageId() returned a ${typeof value}, not a string` };
      }
      return checked(value, 'handler');
    }
  }
  for (const header of [MESSAGE_ID_HEADER, IDEMPOTENCY_KEY_HEADER] as const) {
    const raw = source.headers[header];
    if (raw === undefined) continue;
    const decoded = decodeHeader(raw);
    if (!decoded.ok) return { ok: false, source: header, problem: decoded.problem };
    return checked(decoded.value, header);
  }
  for (const header of [MESSAGE_ID_HEADER, IDEMPOTENCY_KEY_HEADER] as const) {
    const raw = headerInAnyCase(source.headers, header);
    if (raw === undefined) continue;
    const decoded = decodeHeader(raw);
    if (!decoded.ok) return { ok: false, source: header, problem: decoded.problem };
    return checked(decoded.value, header);
  }
  return checked(`${source.topic}/${source.partition}/${source.offset}`, 'coordinates');
}

function checked(id: string, source: MessageIdSource): MessageIdResult {
  if (id.length === 0) return { ok: false, source, problem: 'the id is empty' };
  // `length` counts UTF-16 units, never fewer than code points: only long strings need counting.
  if (id.length > MAX_MESSAGE_ID_LENGTH) {
    const codePoints = [...id].length;
    if (codePoints > MAX_MESSAGE_ID_LENGTH) {
      return {
        ok: false,
        source,
        problem: `the id is ${codePoints} characters long; the limit is ${MAX_MESSAGE_ID_LENGTH}`,
      };
    }
  }
  if (id.includes('\u0000')) return { ok: false, source, problem: 'the id contains a NUL character' };
  if (hasLoneSurrogate(id)) return { ok: false, source, problem: 'the id is not valid UTF-8 (lone surrogate)' };
  return { ok: true, id, source };
}

/** The values of every header named `lowerName` in another case, or undefined when there is none. */
function headerInAnyCase(headers: RecordHeaders, lowerName: string): NonNullable<RecordHeaderValue> | undefined {
  let found: (Buffer | string)[] | undefined;
  for (const name in headers) {
    if (name.length !== lowerName.length || name.toLowerCase() !== lowerName) continue;
    const raw = headers[name];
    if (raw === undefined) continue;
    found ??= [];
    if (Array.isArray(raw)) found.push(...(raw as ReadonlyArray<Buffer | string>));
    else found.push(raw as Buffer | string);
  }
  return found;
}

function decodeHeader(
  raw: NonNullable<RecordHeaderValue>,
): { ok: true; value: string } | { ok: false; problem: string } {
  const values = Array.isArray(raw) ? (raw as ReadonlyArray<Buffer | string>) : [raw as Buffer | string];
  let first: string | undefined;
  for (const value of values) {
    let text: string;
    if (typeof value === 'string') {
      text = value;
    } else {
      if (!isUtf8(value)) return { ok: false, problem: 'the header value is not valid UTF-8' };
      text = utf8WithoutBom(value);
    }
    if (first === undefined) first = text;
    else if (first !== text) return { ok: false, problem: 'the header is repeated with different values' };
  }
  return first === undefined ? { ok: false, problem: 'the header has no value' } : { ok: true, value: first };
}

function hasLoneSurrogate(text: string): boolean {
  return /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}

const EMPTY = Buffer.alloc(0);

/** A SHA-256 digest as a `latin1` string: one character per byte, the cheapest form Node returns. */
export type Sha256 = (data: Buffer) => string;

/**
 * One-shot hashing (Node >= 20.12): about a quarter of `createHash`'s cost per 200-byte message,
 * which allocates a Hash object per call. Undefined where Node lacks it.
 */
export const sha256OneShot: Sha256 | undefined =
  typeof crypto.hash === 'function' ? (data) => crypto.hash('sha256', data, 'binary') : undefined;

/** The same digest through `createHash`, where `crypto.hash` is missing. */
export const sha256Streaming: Sha256 = (data) => crypto.createHash('sha256').update(data).digest('binary');

const sha256: Sha256 = sha256OneShot ?? sha256Streaming;

/**
 * SHA-256 of the raw value bytes (a null value, a tombstone, hashes as zero bytes). Stored with
 * the id so a duplicate can be told apart: same bytes is a republish, other bytes is key reuse.
 * NEVER CHANGE WHAT IS HASHED: stored fingerprints would stop matching their republishes.
 */
export function payloadFingerprint(value: Buffer | null): Buffer {
  return Buffer.from(sha256(value ?? EMPTY), 'latin1');
}

/** {@link payloadFingerprint} as a `latin1` string (one character per byte), without a Buffer. */
export function payloadFingerprintLatin1(value: Buffer | null): string {
  return sha256(value ?? EMPTY);
}
