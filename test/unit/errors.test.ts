import { describe, expect, it } from 'vitest';

import {
  configError,
  ERROR_CODES,
  hasErrorCode,
  isOncelyError,
  NonRetriableError,
  OncelyError,
} from '../../src/errors.js';

describe('OncelyError', () => {
  it('carries code, retriable flag, context and cause as enumerable fields', () => {
    const cause = new Error('socket closed');
    const error = new OncelyError('ONCELY_CONFIG', 'bad', { cause, retriable: true, context: { topic: 't' } });
    expect(error).toMatchObject({ code: 'ONCELY_CONFIG', retriable: true, context: { topic: 't' }, cause });
    expect(Object.keys(error)).toEqual(expect.arrayContaining(['code', 'retriable', 'context']));
  });

  it('is recognised by brand, also when made by another copy of oncely', () => {
    const foreign = Object.assign(new Error('from another copy'), {
      [Symbol.for('oncely.error')]: true,
      code: 'ONCELY_CONFIG',
    });
    expect(isOncelyError(foreign)).toBe(true);
    expect(isOncelyError(new Error('plain'))).toBe(false);
    expect(isOncelyError(null)).toBe(false);
  });

  it('makes NonRetriableError a non-retriable OncelyError', () => {
    const error = new NonRetriableError('card declined');
    expect(hasErrorCode(error, 'ONCELY_NON_RETRIABLE')).toBe(true);
    expect(error.retriable).toBe(false);
    expect(error.name).toBe('NonRetriableError');
  });

  it('names the option in config errors', () => {
    const error = configError('db', 'expected a pool');
    expect(error.message).toBe('Invalid option `db`: expected a pool');
    expect(error.context.option).toBe('db');
  });

  it('has unique codes, all prefixed ONCELY_', () => {
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    for (const code of ERROR_CODES) expect(code).toMatch(/^ONCELY_[A-Z_]+$/);
  });
});
