/**
 * What one step costs, measured alone (not part of `npm run bench`): run with
 * `DATABASE_URL=… npx tsx bench/step-cost.ts [count]`. Makes a throwaway database, migrates it, and
 * times, sequentially on one pool:
 *   - first run: the owner's read + `fn` (a no-op) + the record (one autocommitted INSERT);
 *   - replay: the owner's read, `fn` not called (what every retry of a completed step pays);
 *   - a second step of the same run: the record only (the read is shared by the run).
 * Prints one JSON line: mean, p50 and p99 in microseconds per step.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';

import pg from 'pg';

import { createStepRunner, migrate } from '../src/index.js';

const serverUrl = process.env.DATABASE_URL;
if (serverUrl === undefined) throw new Error('set DATABASE_URL');
const count = Number(process.argv[2] ?? 2000);

const database = `oncely_stepcost_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
const admin = new pg.Client({ connectionString: serverUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${database}`);
const url = new URL(serverUrl);
url.pathname = `/${database}`;
const pool = new pg.Pool({ connectionString: url.toString(), max: 4 });

const summary = (samples: number[]) => {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) =>
    Math.round((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0) * 1000);
  return {
    meanUs: Math.round((samples.reduce((a, b) => a + b, 0) / samples.length) * 1000),
    p50Us: at(0.5),
    p99Us: at(0.99),
  };
};

try {
  await migrate(pool);
  const scope = 'bench';
  const first: number[] = [];
  const second: number[] = [];
  const replay: number[] = [];
  // Warm-up: prepared statements and pooled connections.
  for (let i = 0; i < 200; i++) {
    await createStepRunner({ pool, scope: 'warm', ownerId: `w${i}` }).step('a', () => ({ ok: true }));
  }
  for (let i = 0; i < count; i++) {
    const runner = createStepRunner({ pool, scope, ownerId: `m${i}` });
    let t = performance.now();
    await runner.step('charge', () => ({ id: `ch_${i}`, amountCents: 1250 }));
    first.push(performance.now() - t);
    t = performance.now();
    await runner.step('email', () => ({ id: `em_${i}` }));
    second.push(performance.now() - t);
  }
  for (let i = 0; i < count; i++) {
    const runner = createStepRunner({ pool, scope, ownerId: `m${i}` });
    const t = performance.now();
    await runner.step('charge', () => {
      throw new Error('a completed step must not run again');
    });
    replay.push(performance.now() - t);
  }
  process.stdout.write(
    `${JSON.stringify({
      count,
      firstStepOfRun: summary(first),
      furtherStepOfRun: summary(second),
      replayOfCompletedStep: summary(replay),
    })}\n`,
  );
} finally {
  await pool.end();
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin.end();
}
