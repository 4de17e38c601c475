import { randomUUID } from 'node:crypto';

import { drizzle } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { createTransactionBinder, type OncelyDatabase } from '../../../src/inbox/database.js';
import { TransactionChain } from '../../../src/inbox/transaction.js';
import { migrate } from '../../../src/migrate/migrate.js';
import { databaseUrlFor, testPool } from '../../support/settings.js';

const database = `oncely_tx_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
let admin: pg.Pool;
let pool: pg.Pool;

beforeAll(async () => {
  admin = testPool(inject('databaseUrl'), 1);
  await admin.query(`CREATE DATABASE ${database}`);
  const url = databaseUrlFor(inject('databaseUrl'), database);
  await migrate(url);
  pool = testPool(url, 3);
  await pool.query('CREATE TABLE notes (n int)');
});

afterAll(async () => {
  await pool.end();
  await admin.query(`DROP DATABASE ${database} WITH (FORCE)`);
  await admin.end();
});

/** Every statement text sent on the pool's connections, in order. */
function recordStatements(): { texts: string[]; stop: () => void } {
  const texts: string[] = [];
  const connect = pool.connect.bind(pool);
  const spied = async (): Promise<pg.PoolClient> => {
    const client = await connect();
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: unknown }).query = (...args: unknown[]) => {
      const first = args[0];
      texts.push(typeof first === 'string' ? first : String((first as { text?: string }).text));
      return query(...args);
    };
    const release = client.release.bind(client);
    client.release = (error?: Error | boolean) => {
      (client as unknown as { query: unknown }).query = query;
      release(error);
    };
    return client;
  };
  (pool as unknown as { connect: unknown }).connect = spied;
  return { texts, stop: () => ((pool as unknown as { connect: unknown }).connect = connect) };
}

const bind = () => createTransactionBinder(drizzle(pool) as OncelyDatabase);

describe('TransactionChain', () => {
  it('sends each COMMIT with the next BEGIN when more transactions follow: one round trip fewer each', async () => {
    const spy = recordStatements();
    const chain = new TransactionChain(pool, bind());
    try {
      for (let n = 1; n <= 3; n++) {
        chain.expectMore(n < 3);
        await chain.run((t) => t.client.query('INSERT INTO notes VALUES ($1)', [n]));
      }
    } finally {
      await chain.close();
      spy.stop();
    }
    expect(spy.texts).toEqual([
      'BEGIN',
      'INSERT INTO notes VALUES ($1)',
      'COMMIT; BEGIN',
      'INSERT INTO notes VALUES ($1)',
      'COMMIT; BEGIN',
      'INSERT INTO notes VALUES ($1)',
      'COMMIT',
    ]);
    expect((await pool.query('SELECT count(*)::int AS n FROM notes WHERE n <= 3')).rows[0]).toEqual({ n: 3 });
  });

  it('reports a COMMIT that became ROLLBACK mid-chain, and the next transaction still commits', async () => {
    const chain = new TransactionChain(pool, bind());
    chain.expectMore(true);
    try {
      await expect(
        chain.run(async (t) => {
          await t.client.query('INSERT INTO notes VALUES (100)');
          await t.client.query('SELECT 1/0').catch(() => undefined); // swallowed: the transaction is aborted
        }),
      ).rejects.toMatchObject({ code: 'ONCELY_COMMIT_FAILED' });
      chain.expectMore(false);
      await chain.run((t) => t.client.query('INSERT INTO notes VALUES (101)'));
    } finally {
      await chain.close();
    }
    const { rows } = await pool.query<{ n: number }>('SELECT n FROM notes WHERE n >= 100 ORDER BY n');
    expect(rows).toEqual([{ n: 101 }]);
  });

  it('rolls back a transaction begun ahead for a message that never came, and gives the connection back', async () => {
    const chain = new TransactionChain(pool, bind());
    chain.expectMore(true);
    await chain.run((t) => t.client.query('INSERT INTO notes VALUES (200)'));
    await chain.close();
    await chain.close(); // idempotent
    expect(pool.idleCount).toBe(pool.totalCount);
    const { rows } = await pool.query<{ state: string }>(
      "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'",
    );
    expect(rows).toEqual([]);
  });

  it('continues on a fresh connection after its connection was terminated', async () => {
    const chain = new TransactionChain(pool, bind());
    chain.expectMore(true);
    try {
      let pid = 0;
      await chain.run(async (t) => {
        pid = (await t.client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid ?? 0;
      });
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      const failed = await chain.run((t) => t.client.query('INSERT INTO notes VALUES (300)')).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(Error);
      chain.expectMore(false);
      await chain.run((t) => t.client.query('INSERT INTO notes VALUES (301)'));
    } finally {
      await chain.close();
    }
    const { rows } = await pool.query<{ n: number }>('SELECT n FROM notes WHERE n >= 300 ORDER BY n');
    expect(rows).toEqual([{ n: 301 }]);
    expect(pool.idleCount).toBe(pool.totalCount);
  });
});
