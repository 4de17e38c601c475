import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';

import { isOncelyError } from '../../../src/errors.js';
import { type IdempotentOptions, resolveRouteOptions } from '../../../src/http/idempotent-options.js';
import { defaultFingerprint } from '../../../src/http/fingerprint.js';

// Constructing these opens no connection.
const pool = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', max: 4 });
const db = drizzle(pool);
const valid: IdempotentOptions = { db, scope: 'tenant-1' };
/** Shaped as a prom-client Registry (checked by shape): no metric is registered in these tests. */
const registry: unknown = { registerMetric: (): void => undefined, metrics: (): string => '' };
afterAll(() => pool.end());

function configErrorOf(options: unknown): { message: string; option: unknown } {
  try {
    resolveRouteOptions(options as IdempotentOptions);
  } catch (error) {
    if (isOncelyError(error) && error.code === 'ONCELY_CONFIG')
      return { message: error.message, option: error.context.option };
    throw error;
  }
  throw new Error('expected ONCELY_CONFIG');
}

describe("an idempotent route's options", () => {
  it('resolve every default', () => {
    const settings = resolveRouteOptions(valid);
    expect(settings).toMatchObject({
      pool,
      required: true,
      ttl: 24 * 60 * 60 * 1000,
      concurrent: 'reject',
      waitTimeoutMs: 10_000,
      retryAfterSeconds: 1,
      maxBodyBytes: 1024 * 1024,
      maxResponseBytes: 1024 * 1024,
      storeServerErrors: false,
      problemTypeBase: 'urn:oncely:problem:',
      statementTimeoutMs: undefined,
      count: undefined,
    });
    expect(settings.fingerprint).toBe(defaultFingerprint);
    expect([...settings.storedHeaders]).toContain('content-type');
    expect(resolveRouteOptions({ ...valid, storedHeaders: ['X-Trace'], retryAfterSeconds: 1.2 })).toMatchObject({
      storedHeaders: new Set(['x-trace']),
      retryAfterSeconds: 2,
    });
  });

  it.each([
    ['no options at all', undefined, '', 'Invalid option `(options)`: expected an options object.'],
    ['a missing scope', { db }, 'scope', 'Invalid option `scope`: required: a well-formed string of 1–255 characters'],
    ['an empty scope', { ...valid, scope: '' }, 'scope', 'Invalid option `scope`: required'],
    ['a ttl of 0', { ...valid, ttl: 0 }, 'ttl', 'Invalid option `ttl`: expected a positive number, got 0.'],
    [
      'an unknown concurrency policy',
      { ...valid, concurrent: 'queue' },
      'concurrent',
      "Invalid option `concurrent`: expected 'reject' or 'wait', got queue.",
    ],
    [
      'a negative statement timeout',
      { ...valid, statementTimeoutMs: -5 },
      'statementTimeoutMs',
      'Invalid option `statementTimeoutMs`: expected a number of milliseconds (0: none), got -5.',
    ],
    [
      'an unknown option (a typo)',
      { ...valid, maxBodyByte: 10 },
      'maxBodyByte',
      'Invalid option `maxBodyByte`: unknown option; did you mean `maxBodyBytes`?',
    ],
    [
      'an unknown admission option',
      { ...valid, admission: { queueTimeout: 10 } },
      'admission.queueTimeout',
      'Invalid option `admission.queueTimeout`: unknown option; did you mean `queueTimeoutMs`?',
    ],
    [
      'a route label too long for a metric',
      {
        ...valid,
        metrics: { registry, route: 'x'.repeat(101) },
      },
      'metrics.route',
      'Invalid option `metrics.route`: must be a fixed route name of at most 100 characters',
    ],
  ])('refuse %s, naming the option and the fix', (_name, options, option, message) => {
    const error = configErrorOf(options);
    expect(error.message).toContain(message);
    expect(error.option).toBe(option);
  });

  it("leave the admission values to the pool's checks", () => {
    expect(configErrorOf({ ...valid, admission: { connections: 9 } })).toMatchObject({
      option: 'admission.connections',
      message: expect.stringContaining("more than the pool's max (4)") as unknown,
    });
  });
});
