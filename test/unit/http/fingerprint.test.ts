import { createHash } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { canonicalJson, defaultFingerprint, InvalidJsonBodyError, type FingerprintInput } from '../../../src/index.js';
import { invalidIdempotencyKey } from '../../../src/http/idempotent.js';
import { isJsonContentType } from '../../../src/http/fingerprint.js';

const input = (
  body: string | Uint8Array,
  contentType: string | null,
  path = '/v1/payments',
  method = 'POST',
): FingerprintInput => ({
  method,
  url: new URL(`http://api.test${path}`),
  headers: new Headers(contentType === null ? {} : { 'content-type': contentType }),
  body: typeof body === 'string' ? Buffer.from(body) : body,
});

const hash = (material: string | Uint8Array): string => createHash('sha256').update(material).digest('hex');
const fingerprintOf = (...args: Parameters<typeof input>): string => hash(defaultFingerprint(input(...args)));

describe('canonicalJson', () => {
  it('sorts object members by UTF-16 code units at every depth and drops whitespace', () => {
    expect(canonicalJson(JSON.parse('{ "b": [ {"y":1, "x":2} ], "a": null, "B": true }'))).toBe(
      '{"B":true,"a":null,"b":[{"x":2,"y":1}]}',
    );
    // U+00E9 (é) sorts after "z"; an astral character sorts by its surrogates, as RFC 8785 says.
    expect(canonicalJson({ é: 1, z: 2, '\u{1F600}': 3, '\uFFFF': 4 })).toBe('{"z":2,"é":1,"\u{1F600}":3,"\uFFFF":4}');
  });

  it('keeps array order and writes numbers and strings as ECMAScript does', () => {
    expect(canonicalJson(JSON.parse('[3, 1e2, 1.50, -0, 0.1, "a\\u0041\\n"]'))).toBe('[3,100,1.5,0,0.1,"aA\\n"]');
    expect(canonicalJson(JSON.parse('1E21'))).toBe('1e+21');
  });
});

describe('defaultFingerprint', () => {
  it('gives equal JSON bodies the same fingerprint whatever their member order and spacing', () => {
    expect(fingerprintOf('{"amount":100,"currency":"EUR"}', 'application/json')).toBe(
      fingerprintOf('{\n  "currency": "EUR",\n  "amount": 100\n}', 'application/json; charset=utf-8'),
    );
    expect(fingerprintOf('{"a":1}', 'application/merge-patch+json')).toBe(
      fingerprintOf('{ "a" : 1 }', 'application/json'),
    );
  });

  it('tells apart another amount, another path, another query string and another method', () => {
    const base = fingerprintOf('{"amount":100}', 'application/json');
    expect(fingerprintOf('{"amount":101}', 'application/json')).not.toBe(base);
    expect(fingerprintOf('{"amount":100}', 'application/json', '/v1/refunds')).not.toBe(base);
    expect(fingerprintOf('{"amount":100}', 'application/json', '/v1/payments?capture=false')).not.toBe(base);
    expect(fingerprintOf('{"amount":100}', 'application/json', '/v1/payments', 'PUT')).not.toBe(base);
    // A number and the same digits as a string are different requests.
    expect(fingerprintOf('{"amount":"100"}', 'application/json')).not.toBe(base);
  });

  it('hashes non-JSON bodies raw, so a byte of difference is another request', () => {
    expect(fingerprintOf('a=1&b=2', 'application/x-www-form-urlencoded')).not.toBe(
      fingerprintOf('b=2&a=1', 'application/x-www-form-urlencoded'),
    );
    expect(fingerprintOf(Uint8Array.of(0, 255), 'application/octet-stream')).toBe(
      fingerprintOf(Uint8Array.of(0, 255), 'application/octet-stream'),
    );
    // The same bytes declared as JSON or not are told apart too.
    expect(fingerprintOf('{"a":1}', 'text/plain')).not.toBe(fingerprintOf('{"a":1}', 'application/json'));
  });

  it('refuses a body declared as JSON that does not parse or is not UTF-8', () => {
    expect(() => defaultFingerprint(input('{"amount":', 'application/json'))).toThrow(InvalidJsonBodyError);
    expect(() => defaultFingerprint(input(Uint8Array.of(0x22, 0xff, 0x22), 'application/json'))).toThrow(
      InvalidJsonBodyError,
    );
  });

  it('refuses an empty body declared as JSON and accepts one of any other type', () => {
    expect(() => defaultFingerprint(input('', 'application/json'))).toThrow(InvalidJsonBodyError);
    expect(fingerprintOf('', 'text/plain')).toBe(fingerprintOf('', null));
  });
});

describe('isJsonContentType', () => {
  it('matches application/json and +json types only', () => {
    expect(isJsonContentType('application/json')).toBe(true);
    expect(isJsonContentType('Application/JSON; charset=utf-8')).toBe(true);
    expect(isJsonContentType('application/problem+json')).toBe(true);
    expect(isJsonContentType('application/jsonl')).toBe(false);
    expect(isJsonContentType('text/json-ish')).toBe(false);
    expect(isJsonContentType(null)).toBe(false);
  });
});

describe('invalidIdempotencyKey', () => {
  it('accepts 1–255 printable ASCII characters and refuses everything else', () => {
    expect(invalidIdempotencyKey('a')).toBeUndefined();
    expect(invalidIdempotencyKey('k'.repeat(255))).toBeUndefined();
    expect(invalidIdempotencyKey('order 42/retry~1')).toBeUndefined();
    expect(invalidIdempotencyKey('')).toMatch(/empty/);
    expect(invalidIdempotencyKey('k'.repeat(256))).toMatch(/256 characters/);
    expect(invalidIdempotencyKey('caf\u00e9')).toMatch(/printable ASCII/);
    expect(invalidIdempotencyKey('a\tb')).toMatch(/printable ASCII/);
  });
});
