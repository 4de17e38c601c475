/**
 * What this database can do at most, measured in the same run as the variants, so a reader sees
 * how close each variant comes: the commit rate (what bounds per-message transactions: every
 * commit waits for a WAL flush) and the batched insert rate (what bounds batch transactions).
 */
import { performance } from 'node:perf_hooks';

import pg from 'pg';

import { BENCH_SCHEMA } from './workload.js';

export interface DatabaseLimits {
  /** One connection looping BEGIN; INSERT one row; COMMIT. */
  readonly commitsPerSecond1: number;
  /** Four connections doing the same at once: what WAL group commit gives four partitions. */
  readonly commitsPerSecond4: number;
  /** One connection inserting 500-row unnest batches, one transaction each. */
  readonly batchedRowsPerSecond: number;
  readonly seconds: number;
}

const TABLE = `${BENCH_SCHEMA}.limits`;

export async function measureDatabaseLimits(databaseUrl: string, seconds: number): Promise<DatabaseLimits> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  pool.on('error', () => undefined);
  try {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS ${BENCH_SCHEMA};
      DROP TABLE IF EXISTS ${TABLE};
      CREATE TABLE ${TABLE} (message_id text NOT NULL, account_id text NOT NULL, amount_cents bigint NOT NULL,
                             created_at timestamptz NOT NULL DEFAULT now())`);
    const commitsPerSecond1 = await commitRate(pool, 1, seconds);
    const commitsPerSecond4 = await commitRate(pool, 4, seconds);
    const batchedRowsPerSecond = await batchedInsertRate(pool, seconds);
    await pool.query(`DROP TABLE ${TABLE}`);
    return { commitsPerSecond1, commitsPerSecond4, batchedRowsPerSecond, seconds };
  } finally {
    await pool.end();
  }
}

/** Commits per second of `connections` connections, each looping one-row transactions. */
async function commitRate(pool: pg.Pool, connections: number, seconds: number): Promise<number> {
  const clients = await Promise.all(Array.from({ length: connections }, () => pool.connect()));
  try {
    // synchronous_commit is the server's (on): each COMMIT returns only after its WAL is flushed.
    const started = performance.now();
    const deadline = started + seconds * 1000;
    const counts = await Promise.all(
      clients.map(async (client, c) => {
        let n = 0;
        while (performance.now() < deadline) {
          await client.query('BEGIN');
          await client.query(`INSERT INTO ${TABLE} (message_id, account_id, amount_cents) VALUES ($1, $2, $3)`, [
            `limit-${c}-${n}`,
            'acct-1',
            n,
          ]);
          await client.query('COMMIT');
          n++;
        }
        return n;
      }),
    );
    const elapsed = (performance.now() - started) / 1000;
    return counts.reduce((a, b) => a + b, 0) / elapsed;
  } finally {
    for (const client of clients) client.release();
  }
}

/** Rows per second inserting 500-row batches through unnest, one transaction per batch. */
async function batchedInsertRate(pool: pg.Pool, seconds: number): Promise<number> {
  const size = 500;
  const client = await pool.connect();
  try {
    let rows = 0;
    const started = performance.now();
    const deadline = started + seconds * 1000;
    while (performance.now() < deadline) {
      const ids = Array.from({ length: size }, (_, i) => `batch-${rows + i}`);
      const accounts = ids.map((_, i) => `acct-${i % 1000}`);
      const amounts = ids.map((_, i) => 100 + i);
      await client.query('BEGIN');
      await client.query(
        `INSERT INTO ${TABLE} (message_id, account_id, amount_cents)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])`,
        [ids, accounts, amounts],
      );
      await client.query('COMMIT');
      rows += size;
    }
    return rows / ((performance.now() - started) / 1000);
  } finally {
    client.release();
  }
}

export interface PostgresSettings {
  readonly version: string;
  readonly synchronous_commit: string;
  readonly fsync: string;
  readonly wal_sync_method: string;
  readonly shared_buffers: string;
  readonly max_connections: string;
}

export async function postgresSettings(pool: pg.Pool): Promise<PostgresSettings> {
  const show = async (name: string): Promise<string> => {
    const { rows } = await pool.query<Record<string, string>>(`SHOW ${name}`);
    return Object.values(rows[0] ?? {})[0] ?? '?';
  };
  return {
    version: await show('server_version'),
    synchronous_commit: await show('synchronous_commit'),
    fsync: await show('fsync'),
    wal_sync_method: await show('wal_sync_method'),
    shared_buffers: await show('shared_buffers'),
    max_connections: await show('max_connections'),
  };
}
