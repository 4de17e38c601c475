import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';

import { httpEventId } from '../../../src/outbox/message-id.js';
import { idempotent, stepIdempotencyKey } from '../../../src/index.js';
import { useTestEnvironment } from '../../support/integration.js';

const env = useTestEnvironment();

const post = (key: string, body: unknown, scope = 'caller-1') =>
  new Request('http://api.test/v1/payments', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-scope': scope },
    body: JSON.stringify(body),
  });

async function generationOf(scope: string, key: string): Promise<bigint> {
  const { rows } = await env.pool.query<{ generation: string }>(
    'SELECT generation::text FROM oncely.idempotency_keys WHERE scope = $1 AND key = $2',
    [scope, key],
  );
  return BigInt(rows[0]?.generation ?? '0');
}

async function outboxRows(topic: string): Promise<{ message_id: string }[]> {
  const { rows } = await env.pool.query<{ message_id: string }>(
    'SELECT message_id FROM oncely.outbox WHERE topic = $1 ORDER BY id',
    [topic],
  );
  return rows;
}

describe('ctx.publish and ctx.step in idempotent HTTP handlers', () => {
  it('G7 G8: publishes through the outbox once per key, under ids that a rolled-back run reuses and another caller never shares', async () => {
    const topic = `http-events-${Date.now()}`;
    let failFirst = true;
    const route = idempotent(
      { db: env.db, scope: (request) => request.headers.get('x-scope') ?? '' },
      async (_request, ctx) => {
        await ctx.publish({ topic, key: 'acct-1', value: { n: 1 } });
        await ctx.publish({ topic, key: 'acct-1', value: { n: 2 } });
        if (failFirst) {
          failFirst = false;
          throw new Error('card processor timed out'); // rolls the events back with everything else
        }
        return Response.json({ ok: true }, { status: 201 });
      },
    );
    await expect(route(post('k-1', { amount: 5 }))).rejects.toThrow('card processor timed out');
    expect(await outboxRows(topic)).toEqual([]);

    expect((await route(post('k-1', { amount: 5 }))).status).toBe(201);
    const replayed = await route(post('k-1', { amount: 5 }));
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    const first = (await outboxRows(topic)).map((r) => r.message_id);
    const generation = await generationOf('caller-1', 'k-1');
    // The ids of the key's generation, the same the rolled-back run used.
    expect(first).toEqual([
      httpEventId('caller-1', 'k-1', generation, 0),
      httpEventId('caller-1', 'k-1', generation, 1),
    ]);

    expect((await route(post('k-1', { amount: 5 }, 'caller-2'))).status).toBe(201);
    const all = (await outboxRows(topic)).map((r) => r.message_id);
    expect(all).toHaveLength(4);
    expect(new Set(all).size).toBe(4);
  });

  it('G9: a step in an HTTP handler is called once per key across a failed run and its retry, with a stable key', async () => {
    const calls: string[] = [];
    let failAfterCharge = true;
    const route = idempotent({ db: env.db, scope: 'shop' }, async (_request, ctx) => {
      const charge = await ctx.step('charge', ({ idempotencyKey }) => {
        calls.push(idempotencyKey);
        return { chargeId: `ch_${calls.length}` };
      });
      if (failAfterCharge) {
        failAfterCharge = false;
        throw new Error('lost the answer after charging');
      }
      return Response.json(charge, { status: 201 });
    });
    await expect(route(post('order-7', {}))).rejects.toThrow('lost the answer');
    const retried = await route(post('order-7', {}));
    expect(await retried.json()).toEqual({ chargeId: 'ch_1' });
    expect(calls).toEqual([stepIdempotencyKey('shop', 'order-7', 'charge', await generationOf('shop', 'order-7'))]);
  });

  it('G7 G8: a ctx kept past its request refuses publish, step and tx with ONCELY_ATTEMPT_ENDED, and nothing of it commits elsewhere', async () => {
    const topic = `http-late-${Date.now()}`;
    let kept: Parameters<Parameters<typeof idempotent>[1]>[1] | undefined;
    const route = idempotent({ db: env.db, scope: 'late' }, (_request, ctx) => {
      kept = ctx;
      return Response.json({ ok: true }, { status: 201 });
    });
    expect((await route(post('late-1', { n: 1 }))).status).toBe(201);
    const late = kept;
    if (late === undefined) throw new Error('the handler did not run');
    // Another request now holds the pooled connection the first one used.
    const other = idempotent({ db: env.db, scope: 'late' }, async () => {
      const refused = await Promise.allSettled([
        late.publish({ topic, value: { late: true } }),
        late.step('charge', () => 'charged late'),
        late.tx.execute('SELECT 1'),
      ]);
      return Response.json(
        // drizzle wraps a refused query's error: its cause carries the code.
        refused.map((r) =>
          r.status === 'rejected'
            ? ((r.reason as { code?: string; cause?: { code?: string } }).code ??
              (r.reason as { cause?: { code?: string } }).cause?.code)
            : 'accepted',
        ),
        { status: 201 },
      );
    });
    const answer = await other(post('late-2', { n: 2 }));
    expect(await answer.json()).toEqual(['ONCELY_ATTEMPT_ENDED', 'ONCELY_ATTEMPT_ENDED', 'ONCELY_ATTEMPT_ENDED']);
    expect(await outboxRows(topic)).toEqual([]);
  });

  it('G7: a handler that ends the transaction itself (ROLLBACK hidden after a statement) fails the request and stores no response', async () => {
    const route = idempotent({ db: env.db, scope: 'txc' }, async (_request, ctx) => {
      await ctx.tx.execute(sql.raw('SELECT 1; ROLLBACK'));
      return Response.json({ ok: true }, { status: 201 });
    });
    await expect(route(post('txc-1', {}))).rejects.toMatchObject({ code: 'ONCELY_TX_CONTROL' });
    const { rows } = await env.pool.query<{ status: string }>(
      "SELECT status FROM oncely.idempotency_keys WHERE scope = 'txc' AND key = 'txc-1'",
    );
    expect(rows.map((r) => r.status)).not.toContain('completed');
  });
});
