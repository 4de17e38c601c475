/**
 * G7 over real HTTP: the idempotent core through the Express and the Fastify adapter, each a real
 * server on a free port, against a real PostgreSQL. Every semantic is checked in the database, not
 * only in the responses.
 */
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';

import { sql } from 'drizzle-orm';
import { getTableConfig } from 'drizzle-orm/pg-core';
import express from 'express';
import { idempotent as expressIdempotent } from 'oncely/express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { idempotencyKeysTable, purgeExpiredIdempotencyKeys, type IdempotentContext } from '../../../src/index.js';
import { waitFor } from '../../support/integration.js';
import { gate, startServer, useHttpDatabase, type Framework, type TestServer } from './support.js';

const database = useHttpDatabase();

interface PaymentRequest {
  readonly accountId: string;
  readonly amountCents: number;
  /** How the handler answers: created (default), a thrown error, a declined card, an outage, a huge body. */
  readonly behaviour?: 'throw' | 'decline' | 'unavailable' | 'huge';
}

/** Handler runs per route, counted in memory (the database counts only committed ones). */
const executions = new Map<string, number>();
let held: { readonly promise: Promise<void>; open(): void } | undefined;

async function createPayment(request: Request, ctx: IdempotentContext): Promise<Response> {
  const body = (await request.json()) as PaymentRequest;
  // The header lets a test fail one attempt and retry the very same request (headers are not part
  // of the fingerprint; another body would be another request, 422).
  const behaviour = (request.headers.get('x-behaviour') as PaymentRequest['behaviour'] | null) ?? body.behaviour;
  const path = new URL(request.url).pathname;
  executions.set(path, (executions.get(path) ?? 0) + 1);
  const status = behaviour === 'decline' ? 'declined' : 'captured';
  const result = await ctx.tx.execute<{ id: string }>(
    sql`INSERT INTO http_payments (idem_key, account_id, amount_cents, status)
        VALUES (${ctx.key ?? null}, ${body.accountId}, ${body.amountCents}, ${status}) RETURNING id`,
  );
  const id = result.rows[0]?.id ?? '';
  await held?.promise;
  if (behaviour === 'throw') throw new Error('the card processor connection dropped');
  if (behaviour === 'decline') {
    return Response.json({ type: 'card_declined', paymentId: id }, { status: 402 });
  }
  if (behaviour === 'unavailable') return Response.json({ error: 'processor unavailable' }, { status: 503 });
  if (behaviour === 'huge') return new Response('x'.repeat(4096), { status: 201 });
  return Response.json(
    // A random token: a replay that ran the handler again could not return these bytes.
    { id, amountCents: body.amountCents, token: randomUUID() },
    { status: 201, headers: { location: `/v1/payments/${id}`, 'x-request-trace': randomUUID() } },
  );
}

const ROUTES = [
  { path: '/v1/payments', handler: createPayment },
  { path: '/v1/waiting', options: { concurrent: 'wait' as const, waitTimeoutMs: 30_000 }, handler: createPayment },
  { path: '/v1/optional', options: { required: false }, handler: createPayment },
  { path: '/v1/small', options: { maxBodyBytes: 256, maxResponseBytes: 1024 }, handler: createPayment },
];

async function paymentsWithKey(key: string): Promise<number> {
  const { rows } = await database.pool.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM http_payments WHERE idem_key = $1',
    [key],
  );
  return rows[0]?.n ?? 0;
}

/** The responses stored for a key (completed generations), by scope. */
async function storedKeys(key: string): Promise<{ scope: string; response_status: number }[]> {
  const { rows } = await database.pool.query<{ scope: string; response_status: number }>(
    "SELECT scope, response_status FROM oncely.idempotency_keys WHERE key = $1 AND status = 'completed' ORDER BY scope",
    [key],
  );
  return rows;
}

