import type { StoredHeader } from './dead-letters.js';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** A header value: text, bytes, or several of them (a repeated header). */
export type HeaderValue = string | Buffer | readonly (string | Buffer)[];

/**
 * Headers as stored in jsonb (a dead letter's, an outbox row's): text when it is clean UTF-8,
 * base64 otherwise. Lossless: {@link decodeHeaders} gives back the bytes a record carried.
 */
export function encodeHeaders(headers: Readonly<Record<string, HeaderValue | undefined>>): StoredHeader[] {
  const stored: StoredHeader[] = [];
  for (const [key, raw] of Object.entries(headers)) {
    if (raw === undefined) continue;
    const values: readonly (string | Buffer)[] = Array.isArray(raw) ? raw : [raw as string | Buffer];
    for (const value of values) {
      const header = storedValue(key, value);
      // Nor can a key hold NUL (header names arrive as text, so NUL is the one hazard).
      stored.push(
        key.includes('\u0000')
          ? { ...header, key: Buffer.from(key).toString('base64'), keyEncoding: 'base64' }
          : header,
      );
    }
  }
  return stored;
}

function storedValue(key: string, value: string | Buffer): StoredHeader {
  // jsonb cannot hold NUL or a lone surrogate: such values go as base64.
  if (typeof value === 'string' && !value.includes('\u0000') && value.isWellFormed()) {
    return { key, value, encoding: 'utf8' };
  }
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  let text: string | undefined;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    text = undefined;
  }
  return text === undefined || text.includes('\u0000')
    ? { key, value: bytes.toString('base64'), encoding: 'base64' }
    : { key, value: text, encoding: 'utf8' };
}

/** The inverse of {@link encodeHeaders}: headers as bytes, a repeated header as an array. */
export function decodeHeaders(stored: readonly StoredHeader[]): Record<string, Buffer | Buffer[]> {
  const headers: Record<string, Buffer | Buffer[]> = {};
  for (const { key: storedKey, keyEncoding, value, encoding } of stored) {
    const key = keyEncoding === 'base64' ? Buffer.from(storedKey, 'base64').toString('utf8') : storedKey;
    const bytes = Buffer.from(value, encoding === 'base64' ? 'base64' : 'utf8');
    const existing = headers[key];
    headers[key] = existing === undefined ? bytes : Array.isArray(existing) ? [...existing, bytes] : [existing, bytes];
  }
  return headers;
}
