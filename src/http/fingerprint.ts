/** What a request fingerprint is computed from. `body` is the whole request body as received. */
export interface FingerprintInput {
  readonly method: string;
  readonly url: URL;
  readonly headers: Headers;
  readonly body: Uint8Array;
}

/**
 * Returns the material that identifies a request for one key; oncely stores its SHA-256. Two
 * requests with one key and different material are refused with 422 `idempotency_key_reused`.
 * Throw {@link InvalidJsonBodyError} to answer 400 `request_body_invalid_json`.
 */
export type Fingerprint = (input: FingerprintInput) => string | Uint8Array | Promise<string | Uint8Array>;

/** Thrown by a fingerprint when a body declared as JSON does not parse: answered with 400. */
export class InvalidJsonBodyError extends Error {
  constructor(cause?: unknown) {
    super('the request body is declared as JSON but is not valid JSON', { cause });
    this.name = 'InvalidJsonBodyError';
  }
}

/** `application/json` and every `application/…+json` (problem+json, merge-patch+json, …). */
export function isJsonContentType(contentType: string | null): boolean {
  return contentType !== null && /^\s*application\/(?:[\w.!#$%&'*^`|~-]+\+)?json\s*(?:;|$)/i.test(contentType);
}

/**
 * JSON text in canonical form (the JSON Canonicalization Scheme, RFC 8785, for values produced by
 * `JSON.parse`): object members sorted by their UTF-16 code units, no whitespace, numbers and
 * strings as ECMAScript serializes them. So `{"b":1, "a":2}` and `{"a":2,"b":1}` are one request.
 *
 * Numbers are compared as IEEE 754 doubles, as RFC 8785 does: integers beyond 2^53 that differ
 * only past double precision canonicalize alike. Send such amounts as strings.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    // JSON.stringify gives RFC 8785's number and string forms; non-finite numbers cannot come from JSON.parse.
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item)).join(',')}]`;
  const record = value as Record<string, unknown>;
  const members = Object.keys(record)
    .sort()
    .map((name) => `${JSON.stringify(name)}:${canonicalJson(record[name])}`);
  return `{${members.join(',')}}`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/**
 * The default fingerprint: method, path with query string, and the body — canonical JSON when the
 * request declares a JSON content type (a declared-JSON body that does not parse, an empty one
 * included, is refused with 400), the raw bytes otherwise. Headers are not part of it (a retry may carry a new trace id).
 */
export function defaultFingerprint({ method, url, headers, body }: FingerprintInput): Uint8Array {
  const head = `${method.toUpperCase()}\n${url.pathname}${url.search}\n`;
  const json = isJsonContentType(headers.get('content-type'));
  // An empty body declared as JSON is not JSON (JSON.parse refuses ''): refused like any other
  // that does not parse, as Fastify's own parser does, rather than handed to the handler to fail.
  if (body.byteLength === 0 && json) throw new InvalidJsonBodyError();
  if (body.byteLength === 0) return Buffer.from(`${head}empty`);
  if (json) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(utf8.decode(body));
    } catch (error) {
      throw new InvalidJsonBodyError(error);
    }
    return Buffer.from(`${head}json\n${canonicalJson(parsed)}`);
  }
  return Buffer.concat([Buffer.from(`${head}raw\n`), body]);
}
