/**
 * `npm run bench:http`: what the idempotent middleware costs over HTTP.
 *
 * One Fastify server, one PostgreSQL (DATABASE_URL, else a throwaway one from startDevServices),
 * a throwaway database of its own. Three measurements in one run, each with autocannon for
 * BENCH_HTTP_SECONDS (default 10) after a short warm-up, BENCH_HTTP_CONNECTIONS (default 16):
 *
 * - plain:      POST /plain — a drizzle transaction with one INSERT, no idempotency;
 * - first use:  POST /idempotent — the same INSERT through `idempotent()`, a new key per request;
 * - replay:     POST /idempotent — one key already used: every request is a replay.
 *
 * Prints requests/s and p99 latency of each, and the ratios: first use / plain (target ≥ 0.7) and
 * replay / first use. Checks itself: one row per 2xx of plain and first use, none for replays.
 *
 * Then the burst (G7 under load, issue 20): a route whose handler charges through `ctx.step` at a
 * provider double that counts charges per provider idempotency key, on a pool of its own of
 * BENCH_HTTP_BURST_POOL connections (default 10), hit by 4× that many autocannon clients for
 * BENCH_HTTP_BURST_SECONDS (default 30), each request with a key of its own. Reports requests
 * answered, refused with 503 + Retry-After, executions, provider charges and doubled; fails
 * unless every request was answered (no error, no timeout, nothing else), charges = executions and
 * doubled = 0. BENCH_HTTP_ONLY=burst runs the burst alone.
 */
import { randomBytes, randomUUID } from 'node:crypto';

import autocannon from 'autocannon';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import Fastify from 'fastify';
import { migrate, poolReadiness } from 'oncely';
import { startDevServices } from 'oncely/dev';
import { idempotent } from 'oncely/fastify';
import pg from 'pg';

import { runBurst } from '../test/support/burst-load.js';
import { callProvider, startPaymentProvider } from '../test/support/payment-provider.js';

const SECONDS = Number(process.env.BENCH_HTTP_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_HTTP_CONNECTIONS ?? 16);
const BURST_POOL = Number(process.env.BENCH_HTTP_BURST_POOL ?? 10);
const BURST_SECONDS = Number(process.env.BENCH_HTTP_BURST_SECONDS ?? 30);
const ONLY = process.env.BENCH_HTTP_ONLY;
const BODY = JSON.stringify({ accountId: 'acct-1', amountCents: 1234, currency: 'EUR' });

interface Measured {
  readonly name: string;
  readonly requestsPerSecond: number;
  readonly p99Ms: number;
  readonly ok: number;
  readonly other: number;
}

async function measure(
  name: string,
  url: string,
  seconds: number,
  headers: () => Record<string, string>,
): Promise<Measured> {
  const result = await autocannon({
    url,
    method: 'POST',
    connections: CONNECTIONS,
    duration: seconds,
    body: BODY,
    headers: { 'content-type': 'application/json', 'x-api-key': 'bench' },
    // A fresh key per request where the measurement needs one.
    requests: [{ setupRequest: (request) => ({ ...request, headers: { ...request.headers, ...headers() } }) }],
  });
  return {
    name,
    requestsPerSecond: result.requests.average,
    p99Ms: result.latency.p99,
    ok: result['2xx'],
    other: result.non2xx + result.errors + result.timeouts,
  };
}