/** The key's rows still in progress: bound to their first request, no response stored. */
async function keysInProgress(key: string): Promise<string[]> {
  const { rows } = await database.pool.query<{ scope: string }>(
    "SELECT scope FROM oncely.idempotency_keys WHERE key = $1 AND status = 'in_progress' ORDER BY scope",
    [key],
  );
  return rows.map((r) => r.scope);
}

describe.each<Framework>(['express', 'fastify'])('idempotent routes on %s', (framework) => {
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
    {
      key,
      apiKey = 'caller-a',
      raw,
      behaviour,
    }: { key?: string; apiKey?: string; raw?: string; behaviour?: PaymentRequest['behaviour'] } = {},
  ): Promise<Response> =>
    fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-api-key': apiKey,
        ...(key === undefined ? {} : { 'idempotency-key': key }),
        ...(behaviour === undefined ? {} : { 'x-behaviour': behaviour }),
      },
      body: raw ?? JSON.stringify(body),
    });

  const problemType = async (response: Response): Promise<string> => {
    expect(response.headers.get('content-type')).toBe('application/problem+json');
    return ((await response.json()) as { type: string }).type;
  };

  it('G7: runs the handler once and replays the stored response byte for byte with Idempotent-Replayed', async () => {
    const key = randomUUID();
    const first = await post('/v1/payments', { accountId: 'acct-1', amountCents: 1200 }, { key });
    const firstBody = Buffer.from(await first.arrayBuffer());
    expect(first.status).toBe(201);
    expect(first.headers.get('idempotent-replayed')).toBeNull();

    const retries = [];
    for (let i = 0; i < 3; i++)
      retries.push(await post('/v1/payments', { accountId: 'acct-1', amountCents: 1200 }, { key }));
    for (const retry of retries) {
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(retry.headers.get('location')).toBe(first.headers.get('location'));
      expect(retry.headers.get('content-type')).toBe(first.headers.get('content-type'));
      // Not in the allow-list: sent on first use only.
      expect(retry.headers.get('x-request-trace')).toBeNull();
      expect(Buffer.from(await retry.arrayBuffer()).equals(firstBody)).toBe(true);
    }
    expect(await paymentsWithKey(key)).toBe(1);
    expect(await storedKeys(key)).toEqual([{ scope: 'caller-a', response_status: 201 }]);
  });

  it('G7: refuses the same key with another request (422 idempotency_key_reused) and runs nothing', async () => {
    const key = randomUUID();
    expect((await post('/v1/payments', { accountId: 'acct-2', amountCents: 500 }, { key })).status).toBe(201);
    const reused = await post('/v1/payments', { accountId: 'acct-2', amountCents: 50_000 }, { key });
    expect(reused.status).toBe(422);
    expect(await problemType(reused)).toBe('urn:oncely:problem:idempotency_key_reused');
    // Another path with the key is another request too.
    const otherPath = await post('/v1/small', { accountId: 'acct-2', amountCents: 500 }, { key });
    expect(otherPath.status).toBe(422);
    expect(await paymentsWithKey(key)).toBe(1);
  });

  it('G7: treats JSON bodies that differ only in member order and whitespace as the same request', async () => {
    const key = randomUUID();
    expect((await post('/v1/payments', null, { key, raw: '{"accountId":"acct-3","amountCents":700}' })).status).toBe(
      201,
    );
    const retry = await post('/v1/payments', null, { key, raw: '{ "amountCents": 700,\n  "accountId": "acct-3" }' });
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(await paymentsWithKey(key)).toBe(1);
  });

  it('G7: 100 concurrent requests with one key run the handler exactly once; the other 99 get 409 with Retry-After', async () => {
    const key = randomUUID();
    executions.set('/v1/payments', 0);
    held = gate();
    try {
      const settled: Response[] = [];
      const requests = Array.from({ length: 100 }, () =>
        post('/v1/payments', { accountId: 'acct-4', amountCents: 900 }, { key }).then((response) => {
          settled.push(response);
          return response;
        }),
      );
      // The first request holds the key (its handler waits on the gate) until all others were refused.
      await waitFor('99 requests refused while the first runs', () => settled.length >= 99, { timeoutMs: 60_000 });
      held.open();
      const responses = await Promise.all(requests);
      const statuses = responses.map((r) => r.status).sort();
      expect(statuses.filter((s) => s === 201)).toHaveLength(1);
      expect(statuses.filter((s) => s === 409)).toHaveLength(99);
      const conflict = responses.find((r) => r.status === 409);
      expect(conflict?.headers.get('retry-after')).toBe('1');
      expect(await problemType(conflict!)).toBe('urn:oncely:problem:idempotency_key_in_use');
    } finally {
      held.open();
      held = undefined;
    }
    expect(executions.get('/v1/payments')).toBe(1);
    expect(await paymentsWithKey(key)).toBe(1);
  });

  it('G7: with concurrent wait, 100 concurrent requests with one key run once and the other 99 replay its response', async () => {
    const key = randomUUID();
    executions.set('/v1/waiting', 0);
    held = gate();
    let responses: Response[];
    try {
      const requests = Array.from({ length: 100 }, () =>
        post('/v1/waiting', { accountId: 'acct-5', amountCents: 1500 }, { key }),
      );
      // Let the first go only once others are queued on its lock: they really wait.
      // Its own connection: the server's requests hold every connection of the shared pool.
      const observer = await database.connect();
      try {
        await waitFor('requests waiting on the key lock', async () => {
          const { rows } = await observer.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
          );
          return (rows[0]?.n ?? 0) >= 3;
        });
      } finally {
        await observer.end();
      }
      held.open();
      responses = await Promise.all(requests);
    } finally {
      held.open();
      held = undefined;
    }
    const bodies = await Promise.all(responses.map(async (r) => Buffer.from(await r.arrayBuffer()).toString('utf8')));
    expect(responses.every((r) => r.status === 201)).toBe(true);
    expect(responses.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(99);
    expect(new Set(bodies).size).toBe(1);
    expect(executions.get('/v1/waiting')).toBe(1);
    expect(await paymentsWithKey(key)).toBe(1);
  });

  it('G7: 50 concurrent retries of a finished request all get its replay, none a 409', async () => {
    const key = randomUUID();
    const first = await post('/v1/payments', { accountId: 'acct-17', amountCents: 4200 }, { key });
    const firstBody = await first.text();
    const retries = await Promise.all(
      Array.from({ length: 50 }, () => post('/v1/payments', { accountId: 'acct-17', amountCents: 4200 }, { key })),
    );
    expect(retries.map((r) => r.status)).toEqual(Array.from({ length: 50 }, () => 201));
    expect(retries.every((r) => r.headers.get('idempotent-replayed') === 'true')).toBe(true);
    expect(new Set(await Promise.all(retries.map((r) => r.text())))).toEqual(new Set([firstBody]));
    expect(await paymentsWithKey(key)).toBe(1);
  });

  it('G7: a handler that throws commits nothing and stores no response, and the retry runs it again', async () => {
    const key = randomUUID();
    const body = { accountId: 'acct-6', amountCents: 300 };
    const failed = await post('/v1/payments', body, { key, behaviour: 'throw' });
    expect(failed.status).toBe(500);
    expect(await paymentsWithKey(key)).toBe(0);
    expect(await storedKeys(key)).toEqual([]);
    // The key stays bound to this request (its generation in progress) for its retry.
    expect(await keysInProgress(key)).toEqual(['caller-a']);
    const retry = await post('/v1/payments', body, { key });
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    expect(await paymentsWithKey(key)).toBe(1);
  });

  it('G7: stores and replays a 4xx the handler returned (402 card declined) with its effects', async () => {
    const key = randomUUID();
    const body = { accountId: 'acct-7', amountCents: 100, behaviour: 'decline' };
    const declined = await post('/v1/payments', body, { key });
    expect(declined.status).toBe(402);
    const text = await declined.text();
    const replay = await post('/v1/payments', body, { key });
    expect(replay.status).toBe(402);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.text()).toBe(text);
    expect(await paymentsWithKey(key)).toBe(1);
  });

  it('G7: a 5xx the handler returned rolls its effects back and is not stored; the retry runs again', async () => {
    const key = randomUUID();
    const body = { accountId: 'acct-8', amountCents: 100 };
    const outage = await post('/v1/payments', body, { key, behaviour: 'unavailable' });
    expect(outage.status).toBe(503);
    expect(await paymentsWithKey(key)).toBe(0);
    expect(await storedKeys(key)).toEqual([]);
    const retry = await post('/v1/payments', body, { key });
    expect(retry.status).toBe(201);
    expect(await paymentsWithKey(key)).toBe(1);
  });

  it('G7: never replays a key across scopes: two callers sending the same key each run once', async () => {
    const key = randomUUID();
    const a = await post('/v1/payments', { accountId: 'acct-9', amountCents: 100 }, { key, apiKey: 'caller-a' });
    const b = await post('/v1/payments', { accountId: 'acct-9', amountCents: 100 }, { key, apiKey: 'caller-b' });
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(b.headers.get('idempotent-replayed')).toBeNull();
    expect(await b.text()).not.toBe(await a.text());
    expect(await paymentsWithKey(key)).toBe(2);
    expect((await storedKeys(key)).map((r) => r.scope)).toEqual(['caller-a', 'caller-b']);
  });

  it('G7: an expired key is treated as new and overwritten', async () => {
    const key = randomUUID();
    expect((await post('/v1/payments', { accountId: 'acct-10', amountCents: 100 }, { key })).status).toBe(201);
    await database.pool.query(
      "UPDATE oncely.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1",
      [key],
    );
    // Past its ttl the key is new: even another request with it runs (Stripe: keys expire after 24 h).
    const again = await post('/v1/payments', { accountId: 'acct-10', amountCents: 999 }, { key });
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBeNull();
    expect(await paymentsWithKey(key)).toBe(2);
    const { rows } = await database.pool.query<{ live: boolean }>(
      'SELECT expires_at > now() AS live FROM oncely.idempotency_keys WHERE key = $1',
      [key],
    );
    expect(rows).toEqual([{ live: true }]);
  });

  it('answers 400 idempotency_key_missing as problem+json when a required key is missing', async () => {
    const response = await post('/v1/payments', { accountId: 'acct-11', amountCents: 100 });
    expect(response.status).toBe(400);
    expect(await problemType(response)).toBe('urn:oncely:problem:idempotency_key_missing');
    const { rows } = await database.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM http_payments WHERE account_id = 'acct-11'",
    );
    expect(rows[0]?.n).toBe(0);
  });

  it('answers 400 idempotency_key_invalid for an empty key, a key over 255 characters and one that is not printable ASCII', async () => {
    for (const key of ['', ' ', 'k'.repeat(256), 'caf\u00e9', 'tab\there']) {
      const response = await post('/v1/payments', { accountId: 'acct-12', amountCents: 100 }, { key });
      expect(response.status, JSON.stringify(key)).toBe(400);
      expect(await problemType(response)).toBe('urn:oncely:problem:idempotency_key_invalid');
    }
    const longest = await post('/v1/payments', { accountId: 'acct-12', amountCents: 100 }, { key: 'k'.repeat(255) });
    expect(longest.status).toBe(201);
  });

  it('runs without storing anything when a route does not require a key and none is sent', async () => {
    const accountId = `acct-13-${framework}`;
    const response = await post('/v1/optional', { accountId, amountCents: 100 });
    expect(response.status).toBe(201);
    const { rows } = await database.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM http_payments WHERE account_id = $1 AND idem_key IS NULL',
      [accountId],
    );
    expect(
      await database.pool.query('SELECT 1 FROM oncely.idempotency_keys WHERE path = $1', ['/v1/optional']),
    ).toMatchObject({ rowCount: 0 });
    expect(rows[0]?.n).toBe(1);
  });

  it('answers 400 for a declared JSON body that does not parse, and stores nothing', async () => {
    const key = randomUUID();
    const response = await post('/v1/payments', null, { key, raw: '{"accountId": "acct-14", ' });
    expect(response.status).toBe(400);
    // Fastify parses JSON itself and answers its own 400 before the route runs.
    if (framework === 'express')
      expect(await problemType(response)).toBe('urn:oncely:problem:request_body_invalid_json');
    expect(await storedKeys(key)).toEqual([]);
  });

  it('answers 413 request_body_too_large for a body over maxBodyBytes, and stores nothing', async () => {
    const key = randomUUID();
    const response = await post(
      '/v1/small',
      { accountId: 'acct-15', amountCents: 100, pad: 'p'.repeat(1000) },
      { key },
    );
    expect(response.status).toBe(413);
    expect(await problemType(response)).toBe('urn:oncely:problem:request_body_too_large');
    expect(await storedKeys(key)).toEqual([]);
  });

  it('G7: a response over maxResponseBytes answers 500 response_too_large and commits nothing', async () => {
    const key = randomUUID();
    const response = await post('/v1/small', { accountId: 'acct-16', amountCents: 100, behaviour: 'huge' }, { key });
    expect(response.status).toBe(500);
    expect(await problemType(response)).toBe('urn:oncely:problem:response_too_large');
    expect(await paymentsWithKey(key)).toBe(0);
    expect(await storedKeys(key)).toEqual([]);
  });
});

