/**
 * G7 and G9 over real HTTP, for the life of a key: bound to its request from first use, its steps
 * and events owned by its generation, its ttl counted from when its response is stored, and scopes
 * that PostgreSQL cannot confuse. Each test runs through the Express and the Fastify adapter, a
 * real server on a free port, against a real PostgreSQL and a real HTTP payment provider.
 */
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { defaultFingerprint } from '../../../src/http/fingerprint.js';
import {
  idempotent,
  purgeExpiredIdempotencyKeys,
  stepIdempotencyKey,
  type IdempotentContext,
} from '../../../src/index.js';
import { loadMigrations } from '../../../src/migrate/migrate.js';
import { databaseUrlFor, testPool } from '../../support/settings.js';
import { callProvider, startPaymentProvider, type PaymentProvider } from '../../support/payment-provider.js';
import { startServer, useHttpDatabase, type Framework, type TestServer } from './support.js';

const database = useHttpDatabase();
let provider: PaymentProvider;

beforeAll(async () => {
  provider = await startPaymentProvider();
});
afterAll(async () => {
  await provider?.close();
});

const EVENTS_TOPIC = 'http-generation-events';
/** Handler runs by key, counted in memory (the database counts only committed ones). */
const executions = new Map<string, number>();

/**
 * Charges `amountCents` at the provider in a step, records the payment, publishes
 * `payment.captured`, and answers 201. `x-behaviour: throw` throws after all that (the answer was
 * lost: everything in the transaction rolls back, the charge stays); `x-delay-ms` holds the
 * request that long before answering. Headers are not part of the fingerprint, so the same
 * request can fail once and be retried unchanged.
 */
async function chargeAndPublish(request: Request, ctx: IdempotentContext): Promise<Response> {
  const { amountCents } = (await request.json()) as { amountCents: number };
  executions.set(ctx.key ?? '', (executions.get(ctx.key ?? '') ?? 0) + 1);
  const charge = await ctx.step('charge', ({ idempotencyKey, signal }) =>
    callProvider<{ id: string; amountCents: number }>(
      provider.url,
      '/charges',
      { amountCents },
      { idempotencyKey, signal },
    ),
  );
  await ctx.tx.execute(
    sql`INSERT INTO http_payments (idem_key, account_id, amount_cents, status)
        VALUES (${ctx.key ?? null}, ${charge.id}, ${amountCents}, 'captured')`,
  );
  await ctx.publish({ topic: EVENTS_TOPIC, key: ctx.key ?? null, value: { chargeId: charge.id, amountCents } });
  await sleep(Number(request.headers.get('x-delay-ms') ?? 0));
  if (request.headers.get('x-behaviour') === 'throw') throw new Error('lost the connection after charging');
  return Response.json({ chargeId: charge.id, amountCents: charge.amountCents }, { status: 201 });
}

/** The route's scope as a decoded token claim: JSON text in `x-tenant-claim`, which may escape anything. */
const claimedTenant = (headers: Record<string, string | string[] | undefined>): string =>
  JSON.parse(String(headers['x-tenant-claim'] ?? '"anonymous"')) as string;

const ROUTES = [
  { path: '/v1/charges', handler: chargeAndPublish },
  { path: '/v1/tenant-charges', scope: claimedTenant, handler: chargeAndPublish },
  // A ttl shorter than the request: expiry must count from when the response is stored.
  {
    path: '/v1/slow-charges',
    options: { ttl: 1_000, concurrent: 'wait' as const, waitTimeoutMs: 20_000 },
    handler: chargeAndPublish,
  },
];

async function paymentsWithKey(key: string): Promise<number> {
  const { rows } = await database.pool.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM http_payments WHERE idem_key = $1',
    [key],
  );
  return rows[0]?.n ?? 0;
}

async function keyRow(
  scope: string,
  key: string,
): Promise<{ generation: bigint; status: string; live: boolean } | undefined> {
  const { rows } = await database.pool.query<{ generation: string; status: string; live: boolean }>(
    `SELECT generation::text, status, expires_at > clock_timestamp() AS live
       FROM oncely.idempotency_keys WHERE scope = $1 AND key = $2`,
    [scope, key],
  );
  const row = rows[0];
  return row === undefined ? undefined : { generation: BigInt(row.generation), status: row.status, live: row.live };
}

