import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { isOncelyError } from '../../src/errors.js';
import { closestWord, editDistance, invalidOptions, parseOptions } from '../../src/options.js';

const schema = z.strictObject({
  batchSize: z.int('must be a whole number').min(1, 'must be at least 1').default(10),
  retry: z
    .strictObject({ attempts: z.int().min(1), initialDelayMs: z.number() })
    .partial()
    .transform((r) => ({ attempts: 5, ...r }))
    .default({ attempts: 5 }),
  retention: z.preprocess((v) => (v === false ? undefined : v), z.strictObject({ inboxFor: z.number() }).optional()),
});

function errorOf(input: unknown, at?: readonly string[]): { message: string; option: unknown } {
  try {
    parseOptions(schema, input, at);
  } catch (error) {
    if (isOncelyError(error) && error.code === 'ONCELY_CONFIG')
      return { message: error.message, option: error.context.option };
    throw error;
  }
  throw new Error('expected ONCELY_CONFIG');
}

describe('parseOptions', () => {
  it('returns the parsed options with their defaults', () => {
    expect(parseOptions(schema, {})).toEqual({ batchSize: 10, retry: { attempts: 5 } });
  });

  it('names a bad option by its path, prefixed with where the options sit', () => {
    expect(errorOf({ batchSize: 0 })).toEqual({
      message: 'Invalid option `batchSize`: must be at least 1',
      option: 'batchSize',
    });
    expect(errorOf({ batchSize: 1.5 }, ['relay'])).toEqual({
      message: 'Invalid option `relay.batchSize`: must be a whole number',
      option: 'relay.batchSize',
    });
  });

  it('suggests the closest known option for an unknown one, at any depth and through wrappers', () => {
    expect(errorOf({ batchSzie: 5 }).message).toBe(
      'Invalid option `batchSzie`: unknown option; did you mean `batchSize`?',
    );
    // Inside .partial().transform().default() …
    expect(errorOf({ retry: { attemps: 2 } }).message).toContain(
      '`retry.attemps`: unknown option; did you mean `attempts`?',
    );
    // … and behind a preprocess.
    expect(errorOf({ retention: { inboxFr: 1 } }).message).toContain(
      '`retention.inboxFr`: unknown option; did you mean `inboxFor`?',
    );
  });

  it('names an unknown option far from every known one without a suggestion', () => {
    expect(errorOf({ brokers: ['x'] }).message).toBe('Invalid option `brokers`: unknown option');
  });

  it('lists several problems on one line, the first one as the option of the error', () => {
    const error = errorOf({ batchSize: 0, retry: { attempts: 0 } });
    expect(error.message).toMatch(/^Invalid options: `batchSize`: must be at least 1; `retry\.attempts`: .+$/);
    expect(error.message).not.toContain('\n');
    expect(error.option).toBe('batchSize');
  });

  it('names the options object itself when it is not one', () => {
    expect(errorOf(undefined).message).toMatch(/^Invalid option `\(options\)`: /);
    expect(errorOf(undefined, ['relay']).message).toMatch(/^Invalid option `relay`: /);
  });
});

describe('invalidOptions', () => {
  it('makes one ONCELY_CONFIG error of problems found outside a schema', () => {
    const error = invalidOptions([{ path: ['handlers'], message: 'two handlers for topic "t"' }]);
    expect(error.code).toBe('ONCELY_CONFIG');
    expect(error.message).toBe('Invalid option `handlers`: two handlers for topic "t"');
    expect(error.context.option).toBe('handlers');
  });
});

describe('editDistance and closestWord', () => {
  it('count single-letter edits and pick the closest candidate within three', () => {
    expect(editDistance('stauts', 'status')).toBe(2);
    expect(editDistance('', 'abc')).toBe(3);
    expect(closestWord('Concurrrency', ['batchSize', 'concurrency'])).toBe('concurrency');
    expect(closestWord('brokers', ['batchSize', 'concurrency'])).toBeUndefined();
  });
});
