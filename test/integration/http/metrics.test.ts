import { randomUUID } from 'node:crypto';

import { sql } from 'drizzle-orm';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { IdempotentContext } from '../../../src/index.js';
import { gate, startServer, useHttpDatabase, type TestServer } from './support.js';

const database = useHttpDatabase();
const registry = new Registry();
let held: ReturnType<typeof gate> | undefined;
let entered: ReturnType<typeof gate> | undefined;
let server: TestServer;

async function pay(request: Request, ctx: IdempotentContext): Promise<Response> {
  const body = (await request.json()) as { amountCents: number };
  await ctx.tx.execute(
    sql`INSERT INTO http_payments (idem_key, account_id, amount_cents, status)
        VALUES (${ctx.key ?? null}, 'a', ${body.amountCents}, 'captured')`,
  );
  entered?.open();
  await held?.promise;
  return Response.json({ ok: true }, { status: 201 });
}

beforeAll(async () => {
  server = await startServer('express', database.db, [
    { path: '/v1/payments', options: { metrics: { registry, route: 'create-payment' } }, handler: pay },
  ]);
});
afterAll(async () => {
  await server.close();
});

const post = (key: string, amountCents: number): Promise<Response> =>
  fetch(`${server.url}/v1/payments`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-api-key': 'acct-1' },
    body: JSON.stringify({ amountCents }),
  });

async function count(outcome: string): Promise<number | undefined> {
  const metric = await registry.getSingleMetric('oncely_idempotency_requests_total')?.get();
  return metric?.values.find((v) => v.labels.outcome === outcome && v.labels.route === 'create-payment')?.value;
}

describe('idempotency metrics', () => {
  it('count created, replayed, conflict and mismatch per route, never labelled by key or scope', async () => {
    const key = randomUUID();
    expect((await post(key, 100)).status).toBe(201);
    expect((await post(key, 100)).headers.get('idempotent-replayed')).toBe('true');
    expect((await post(key, 999)).status).toBe(422);
    held = gate();
    entered = gate();
    const other = randomUUID();
    const first = post(other, 5);
    // The first request is in its handler, holding the key's lock: the second one is a conflict.
    await entered.promise;
    const second = await post(other, 5);
    held.open();
    expect((await first).status).toBe(201);
    expect(second.status).toBe(409);

    expect(await count('created')).toBe(2);
    expect(await count('replayed')).toBe(1);
    expect(await count('mismatch')).toBe(1);
    expect(await count('conflict')).toBe(1);
    const text = await registry.metrics();
    expect(text).not.toContain(key);
    expect(text).not.toContain('acct-1');
  });
});