describe('purgeExpiredIdempotencyKeys', () => {
  it('G7: deletes only expired keys, in batches, and reports how many', async () => {
    const scope = `purge-${randomUUID()}`;
    await database.pool.query(
      `INSERT INTO oncely.idempotency_keys
         (scope, key, request_fingerprint, method, path, response_status, response_body, expires_at)
       SELECT $1, 'k' || n, decode(repeat('00', 32), 'hex'), 'POST', '/x', 201, '\\x'::bytea,
              CASE WHEN n <= 5 THEN now() - interval '1 minute' ELSE now() + interval '1 day' END
         FROM generate_series(1, 8) AS n`,
      [scope],
    );
    const { deleted } = await purgeExpiredIdempotencyKeys(database.pool, { batchSize: 2 });
    expect(deleted).toBeGreaterThanOrEqual(5);
    const { rows } = await database.pool.query<{ key: string }>(
      'SELECT key FROM oncely.idempotency_keys WHERE scope = $1 ORDER BY key',
      [scope],
    );
    expect(rows.map((r) => r.key)).toEqual(['k6', 'k7', 'k8']);
  });
});

describe('idempotencyKeysTable', () => {
  it('matches the migrated columns of oncely.idempotency_keys', async () => {
    const config = getTableConfig(idempotencyKeysTable);
    const { rows } = await database.pool.query<{ column_name: string; is_nullable: string }>(
      `SELECT column_name, is_nullable FROM information_schema.columns
        WHERE table_schema = 'oncely' AND table_name = $1`,
      [config.name],
    );
    expect(config.columns.map((c) => [c.name, c.notNull ? 'NO' : 'YES']).sort()).toEqual(
      rows.map((r) => [r.column_name, r.is_nullable]).sort(),
    );
  });
});

describe('oncely/express behind express.json()', () => {
  it('fingerprints and replays a body a parser already read', async () => {
    const app = express();
    app.use(express.json());
    app.post('/v1/parsed', expressIdempotent({ db: database.db, scope: 'single-tenant' }, createPayment));
    const server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const key = randomUUID();
      const send = (raw: string) =>
        fetch(`http://127.0.0.1:${port}/v1/parsed`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key },
          body: raw,
        });
      const first = await send('{"accountId":"acct-18","amountCents":100}');
      expect(first.status).toBe(201);
      const replay = await send('{ "amountCents": 100, "accountId": "acct-18" }');
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(await replay.text()).toBe(await first.text());
      expect((await send('{"accountId":"acct-18","amountCents":101}')).status).toBe(422);
      expect(await paymentsWithKey(key)).toBe(1);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
