/**
 * Bounded waits for pooled connections (DESIGN §3a "Connections").
 *
 * `pool.connect()` and `pool.query()` wait without bound when every connection is checked out. A
 * caller that already holds a connection of the same pool (a transaction that records a step, a
 * dead letter) and waits that way can wedge the pool for good: when every holder waits for a second
 * connection, none ever returns one. Such a caller takes its second connection through
 * {@link withPooledClient}, which gives up after a bound with `ONCELY_POOL_EXHAUSTED` (retriable):
 * the caller's transaction rolls back, its connection goes back, and the pool moves again.
 */
import type pg from 'pg';

import { OncelyError } from '../errors.js';
import { poolMax } from './database.js';

/** How long a second connection is waited for by default (a few statement times, not a stall). */
export const DEFAULT_ACQUIRE_TIMEOUT_MS = 10_000;

/** What a pool looks like now: configured size, connections open, idle, and callers waiting for one. */
export interface PoolUsage {
  readonly max: number;
  readonly total: number;
  readonly idle: number;
  readonly waiting: number;
}

export function poolUsage(pool: pg.Pool): PoolUsage {
  return { max: poolMax(pool), total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount };
}

/** The error of a connection not obtained within its bound; `purpose` says who waited. */
export function poolExhaustedError(pool: pg.Pool, purpose: string, timeoutMs: number): OncelyError {
  const usage = poolUsage(pool);
  return new OncelyError(
    'ONCELY_POOL_EXHAUSTED',
    `No pooled connection for ${purpose} within ${timeoutMs} ms: all ${usage.total} of ${usage.max} are in use and ` +
      `${usage.waiting} callers wait. Each request with steps holds two connections (its transaction and one ` +
      'step record): make the pool larger than 2 × the requests served at once plus a consumer’s concurrency + 1, ' +
      'or lower the concurrency.',
    { retriable: true, context: { purpose, timeoutMs, ...usage } },
  );
}

/**
 * Checks a connection out of `pool`, waiting at most `timeoutMs`, runs `work` on it and gives it
 * back (destroyed when `work` met a broken connection). A connection that arrives after the bound
 * is returned to the pool at once, unused.
 */
export async function withPooledClient<T>(
  pool: pg.Pool,
  timeoutMs: number,
  purpose: string,
  work: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await acquireWithin(pool, timeoutMs, purpose);
  let broken: Error | undefined;
  const onError = (error: Error): void => {
    broken ??= error;
  };
  client.on('error', onError);
  try {
    return await work(client);
  } catch (error) {
    // A query error leaves the connection usable; a lost socket does not (pg marks it).
    if ((client as unknown as { _ending?: boolean })._ending === true) broken ??= error as Error;
    throw error;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}

/** `pool.connect()` with a bound: rejects with `ONCELY_POOL_EXHAUSTED` after `timeoutMs`. */
export function acquireWithin(pool: pg.Pool, timeoutMs: number, purpose: string): Promise<pg.PoolClient> {
  return new Promise<pg.PoolClient>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      reject(poolExhaustedError(pool, purpose, timeoutMs));
    }, timeoutMs);
    pool.connect().then(
      (client) => {
        if (settled) {
          // Too late: the caller has given up. Hand it straight back for the next waiter.
          client.release();
          return;
        }
        settled = true;
        clearTimeout(timer);
        resolve(client);
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
