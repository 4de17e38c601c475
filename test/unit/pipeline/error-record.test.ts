import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { NonRetriableError, OncelyError } from '../../../src/errors.js';
import { cutBytes, describeError, redactError } from '../../../src/pipeline/record/error-record.js';
import { decodeHeaders as restoreHeaders, encodeHeaders as storeHeaders } from '../../../src/inbox/headers.js';

describe('describeError', () => {
  it('keeps name, message, code, causes and the stack cut to 8 KB', () => {
    const error = new OncelyError('ONCELY_CONFIG', 'outer', { cause: new Error('inner') });
    error.stack = `OncelyError: outer\n${'    at frame (file.ts:1:1)\n'.repeat(2_000)}`;
    const stored = describeError(error);
    expect(stored).toMatchObject({
      name: 'OncelyError',
      message: 'outer',
      code: 'ONCELY_CONFIG',
      causes: ['Error: inner'],
    });
    expect(Buffer.byteLength(stored.stack ?? '')).toBeLessThanOrEqual(8 * 1024);
    expect(stored.stack?.startsWith('OncelyError: outer')).toBe(true);
  });

  it('records validation issues', () => {
    const parsed = z.object({ amountCents: z.number() }).safeParse({ amountCents: 'ten' });
    expect(parsed.success).toBe(false);
    const stored = describeError(parsed.error);
    expect(stored.name).toBe('ZodError');
    expect(stored.issues).toEqual([expect.objectContaining({ path: ['amountCents'], code: 'invalid_type' })]);
  });

  it('keeps database error fields, but not the detail that quotes the values', () => {
    const pgError = Object.assign(new Error('duplicate key'), {
      code: '23505',
      constraint: 'ledger_pkey',
      detail: 'Key (card)=(4111111111111111) already exists.',
    });
    const stored = describeError(pgError);
    expect(stored).toMatchObject({ code: '23505', constraint: 'ledger_pkey' });
    expect(JSON.stringify(stored)).not.toContain('4111111111111111');
  });

  it('never stores or logs the parameters drizzle puts in a failed query’s message and stack', () => {
    const pgError = Object.assign(new Error('value too long'), { code: '22001', severity: 'ERROR' });
    const drizzleError = Object.assign(
      new Error('Failed query: insert into "cards" ("number") values ($1)\nparams: 4111111111111111,Jane Doe'),
      { name: 'DrizzleQueryError', query: 'insert into "cards" ("number") values ($1)', params: ['4111111111111111'] },
    );
    drizzleError.cause = pgError;
    const wrapped = new Error('the handler failed', { cause: drizzleError });
    const stored = JSON.stringify(describeError(wrapped));
    expect(stored).not.toContain('4111111111111111');
    expect(stored).toContain('insert into');
    const logged = redactError(drizzleError) as Error & { params?: unknown; query?: unknown };
    expect(logged.message).toBe('Failed query: insert into "cards" ("number") values ($1)');
    expect(logged.stack).not.toContain('4111111111111111');
    expect(logged.params).toBeUndefined();
    expect(logged.query).toBe('insert into "cards" ("number") values ($1)');
    expect((logged.cause as { code?: string }).code).toBe('22001');
  });

  it('returns an error with nothing to remove as it is', () => {
    const plain = new Error('boom');
    expect(redactError(plain)).toBe(plain);
  });

  it('makes lone surrogates storable: jsonb rejects them', () => {
    const stored = describeError(new NonRetriableError('account "\ud800AB" not found'));
    expect(stored.message).toBe('account "\ufffdAB" not found');
  });

  it('describes thrown non-errors and drops NUL characters jsonb cannot hold', () => {
    expect(describeError('plain string')).toEqual({ name: 'NonError', message: 'plain string' });
    expect(describeError({ weird: true })).toEqual({ name: 'NonError', message: '{"weird":true}' });
    expect(describeError(new Error('a\u0000b')).message).toBe('ab');
    expect(JSON.stringify(describeError(new Error('x\u0000')))).not.toContain('\\u0000');
  });
});

describe('cutBytes', () => {
  it('never cuts inside a multi-byte character', () => {
    expect(cutBytes('aé', 2)).toBe('a');
    expect(cutBytes('€€', 4)).toBe('€');
    expect(cutBytes('short', 100)).toBe('short');
  });
});

describe('storeHeaders', () => {
  it('keeps every header losslessly, in order, as text or base64', () => {
    expect(
      storeHeaders({
        'message-id': Buffer.from('m-1'),
        trace: [Buffer.from('a'), Buffer.from('b')],
        binary: Buffer.from([0xff, 0x00]),
        nul: Buffer.from('x\u0000y'),
        text: 'plain',
        absent: undefined,
      }),
    ).toEqual([
      { key: 'message-id', value: 'm-1', encoding: 'utf8' },
      { key: 'trace', value: 'a', encoding: 'utf8' },
      { key: 'trace', value: 'b', encoding: 'utf8' },
      { key: 'binary', value: '/wA=', encoding: 'base64' },
      { key: 'nul', value: Buffer.from('x\u0000y').toString('base64'), encoding: 'base64' },
      { key: 'text', value: 'plain', encoding: 'utf8' },
    ]);
  });
});

describe('restoreHeaders', () => {
  it('gives back exactly the stored bytes, repeated headers as arrays', () => {
    const original = {
      'message-id': Buffer.from('m-1'),
      trace: [Buffer.from('a'), Buffer.from('b')],
      binary: Buffer.from([0xff, 0x00, 0x01]),
    };
    expect(restoreHeaders(storeHeaders(original))).toEqual(original);
  });
});