/** Puts the key past its ttl, as if a day had gone by. */
async function expire(key: string): Promise<void> {
  await database.pool.query(
    "UPDATE oncely.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1",
    [key],
  );
}

/** The provider keys of the charges made since `from` (an index into provider.calls). */
const chargeKeysSince = (from: number): (string | undefined)[] =>
  provider.calls
    .slice(from)
    .filter((c) => c.path === '/charges')
    .map((c) => c.idempotencyKey);

describe.each<Framework>(['express', 'fastify'])('key generations on %s', (framework) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startServer(framework, database.db, ROUTES);
  });
  afterAll(async () => {
    await server?.close();
  });

  const post = (
    path: string,
    body: unknown,
    key: string,
    headers: Record<string, string> = {},
    apiKey = `caller-${framework}`,
  ): Promise<Response> =>
    fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey, 'idempotency-key': key, ...headers },
      body: JSON.stringify(body),
    });

  it('G7: a second request with the same key and other parameters is 422 even when the first attempt threw after a step', async () => {
    const key = randomUUID();
    const from = provider.calls.length;
    const failed = await post('/v1/charges', { amountCents: 100 }, key, { 'x-behaviour': 'throw' });
    expect(failed.status).toBe(500);
    // The key was bound to { amountCents: 100 } before the charge: another amount is refused, and
    // neither gets the first request's charge nor makes one of its own.
    const other = await post('/v1/charges', { amountCents: 250 }, key);
    expect(other.status).toBe(422);
    expect(other.headers.get('content-type')).toBe('application/problem+json');
    expect(((await other.json()) as { type: string }).type).toBe('urn:oncely:problem:idempotency_key_reused');
    expect(chargeKeysSince(from)).toHaveLength(1);
    expect(await paymentsWithKey(key)).toBe(0);
    expect((await keyRow(`caller-${framework}`, key))?.status).toBe('in_progress');
  });

  it('G9: the retry of a request that threw after its step continues its generation and replays the charge', async () => {
    const key = randomUUID();
    const from = provider.calls.length;
    const failed = await post('/v1/charges', { amountCents: 120 }, key, { 'x-behaviour': 'throw' });
    expect(failed.status).toBe(500);
    const generation = (await keyRow(`caller-${framework}`, key))?.generation;
    const retry = await post('/v1/charges', { amountCents: 120 }, key);
    expect(retry.status).toBe(201);
    const charged = chargeKeysSince(from);
    expect(charged).toEqual([stepIdempotencyKey(`caller-${framework}`, key, 'charge', generation)]);
    expect(((await retry.json()) as { chargeId: string }).chargeId).toBe(provider.charges.get(charged[0] ?? '')?.id);
    expect(await keyRow(`caller-${framework}`, key)).toEqual({ generation, status: 'completed', live: true });
    expect(await paymentsWithKey(key)).toBe(1);
  });

  it('G9: a key reused after its ttl starts a new generation and charges again with a new provider key', async () => {
    const scope = `caller-${framework}`;
    const key = randomUUID();
    const from = provider.calls.length;
    const first = await post('/v1/charges', { amountCents: 100 }, key);
    expect(first.status).toBe(201);
    const firstCharge = (await first.json()) as { chargeId: string };
    const firstGeneration = (await keyRow(scope, key))?.generation;

    await expire(key);
    const second = await post('/v1/charges', { amountCents: 300 }, key);
    expect(second.status).toBe(201);
    expect(second.headers.get('idempotent-replayed')).toBeNull();
    const secondCharge = (await second.json()) as { chargeId: string; amountCents: number };
    expect(secondCharge.chargeId).not.toBe(firstCharge.chargeId);
    expect(secondCharge.amountCents).toBe(300);
    const secondGeneration = (await keyRow(scope, key))?.generation;
    expect(secondGeneration).not.toBe(firstGeneration);
    // The old generation's recovery points went with it.
    const { rows: steps } = await database.pool.query<{ generation: string }>(
      'SELECT generation::text FROM oncely.steps WHERE scope = $1 AND owner_id = $2',
      [scope, key],
    );
    expect(steps.map((s) => BigInt(s.generation))).toEqual([secondGeneration]);

    // Purged, then reused: a generation number the key never had, so a provider key never sent.
    await expire(key);
    expect((await purgeExpiredIdempotencyKeys(database.pool)).deleted).toBeGreaterThanOrEqual(1);
    expect(await keyRow(scope, key)).toBeUndefined();
    const { rows: purgedSteps } = await database.pool.query(
      'SELECT 1 FROM oncely.steps WHERE scope = $1 AND owner_id = $2',
      [scope, key],
    );
    expect(purgedSteps).toEqual([]);
    const third = await post('/v1/charges', { amountCents: 100 }, key);
    expect(third.status).toBe(201);

    const keys = chargeKeysSince(from);
    expect(keys).toHaveLength(3);
    expect(new Set(keys).size).toBe(3);
    expect(keys.slice(0, 2)).toEqual([
      stepIdempotencyKey(scope, key, 'charge', firstGeneration),
      stepIdempotencyKey(scope, key, 'charge', secondGeneration),
    ]);
    expect(await paymentsWithKey(key)).toBe(3);
  });

  it('G8: a key reused after its ttl publishes under new event ids, never colliding with the old generation', async () => {
    const key = randomUUID();
    expect((await post('/v1/charges', { amountCents: 100 }, key)).status).toBe(201);
    await expire(key);
    const again = await post('/v1/charges', { amountCents: 100 }, key);
    expect(again.status).toBe(201);
    const { rows } = await database.pool.query<{ message_id: string }>(
      "SELECT message_id FROM oncely.outbox WHERE topic = $1 AND key = convert_to($2, 'UTF8') ORDER BY id",
      [EVENTS_TOPIC, key],
    );
    expect(rows).toHaveLength(2);
    expect(new Set(rows.map((r) => r.message_id)).size).toBe(2);
  });

  it('G7: two scopes that differ by a lone surrogate are refused, never share a stored response', async () => {
    const key = randomUUID();
    const from = provider.calls.length;
    // "acme\ud800" and "acme\udbff": two strings in JavaScript, one ("acme\ufffd") in PostgreSQL.
    const first = await post('/v1/tenant-charges', { amountCents: 100 }, key, { 'x-tenant-claim': '"acme\\ud800"' });
    const second = await post('/v1/tenant-charges', { amountCents: 100 }, key, {
      'x-tenant-claim': '"acme\\udbff"',
    });
    // The scope function's bug is the server's (ONCELY_CONFIG, the framework's 500), not the client's.
    expect([first.status, second.status]).toEqual([500, 500]);
    expect(second.headers.get('idempotent-replayed')).toBeNull();
    expect(chargeKeysSince(from)).toEqual([]);
    expect(await paymentsWithKey(key)).toBe(0);
    const { rows } = await database.pool.query('SELECT scope FROM oncely.idempotency_keys WHERE key = $1', [key]);
    expect(rows).toEqual([]);
    // A well-formed claim works.
    const fine = await post('/v1/tenant-charges', { amountCents: 100 }, key, { 'x-tenant-claim': '"acme\\u00e9"' });
    expect(fine.status).toBe(201);
    expect(await keyRow('acme\u00e9', key)).toMatchObject({ status: 'completed' });
  });

  it('G9: scope acme:eu with key k1 and scope acme with key eu:k1 charge under two provider keys', async () => {
    const tenant = `acme-${randomUUID()}`;
    const key = randomUUID();
    const from = provider.calls.length;
    const a = await post('/v1/charges', { amountCents: 100 }, key, {}, `${tenant}:eu`);
    const b = await post('/v1/charges', { amountCents: 100 }, `eu:${key}`, {}, tenant);
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(b.headers.get('idempotent-replayed')).toBeNull();
    const keys = chargeKeysSince(from);
    expect(keys).toHaveLength(2);
    expect(new Set(keys).size).toBe(2);
    for (const providerKey of keys) expect(providerKey).toMatch(/^oncely-step\.charge~[A-Za-z0-9_-]{43}$/);
    expect(((await a.json()) as { chargeId: string }).chargeId).not.toBe(
      ((await b.json()) as { chargeId: string }).chargeId,
    );
  });

  it('G7: a request that runs longer than the ttl stores a live key', async () => {
    const scope = `caller-${framework}`;
    const key = randomUUID();
    const body = { amountCents: 700 };
    // ttl 1 s, the request takes 2.5 s; a retry waits for it (`concurrent: 'wait'`).
    const slow = post('/v1/slow-charges', body, key, { 'x-delay-ms': '2500' });
    await sleep(400);
    const waiter = post('/v1/slow-charges', body, key);
    await sleep(1_200);
    // Past the ttl of its first use and still running: the purge leaves it alone.
    await purgeExpiredIdempotencyKeys(database.pool);
    expect(await keyRow(scope, key)).toMatchObject({ status: 'in_progress', live: false });

    const [answered, waited] = await Promise.all([slow, waiter]);
    expect(answered.status).toBe(201);
    const text = await answered.text();
    expect(waited.status).toBe(201);
    expect(waited.headers.get('idempotent-replayed')).toBe('true');
    expect(await waited.text()).toBe(text);
    const retry = await post('/v1/slow-charges', body, key);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(await keyRow(scope, key)).toMatchObject({ status: 'completed', live: true });
    expect(executions.get(key)).toBe(1);
    expect(await paymentsWithKey(key)).toBe(1);
  });
});

