import { createHash } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import {
  deriveMessageId,
  payloadFingerprint,
  payloadFingerprintLatin1,
  sha256OneShot,
  sha256Streaming,
} from '../../../src/kafka/message-identity.js';

const at = { topic: 'payments', partition: 3, offset: '1234567890123', headers: {} };

describe('deriveMessageId', () => {
  // These outputs are frozen: stored inbox rows are keyed by them. A change here is a breaking
  // change that makes every stored message look new (see the function's comment).
  it.each([
    [
      'the handler value first',
      { ...at, headers: { 'message-id': Buffer.from('h-1') } },
      (): unknown => 'evt_42',
      'evt_42',
      'handler',
    ],
    [
      'the message-id header when the handler returns undefined',
      { ...at, headers: { 'message-id': Buffer.from('h-1') } },
      (): unknown => undefined,
      'h-1',
      'message-id',
    ],
    [
      'the header without one leading byte order mark, multi-byte characters kept',
      { ...at, headers: { 'message-id': Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('pay-Zoë-💳')]) } },
      undefined,
      'pay-Zoë-💳',
      'message-id',
    ],
    [
      'the message-id header when the handler returns null',
      { ...at, headers: { 'message-id': Buffer.from('h-1') } },
      (): unknown => null,
      'h-1',
      'message-id',
    ],
    [
      'the message-id header before idempotency-key',
      { ...at, headers: { 'idempotency-key': Buffer.from('k-1'), 'message-id': Buffer.from('m-1') } },
      undefined,
      'm-1',
      'message-id',
    ],
    [
      'the idempotency-key header without message-id',
      { ...at, headers: { 'idempotency-key': Buffer.from('k-1') } },
      undefined,
      'k-1',
      'idempotency-key',
    ],
    ['the coordinates without headers', at, undefined, 'payments/3/1234567890123', 'coordinates'],
    [
      'the header verbatim, spaces and case kept',
      { ...at, headers: { 'message-id': Buffer.from(' Pay-ÄÖ 1 ') } },
      undefined,
      ' Pay-ÄÖ 1 ',
      'message-id',
    ],
    ['a string header value as is', { ...at, headers: { 'message-id': 'str-id' } }, undefined, 'str-id', 'message-id'],
    [
      'a repeated header with equal values',
      { ...at, headers: { 'message-id': [Buffer.from('same'), Buffer.from('same')] } },
      undefined,
      'same',
      'message-id',
    ],
    [
      'exactly 255 characters (code points, not bytes)',
      { ...at, headers: { 'message-id': Buffer.from('€'.repeat(255)) } },
      undefined,
      '€'.repeat(255),
      'message-id',
    ],
    [
      '255 astral characters (510 UTF-16 units)',
      { ...at, headers: { 'message-id': Buffer.from('😀'.repeat(255)) } },
      undefined,
      '😀'.repeat(255),
      'message-id',
    ],
  ] as const)('takes %s', (_name, source, fromHandler, id, from) => {
    expect(deriveMessageId(source, fromHandler)).toEqual({ ok: true, id, source: from });
  });

  it('ignores other header names', () => {
    const result = deriveMessageId({
      ...at,
      headers: { messageId: Buffer.from('y'), 'x-message-id': Buffer.from('z') },
    });
    expect(result).toEqual({ ok: true, id: 'payments/3/1234567890123', source: 'coordinates' });
  });

  it('reads Idempotency-Key and Message-ID in any case when neither is present in lowercase', () => {
    expect(deriveMessageId({ ...at, headers: { 'Idempotency-Key': Buffer.from('k-9') } })).toEqual({
      ok: true,
      id: 'k-9',
      source: 'idempotency-key',
    });
    expect(deriveMessageId({ ...at, headers: { 'Message-ID': Buffer.from('m-9'), 'IDEMPOTENCY-KEY': 'k' } })).toEqual({
      ok: true,
      id: 'm-9',
      source: 'message-id',
    });
  });

  it('keeps the id of every input that had an exact-case header: exact names win over other cases', () => {
    const headers = { 'idempotency-key': Buffer.from('k-1'), 'Message-Id': Buffer.from('m-1') };
    expect(deriveMessageId({ ...at, headers })).toEqual({ ok: true, id: 'k-1', source: 'idempotency-key' });
  });

  it('treats two spellings of one header with different values as a repeated header', () => {
    const headers = { 'Message-Id': Buffer.from('a'), 'MESSAGE-ID': Buffer.from('b') };
    expect(deriveMessageId({ ...at, headers })).toEqual({
      ok: false,
      source: 'message-id',
      problem: 'the header is repeated with different values',
    });
  });

  it.each([
    ['an empty header', { 'message-id': Buffer.alloc(0) }, 'message-id', 'the id is empty'],
    [
      'a 256-character id',
      { 'message-id': Buffer.from('a'.repeat(256)) },
      'message-id',
      'the id is 256 characters long; the limit is 255',
    ],
    [
      'invalid UTF-8',
      { 'message-id': Buffer.from([0x61, 0xff, 0x62]) },
      'message-id',
      'the header value is not valid UTF-8',
    ],
    ['a NUL character', { 'message-id': Buffer.from('a\u0000b') }, 'message-id', 'the id contains a NUL character'],
    [
      'a header repeated with different values',
      { 'message-id': [Buffer.from('a'), Buffer.from('b')] },
      'message-id',
      'the header is repeated with different values',
    ],
    [
      'an invalid message-id even when idempotency-key is fine',
      { 'message-id': Buffer.alloc(0), 'idempotency-key': Buffer.from('k') },
      'message-id',
      'the id is empty',
    ],
    ['an empty idempotency-key', { 'idempotency-key': Buffer.alloc(0) }, 'idempotency-key', 'the id is empty'],
  ] as const)('rejects %s, never truncating or falling through', (_name, headers, source, problem) => {
    expect(deriveMessageId({ ...at, headers })).toEqual({ ok: false, source, problem });
  });

  it('rejects what the handler returns when it is not a usable string', () => {
    expect(deriveMessageId(at, () => 42)).toEqual({
      ok: false,
      source: 'handler',
      problem: 'messageId() returned a number, not a string',
    });
    expect(deriveMessageId(at, () => '')).toEqual({ ok: false, source: 'handler', problem: 'the id is empty' });
    expect(deriveMessageId(at, () => 'a\uD800b')).toEqual({
      ok: false,
      source: 'handler',
      problem: 'the id is not valid UTF-8 (lone surrogate)',
    });
    expect(
      deriveMessageId(at, () => {
        throw new Error('no id field');
      }),
    ).toEqual({ ok: false, source: 'handler', problem: 'messageId() threw: no id field' });
  });
});