async function main(): Promise<number> {
  const services = await startDevServices();
  const admin = new pg.Client({ connectionString: services.postgres.url });
  await admin.connect();
  const database = `oncely_bench_http_${randomBytes(4).toString('hex')}`;
  await admin.query(`CREATE DATABASE ${database}`);
  const url = new URL(services.postgres.url);
  url.pathname = `/${database}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: CONNECTIONS + 4 });
  pool.on('error', () => undefined);
  const app = Fastify({ logger: false });
  try {
    await migrate(pool);
    await pool.query(
      'CREATE TABLE bench_payments (id bigserial PRIMARY KEY, route text NOT NULL, account_id text NOT NULL, amount_cents bigint NOT NULL)',
    );
    const db = drizzle(pool);
    const insert = (route: string, body: { accountId: string; amountCents: number }) =>
      sql`INSERT INTO bench_payments (route, account_id, amount_cents) VALUES (${route}, ${body.accountId}, ${body.amountCents}) RETURNING id`;

    // Both routes do the same work: parse, one INSERT in a transaction, a small JSON answer.
    app.post('/plain', async (request, reply) => {
      const body = request.body as { accountId: string; amountCents: number };
      const result = await db.transaction(async (tx) => tx.execute<{ id: string }>(insert('plain', body)));
      return reply.code(201).send({ id: result.rows[0]?.id, amountCents: body.amountCents });
    });
    app.post(
      '/idempotent',
      idempotent({ db, scope: (request) => String(request.headers['x-api-key']) }, async (request, ctx) => {
        const body = (await request.json()) as { accountId: string; amountCents: number };
        const result = await ctx.tx.execute<{ id: string }>(insert('idempotent', body));
        return Response.json({ id: result.rows[0]?.id, amountCents: body.amountCents }, { status: 201 });
      }),
    );
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    if (ONLY === 'burst') return await burst(url.toString());

    const fresh = () => ({ 'idempotency-key': randomUUID() });
    const replayKey = randomUUID();
    const first = await fetch(`${base}/idempotent`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': 'bench', 'idempotency-key': replayKey },
      body: BODY,
    });
    if (first.status !== 201) throw new Error(`seeding the replay key answered ${first.status}`);

    // Warm-up (JIT, pool, plans), then the measurements, one after the other on the same server.
    await measure('warm-up', `${base}/plain`, 2, () => ({}));
    await measure('warm-up', `${base}/idempotent`, 2, fresh);
    const rowsBefore = await settledRows(pool);
    const plain = await measure('plain (transaction, no middleware)', `${base}/plain`, SECONDS, () => ({}));
    const firstUse = await measure('idempotent, first use (new key)', `${base}/idempotent`, SECONDS, fresh);
    const rowsMid = await settledRows(pool);
    const replay = await measure('idempotent, replay (same key)', `${base}/idempotent`, SECONDS, () => ({
      'idempotency-key': replayKey,
    }));
    const rowsAfter = await countRows(pool);

    console.log('');
    console.log(`HTTP bench: ${SECONDS} s each, ${CONNECTIONS} connections, Node ${process.version}`);
    for (const m of [plain, firstUse, replay]) {
      console.log(
        `${m.name.padEnd(36)} ${m.requestsPerSecond.toFixed(0).padStart(7)} req/s   p99 ${String(m.p99Ms).padStart(4)} ms   2xx ${m.ok}   other ${m.other}`,
      );
    }
    const overhead = firstUse.requestsPerSecond / plain.requestsPerSecond;
    console.log(`first use / plain:   ${overhead.toFixed(2)}  (target ≥ 0.70)`);
    console.log(`replay / first use:  ${(replay.requestsPerSecond / firstUse.requestsPerSecond).toFixed(2)}`);

    // The bench checks itself: every 2xx of plain and first use is one row; replays write none.
    // Requests still in flight when autocannon stops may commit without being counted: at most
    // one per connection.
    const rowsMatch = (rows: number, ok: number): boolean => rows >= ok && rows <= ok + CONNECTIONS;
    const problems = [
      !rowsMatch(rowsMid.plain - rowsBefore.plain, plain.ok) && 'plain rows',
      !rowsMatch(rowsMid.idempotent - rowsBefore.idempotent, firstUse.ok) && 'first-use rows',
      rowsAfter.idempotent !== rowsMid.idempotent && 'replays wrote rows',
      plain.other + firstUse.other + replay.other > 0 && 'non-2xx answers',
    ].filter((p): p is string => typeof p === 'string');
    if (problems.length > 0) {
      console.log(`WRONG: ${problems.join(', ')}`);
      return 1;
    }
    return await burst(url.toString());
  } finally {
    await app.close();
    await pool.end();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await services.stop();
  }
}

/**
 * The burst: 4× the pool in autocannon clients against a route with a step, each request a first
 * use. Its own pool, server and provider double; the verdict from the database and the provider.
 */
async function burst(databaseUrl: string): Promise<number> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: BURST_POOL });
  pool.on('error', () => undefined);
  const provider = await startPaymentProvider();
  const app = Fastify({ logger: false });
  const connections = 4 * BURST_POOL;
  let executions = 0;
  try {
    await pool.query(
      'CREATE TABLE IF NOT EXISTS bench_charges (id bigserial PRIMARY KEY, idem_key text NOT NULL, amount_cents bigint NOT NULL, charge_id text)',
    );
    const db = drizzle(pool);
    app.post(
      '/charges',
      idempotent({ db, scope: (request) => String(request.headers['x-api-key']) }, async (request, ctx) => {
        const body = (await request.json()) as { accountId: string; amountCents: number };
        executions++;
        const charge = await ctx.step('charge', ({ idempotencyKey, signal }) =>
          callProvider<{ id: string }>(
            provider.url,
            '/charges',
            { amountCents: body.amountCents },
            { idempotencyKey, signal },
          ),
        );
        await ctx.tx.execute(
          sql`INSERT INTO bench_charges (idem_key, amount_cents, charge_id) VALUES (${ctx.key ?? ''}, ${body.amountCents}, ${charge.id})`,
        );
        return Response.json({ chargeId: charge.id }, { status: 201 });
      }),
    );
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const tally = await runBurst({
      url: `${base}/charges`,
      connections,
      seconds: BURST_SECONDS,
      headers: { 'x-api-key': 'bench' },
    });
    // Requests in flight when autocannon stopped still finish on the server: wait until none holds
    // a turn of the pool (the admission gate's count), then count.
    await app.close();
    for (let i = 0; i < 300; i++) {
      const { admission } = poolReadiness(pool);
      if ((admission?.inUse ?? 0) === 0 && (admission?.queued ?? 0) === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const { rows } = await pool.query<{ keys: number; doubled: number; charge_ids: number }>(
      `SELECT count(*)::int AS keys, count(*) FILTER (WHERE n > 1)::int AS doubled,
              (SELECT count(DISTINCT charge_id)::int FROM bench_charges) AS charge_ids
         FROM (SELECT idem_key, count(*) AS n FROM bench_charges GROUP BY idem_key) k`,
    );
    const stored = rows[0] ?? { keys: 0, doubled: 0, charge_ids: 0 };
    const charges = provider.charges.size;
    // Doubled: a key with two payments, or a provider charge that no stored payment carries (made
    // and then lost: the "charged with nothing recorded").
    const doubled = stored.doubled + Math.max(0, charges - stored.charge_ids);
    console.log('');
    console.log(
      `HTTP burst: ${BURST_SECONDS} s, ${connections} clients = 4 × a pool of ${BURST_POOL}, ctx.step per request`,
    );
    const lines: [string, number | string][] = [
      ['requests sent', tally.sent],
      ['answered', tally.executed + tally.refusedWithRetryAfter],
      ['  executed (201)', tally.executed],
      ['  refused 503 with Retry-After', tally.refusedWithRetryAfter],
      ['  other answers', tally.otherAnswers],
      ['errors / timeouts', `${tally.errors} / ${tally.timeouts}`],
      ['handler executions', executions],
      ['payments stored', stored.keys],
      ['provider charges', charges],
      ['doubled', doubled],
      ['req/s, p99 ms', `${tally.requestsPerSecond.toFixed(0)}, ${tally.p99Ms}`],
    ];
    for (const [label, value] of lines) console.log(`${label.padEnd(32)} ${String(value).padStart(10)}`);
    const problems = [
      !tally.everyRequestAnswered && 'requests not answered',
      charges !== stored.keys && 'charges ≠ payments',
      executions !== stored.keys && 'executions ≠ payments',
      doubled !== 0 && 'doubled',
    ].filter((p): p is string => typeof p === 'string');
    if (problems.length > 0) {
      console.log(`WRONG: ${problems.join(', ')}`);
      return 1;
    }
    return 0;
  } finally {
    await app.close();
    await provider.close();
    await pool.end();
  }
}

/** The row counts once requests still in flight after a measurement have finished. */
async function settledRows(pool: pg.Pool): Promise<{ plain: number; idempotent: number }> {
  let last = await countRows(pool);
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    const now = await countRows(pool);
    if (now.plain === last.plain && now.idempotent === last.idempotent) return now;
    last = now;
  }
}

async function countRows(pool: pg.Pool): Promise<{ plain: number; idempotent: number }> {
  const { rows } = await pool.query<{ route: string; n: number }>(
    'SELECT route, count(*)::int AS n FROM bench_payments GROUP BY route',
  );
  const of = (route: string): number => rows.find((r) => r.route === route)?.n ?? 0;
  return { plain: of('plain'), idempotent: of('idempotent') };
}

process.exitCode = await main().catch((error: unknown) => {
  console.error(error);
  return 1;
});