describe('migration 0008 (key generations)', () => {
  it('G7: a key stored before the migration is replayed after it, and reused after its ttl as a new generation', async () => {
    const admin = new pg.Client({ connectionString: inject('databaseUrl') });
    await admin.connect();
    const database = `oncely_upgrade_${randomUUID().replaceAll('-', '').slice(0, 16)}`;
    await admin.query(`CREATE DATABASE ${database}`);
    const pool = testPool(databaseUrlFor(inject('databaseUrl'), database), 4);
    try {
      const migrations = await loadMigrations();
      const generations = migrations.find((m) => m.name === '0008_idempotency_generations');
      if (generations === undefined) throw new Error('migration 0008 not found');
      await pool.query('CREATE SCHEMA IF NOT EXISTS oncely');
      for (const migration of migrations.filter((m) => m.id < generations.id)) await pool.query(migration.sql);
      // A response stored by an earlier version: no generation, no status.
      const request = () =>
        new Request('http://api.test/v1/payments', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': 'old-key' },
          body: JSON.stringify({ amountCents: 100 }),
        });
      const material = defaultFingerprint({
        method: 'POST',
        url: new URL('http://api.test/v1/payments'),
        headers: request().headers,
        body: new TextEncoder().encode(JSON.stringify({ amountCents: 100 })),
      });
      await pool.query(
        `INSERT INTO oncely.idempotency_keys
           (scope, key, request_fingerprint, method, path, response_status, response_headers, response_body, expires_at)
         VALUES ('shop', 'old-key', $1, 'POST', '/v1/payments', 201, '[["content-type","application/json"]]',
                 convert_to('{"stored":"before the upgrade"}', 'UTF8'), now() + interval '1 day')`,
        [createHash('sha256').update(material).digest()],
      );
      await pool.query(generations.sql);

      let runs = 0;
      const route = idempotent({ db: drizzle(pool), scope: 'shop' }, () => {
        runs += 1;
        return Response.json({ stored: 'after the upgrade' }, { status: 201 });
      });
      const replayed = await route(request());
      expect(replayed.headers.get('idempotent-replayed')).toBe('true');
      expect(await replayed.json()).toEqual({ stored: 'before the upgrade' });
      expect(runs).toBe(0);

      await pool.query("UPDATE oncely.idempotency_keys SET expires_at = now() - interval '1 second'");
      const before = await pool.query<{ generation: string }>('SELECT generation::text FROM oncely.idempotency_keys');
      const fresh = await route(request());
      expect(await fresh.json()).toEqual({ stored: 'after the upgrade' });
      const after = await pool.query<{ generation: string; status: string }>(
        'SELECT generation::text, status FROM oncely.idempotency_keys',
      );
      expect(after.rows).toHaveLength(1);
      expect(after.rows[0]?.status).toBe('completed');
      expect(BigInt(after.rows[0]?.generation ?? '0')).toBeGreaterThan(BigInt(before.rows[0]?.generation ?? '0'));
    } finally {
      await pool.end();
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await admin.end();
    }
  });
});
