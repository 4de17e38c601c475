import type { IncomingHttpHeaders } from 'node:http';

/** Node's header object as Web `Headers` (repeated headers appended in order). */
export function webHeaders(source: IncomingHttpHeaders): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(source)) {
    if (value === undefined) continue;
    for (const one of Array.isArray(value) ? value : [value]) headers.append(name, one);
  }
  return headers;
}

/** A body a framework already read and parsed, as bytes again (objects as JSON). */
export function encodeParsedBody(parsed: unknown): Uint8Array | null {
  if (parsed === undefined || parsed === null) return null;
  if (parsed instanceof Uint8Array) return parsed;
  if (typeof parsed === 'string') return Buffer.from(parsed, 'utf8');
  return Buffer.from(JSON.stringify(parsed), 'utf8');
}
