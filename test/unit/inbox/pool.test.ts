import type pg from 'pg';
import { describe, expect, it } from 'vitest';

import { hasErrorCode } from '../../../src/errors.js';
import { acquireWithin, withPooledClient } from '../../../src/inbox/pool.js';

/** A pool whose connect() resolves when the test says so, counting releases. */
function slowPool(): { pool: pg.Pool; give(): void; released: number } {
  const state = { released: 0, give: () => undefined as void };
  const client = {
    release: () => {
      state.released++;
    },
    on: () => client,
    off: () => client,
    query: () => Promise.resolve({ rows: [] }),
  };
  const pool = {
    options: { max: 1 },
    totalCount: 1,
    idleCount: 0,
    waitingCount: 1,
    connect: () =>
      new Promise((resolve) => {
        state.give = () => resolve(client);
      }),
  } as unknown as pg.Pool;
  return {
    pool,
    give: () => state.give(),
    get released() {
      return state.released;
    },
  };
}

describe('bounded waits for a pooled connection', () => {
  it('gives up after its bound with ONCELY_POOL_EXHAUSTED (retriable), naming who waited', async () => {
    const { pool } = slowPool();
    const error = await acquireWithin(pool, 30, 'recording step "charge"').catch((e: unknown) => e);
    expect(hasErrorCode(error, 'ONCELY_POOL_EXHAUSTED')).toBe(true);
    expect(error).toMatchObject({ retriable: true, context: { purpose: 'recording step "charge"', max: 1 } });
  });

  it('hands a connection that arrives after the bound straight back to the pool', async () => {
    const slow = slowPool();
    await acquireWithin(slow.pool, 10, 'a test').catch(() => undefined);
    slow.give();
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(slow.released).toBe(1);
  });

  it('runs the work on a connection that came in time and releases it after', async () => {
    const slow = slowPool();
    const result = withPooledClient(slow.pool, 1_000, 'a test', async () => 42);
    slow.give();
    expect(await result).toBe(42);
    expect(slow.released).toBe(1);
  });
});
