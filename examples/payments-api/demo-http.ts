/**
 * The HTTP act of the payments demo: clients of `POST /v1/payments` that time out, retry, reuse
 * keys and race each other, against the idempotent Fastify API — and the database's own count of
 * customers charged twice.
 *
 * `runHttpDemo({ databaseUrl })` is what `npm run demo` calls; `npx tsx examples/payments-api/demo-http.ts`
 * runs it alone (PostgreSQL from DATABASE_URL, Docker, or the machine's binaries).
 *
 * The clients:
 * - impatient: gives up after 100 ms while the server works 250 ms (the server commits anyway),
 *   then retries with the same key, honouring `Retry-After` on 409, until it gets its answer;
 * - reuse: pays, then sends the same key with another amount (a client bug): 422, nothing charged;
 * - race: four copies of one request at once (a double-clicked button): one runs, the others get
 *   409 and retry into the replay;
 * - burst: then 3× the pool's connections in first requests at once (a traffic spike): the API
 *   admits as many as its pool serves, queues the rest for up to 1 s and refuses the others with
 *   503 `server_busy` and `Retry-After`; the clients retry with the same key until answered.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'oncely';
import { seededRandom, startDevServices } from 'oncely/testing';
import pg from 'pg';

import { PAYMENTS_API_DDL } from './schema.js';
import { buildPaymentsApi } from './server.js';

export interface HttpDemoOptions {
  /** The PostgreSQL the API writes to (migrated here if needed). */
  readonly databaseUrl: string;
  /** Payment operations the clients attempt. Default 40. */
  readonly operations?: number;
  /** Seed of the client mix. Default 7. */
  readonly seed?: number;
  /** Where the report goes. Default `console.log`. */
  readonly log?: (line: string) => void;
  /** Publish each payment's `payment.captured` to this topic through the outbox. Default: none. */
  readonly eventsTopic?: string;
  /** First requests sent at once after the other clients, each with a key of its own. Default 3× the pool. */
  readonly burst?: number;
}

export interface HttpDemoReport {
  /** The prefix of this act's API keys and account ids (`<run>-acct-<n>`). */
  readonly run: string;
  readonly requests: number;
  readonly clientTimeouts: number;
  readonly executions: number;
  readonly firstUses: number;
  readonly replays: number;
  readonly conflicts409: number;
  readonly reused422: number;
  /** The burst's size, and its answers 503 `server_busy` (each retried after Retry-After). */
  readonly burst: number;
  readonly busy503: number;
  readonly paymentsCreated: number;
  readonly paymentsExpected: number;
  /** Operations (scope, key) with more than one payment row, counted in the database. */
  readonly chargedTwice: number;
  /** Operations whose stored amount is not the one first requested. */
  readonly wrongAmounts: number;
  readonly ok: boolean;
}

const SERVER_WORK_MS = 250;
const IMPATIENT_TIMEOUT_MS = 100;
const RACERS = 4;
const POOL_MAX = 12;

type Kind = 'impatient' | 'reuse' | 'race';

