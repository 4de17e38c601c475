import type { StoredHeader } from '../inbox/dead-letters.js';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** A header value as given to `publish`: text, bytes, or several of them (repeated header). */
export type OutboxHeaderValue = string | Buffer | readonly (string | Buffer)[];

/** Headers as stored in `oncely.outbox.headers`: text when clean UTF-8, base64 otherwise. Lossless. */
export function encodeHeaders(headers: Readonly<Record<string, OutboxHeaderValue | undefined>>): StoredHeader[] {
  const stored: StoredHeader[] = [];
  for (const [key, raw] of Object.entries(headers)) {
    if (raw === undefined) continue;
    const values: readonly (string | Buffer)[] = Array.isArray(raw) ? raw : [raw as string | Buffer];
    for (const value of values) {
      if (typeof value === 'string' && !value.includes('\u0000')) {
        stored.push({ key, value, encoding: 'utf8' });
        continue;
      }
      const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
      let text: string | undefined;
      try {
        text = strictUtf8.decode(bytes);
      } catch {
        text = undefined;
      }
      // jsonb cannot hold NUL: such values go as base64 too.
      stored.push(
        text === undefined || text.includes('\u0000')
          ? { key, value: bytes.toString('base64'), encoding: 'base64' }
          : { key, value: text, encoding: 'utf8' },
      );
    }
  }
  return stored;
}

/** Stored headers as Kafka record headers (bytes; a repeated header becomes an array). */
export function decodeHeaders(stored: readonly StoredHeader[]): Record<string, Buffer | Buffer[]> {
  const headers: Record<string, Buffer | Buffer[]> = {};
  for (const { key, value, encoding } of stored) {
    const bytes = Buffer.from(value, encoding === 'base64' ? 'base64' : 'utf8');
    const existing = headers[key];
    headers[key] = existing === undefined ? bytes : Array.isArray(existing) ? [...existing, bytes] : [existing, bytes];
  }
  return headers;
}