describe('payloadFingerprint', () => {
  it('is the SHA-256 of the raw value bytes', () => {
    expect(payloadFingerprint(Buffer.from('{"amount":100}')).toString('hex')).toBe(
      '4d4bbe59c6aad22442cde199a6a8a5f034405fcd78fb5a81c24ef249de1c45f1',
    );
    expect(payloadFingerprint(Buffer.from([0x00, 0xff])).toString('hex')).toBe(
      '06eb7d6a69ee19e5fbdf749018d3d2abfa04bcbd1365db312eb86dc7169389b8',
    );
  });

  it('hashes a tombstone (null value) like an empty value', () => {
    const empty = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
    expect(payloadFingerprint(null).toString('hex')).toBe(empty);
    expect(payloadFingerprint(Buffer.alloc(0)).toString('hex')).toBe(empty);
  });

  it('tells payloads apart that differ in one byte', () => {
    expect(
      payloadFingerprint(Buffer.from('{"amount":100}')).equals(payloadFingerprint(Buffer.from('{"amount":101}'))),
    ).toBe(false);
  });

  it('gives the same digest through crypto.hash as through createHash (stored fingerprints must not change)', () => {
    // The engines field allows Node 20.9, which has no crypto.hash: both paths must agree byte for byte.
    expect(sha256OneShot).toBeDefined(); // the Node running the tests has it
    const values = [
      Buffer.alloc(0),
      Buffer.from([0x00, 0xff, 0x80]),
      Buffer.from('{"amount":100}'),
      Buffer.alloc(70_000, 7),
    ];
    for (const value of values) {
      const oneShot = sha256OneShot?.(value);
      const streaming = sha256Streaming(value);
      expect(oneShot).toBe(streaming);
      expect(Buffer.from(streaming, 'latin1').toString('hex')).toBe(createHash('sha256').update(value).digest('hex'));
      expect(payloadFingerprint(value).equals(createHash('sha256').update(value).digest())).toBe(true);
      expect(payloadFingerprintLatin1(value)).toBe(streaming);
    }
  });
});