export async function runHttpDemo({
  databaseUrl,
  operations = 40,
  seed = 7,
  log = console.log,
  eventsTopic,
  burst = 3 * POOL_MAX,
}: HttpDemoOptions): Promise<HttpDemoReport> {
  const run = `h${randomBytes(3).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: databaseUrl, max: POOL_MAX });
  pool.on('error', () => undefined);
  const counts = {
    requests: 0,
    clientTimeouts: 0,
    executions: 0,
    firstUses: 0,
    replays: 0,
    conflicts409: 0,
    reused422: 0,
    busy503: 0,
  };
  const app = buildPaymentsApi({
    db: drizzle(pool),
    workMs: SERVER_WORK_MS,
    onExecution: () => counts.executions++,
    // A short queue, so that the burst shows its refusals (the default waits up to 5 s).
    admission: { queueTimeoutMs: 1_000 },
    ...(eventsTopic === undefined ? {} : { eventsTopic }),
  });
  try {
    await migrate(pool);
    await pool.query(PAYMENTS_API_DDL);
    const base = await app.listen({ port: 0, host: '127.0.0.1' });

    /** One HTTP attempt; undefined when the client gave up waiting. */
    const send = async (
      apiKey: string,
      key: string,
      body: unknown,
      timeoutMs: number,
    ): Promise<Response | undefined> => {
      counts.requests++;
      try {
        const response = await fetch(`${base}/v1/payments`, {
          method: 'POST',
          headers: { authorization: `Bearer ${apiKey}`, 'idempotency-key': key, 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(timeoutMs),
        });
        await response.arrayBuffer();
        if (response.status === 409) counts.conflicts409++;
        else if (response.status === 503) counts.busy503++;
        else if (response.status === 422) counts.reused422++;
        else if (response.headers.get('idempotent-replayed') === 'true') counts.replays++;
        else counts.firstUses++;
        return response;
      } catch (error) {
        if (error instanceof DOMException && error.name === 'TimeoutError') {
          counts.clientTimeouts++;
          return undefined;
        }
        throw error;
      }
    };

    /** What a well-behaved client does: the same key on every retry, Retry-After honoured on 409 and 503. */
    const payWithRetries = async (
      apiKey: string,
      key: string,
      body: unknown,
      firstTimeoutMs: number,
    ): Promise<Response> => {
      let timeoutMs = firstTimeoutMs;
      for (let attempt = 1; attempt <= 20; attempt++) {
        const response = await send(apiKey, key, body, timeoutMs);
        if (response !== undefined && response.status !== 409 && response.status !== 503) return response;
        const retryAfter = Number(response?.headers.get('retry-after') ?? '0');
        await sleep(Math.max(retryAfter * 1000, 50 * attempt));
        timeoutMs = 5_000;
      }
      throw new Error(`payment ${key} got no answer after 20 attempts`);
    };

    const next = seededRandom(seed);
    const expected = new Map<string, number>(); // `${apiKey}/${key}` → amount first requested
    const plays: Promise<unknown>[] = [];
    for (let n = 0; n < operations; n++) {
      const apiKey = `${run}-merchant-${Math.floor(next() * 4)}`;
      const key = `${run}-op-${n}`;
      const amountCents = 100 + Math.floor(next() * 99_900);
      const body = { accountId: `${run}-acct-${Math.floor(next() * 10)}`, amountCents, currency: 'EUR' };
      const roll = next();
      const kind: Kind = roll < 0.5 ? 'impatient' : roll < 0.75 ? 'reuse' : 'race';
      expected.set(`${apiKey}/${key}`, amountCents);
      plays.push(
        (async () => {
          if (kind === 'impatient') {
            await payWithRetries(apiKey, key, body, IMPATIENT_TIMEOUT_MS);
          } else if (kind === 'reuse') {
            await payWithRetries(apiKey, key, body, 5_000);
            await send(apiKey, key, { ...body, amountCents: amountCents + 1 }, 5_000);
          } else {
            await Promise.all(Array.from({ length: RACERS }, () => payWithRetries(apiKey, key, body, 5_000)));
          }
        })(),
      );
    }
    await Promise.all(plays);

    // The spike: more first requests at once than the pool has connections (two per request).
    await Promise.all(
      Array.from({ length: burst }, (_, n) => {
        const apiKey = `${run}-merchant-${n % 4}`;
        const key = `${run}-burst-${n}`;
        const amountCents = 100 + Math.floor(next() * 99_900);
        expected.set(`${apiKey}/${key}`, amountCents);
        const body = { accountId: `${run}-acct-${n % 10}`, amountCents, currency: 'EUR' };
        return payWithRetries(apiKey, key, body, 10_000);
      }),
    );

    // The verdict comes from the database, not from the counters above.
    const { rows } = await pool.query<{ api_key: string; idempotency_key: string; n: number; amounts: string[] }>(
      `SELECT api_key, idempotency_key, count(*)::int AS n, array_agg(amount_cents::text) AS amounts
         FROM payments_api.payments WHERE api_key LIKE $1 GROUP BY api_key, idempotency_key`,
      [`${run}-%`],
    );
    const paymentsCreated = rows.reduce((sum, r) => sum + r.n, 0);
    const chargedTwice = rows.filter((r) => r.n > 1).length;
    const wrongAmounts =
      rows.filter((r) => r.amounts.some((a) => Number(a) !== expected.get(`${r.api_key}/${r.idempotency_key}`)))
        .length +
      (expected.size - rows.length);
    const report: HttpDemoReport = {
      run,
      ...counts,
      paymentsCreated,
      burst,
      paymentsExpected: operations + burst,
      chargedTwice,
      wrongAmounts,
      ok: chargedTwice === 0 && wrongAmounts === 0 && paymentsCreated === operations + burst,
    };
    printReport(report, log);
    return report;
  } finally {
    await app.close();
    await pool.end();
  }
}

function printReport(report: HttpDemoReport, log: (line: string) => void): void {
  const rows: [string, number, string][] = [
    ['HTTP requests sent', report.requests, ''],
    ['  client gave up waiting (server went on)', report.clientTimeouts, ''],
    ['  answered first use (201)', report.firstUses, ''],
    ['  replayed (Idempotent-Replayed: true)', report.replays, ''],
    ['  409 idempotency_key_in_use', report.conflicts409, ''],
    ['  422 idempotency_key_reused', report.reused422, ''],
    ['  503 server_busy (burst, retried)', report.busy503, `a burst of ${report.burst} on a pool of ${POOL_MAX}`],
    ['handler executions', report.executions, `expected ${report.paymentsExpected}`],
    ['payments created', report.paymentsCreated, `expected ${report.paymentsExpected}`],
    ['wrong amounts', report.wrongAmounts, 'expected 0'],
    ['charged twice', report.chargedTwice, 'from the database'],
  ];
  const width = Math.max(...rows.map((r) => r[0].length));
  log('');
  log('HTTP: POST /v1/payments with Idempotency-Key');
  for (const [label, value, note] of rows)
    log(`${label.padEnd(width)}  ${String(value).padStart(8)}  ${note}`.trimEnd());
  log(
    report.ok
      ? 'Every payment charged exactly once despite timeouts, retries, races, reused keys and a burst.'
      : 'WRONG: see above.',
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  // Alone, the act uses a throwaway database of its own on the server, dropped afterwards.
  const services = await startDevServices();
  const admin = new pg.Client({ connectionString: services.postgres.url });
  const database = `oncely_http_demo_${randomBytes(4).toString('hex')}`;
  try {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(services.postgres.url);
    url.pathname = `/${database}`;
    const report = await runHttpDemo({ databaseUrl: url.toString() });
    process.exitCode = report.ok ? 0 : 1;
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await admin.end().catch(() => undefined);
    await services.stop();
  }
}
