/**
 * `npx tsx bench/grouped-writes.ts` (not part of `npm run bench`): what a commit group's writes
 * could gain from being sent without a round trip each. A per-message handler writes one ledger
 * row per message through `ctx.tx` and awaits it; a commit group of 100 messages therefore makes
 * 100 round trips inside its transaction. This times four ways of writing the same 100 rows in one
 * transaction, on one connection, in interleaved rounds (so a busy machine slows all of them alike):
 *
 * - `drizzle, awaited`: what a grouped handler does today — one awaited drizzle INSERT per row;
 * - `pg, awaited`: the same statements through pg directly (what drizzle's own layer costs);
 * - `one round trip`: the 100 INSERTs as one multi-statement simple query (literals escaped by
 *   pg), which is what a pipelined send would save at most (node-postgres has no pipeline mode:
 *   queries handed to it at once still go one round trip each, and pg 9 will refuse them);
 * - `one statement`: one unnest INSERT of the 100 rows — what batch mode hands a handler.
 *
 * It uses DATABASE_URL when set (otherwise startDevServices), in a schema of its own.
 */
import { performance } from 'node:perf_hooks';

import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';

import { startDevServices } from '../src/dev/index.js';

const ROWS = 100;
const ROUNDS = Number(process.env.GROUPED_WRITES_ROUNDS ?? 30);
const TABLE = 'bench_grouped.ledger';

type Way = (client: pg.PoolClient, round: number) => Promise<void>;

function rowsOf(round: number): { id: string; account: string; amount: number }[] {
  return Array.from({ length: ROWS }, (_, i) => ({ id: `r${round}-${i}`, account: `acct-${i % 40}`, amount: i + 1 }));
}

const ways: Record<string, Way> = {
  'drizzle, awaited': async (client, round) => {
    const db = drizzle(client);
    for (const row of rowsOf(round)) {
      await db.execute(
        sql`INSERT INTO bench_grouped.ledger (message_id, account_id, amount_cents) VALUES (${row.id}, ${row.account}, ${row.amount})`,
      );
    }
  },
  'pg, awaited': async (client, round) => {
    for (const row of rowsOf(round)) {
      await client.query(`INSERT INTO ${TABLE} (message_id, account_id, amount_cents) VALUES ($1, $2, $3)`, [
        row.id,
        row.account,
        row.amount,
      ]);
    }
  },
  'one round trip': async (client, round) => {
    const text = rowsOf(round)
      .map(
        (row) =>
          `INSERT INTO ${TABLE} (message_id, account_id, amount_cents) VALUES (${client.escapeLiteral(row.id)}, ${client.escapeLiteral(row.account)}, ${row.amount})`,
      )
      .join(';\n');
    await client.query(text);
  },
  'one statement': async (client, round) => {
    const rows = rowsOf(round);
    await client.query(
      `INSERT INTO ${TABLE} (message_id, account_id, amount_cents) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])`,
      [rows.map((r) => r.id), rows.map((r) => r.account), rows.map((r) => r.amount)],
    );
  },
};

const services = await startDevServices();
const pool = new pg.Pool({ connectionString: services.postgres.url, max: 1 });
try {
  const client = await pool.connect();
  try {
    await client.query(`CREATE SCHEMA IF NOT EXISTS bench_grouped; DROP TABLE IF EXISTS ${TABLE};
      CREATE TABLE ${TABLE} (message_id text PRIMARY KEY, account_id text NOT NULL, amount_cents bigint NOT NULL)`);
    const seconds = new Map<string, number>(Object.keys(ways).map((name) => [name, 0]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, way] of Object.entries(ways)) {
        await client.query('BEGIN');
        const started = performance.now();
        await way(client, round);
        seconds.set(name, (seconds.get(name) ?? 0) + (performance.now() - started) / 1000);
        // Rolled back: only the writes are timed, not the commit every way shares.
        await client.query('ROLLBACK');
      }
    }
    const baseline = (ROUNDS * ROWS) / (seconds.get('drizzle, awaited') ?? 1);
    const wanted = process.argv.includes('--json');
    const results = [...seconds].map(([name, s]) => ({
      way: name,
      rowsPerSecond: Math.round((ROUNDS * ROWS) / s),
      vsDrizzleAwaited: +((ROUNDS * ROWS) / s / baseline).toFixed(2),
    }));
    if (wanted) {
      console.log(JSON.stringify({ rows: ROWS, rounds: ROUNDS, results }));
    } else {
      console.log(`${ROWS} rows per transaction, ${ROUNDS} rounds, one connection`);
      for (const r of results) {
        console.log(
          `  ${r.way.padEnd(18)} ${r.rowsPerSecond.toLocaleString('en-US').padStart(9)} rows/s  ×${r.vsDrizzleAwaited}`,
        );
      }
    }
    await client.query(`DROP SCHEMA bench_grouped CASCADE`);
  } finally {
    client.release();
  }
} finally {
  await pool.end();
  await services.stop();
}
