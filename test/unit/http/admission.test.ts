import pg from 'pg';
import { describe, expect, it } from 'vitest';

import { AdmissionGate, poolReadiness, resolveAdmission } from '../../../src/http/admission.js';
import { bodyParserRefusal, fastifyRefusal } from '../../../src/http/framework-errors.js';

/** A pool that is never connected: the gate only reads its options and counts. */
const poolOf = (max: number): pg.Pool => new pg.Pool({ max });

describe('AdmissionGate', () => {
  it('admits up to its capacity in connections, then queues in order and admits as permits come back', async () => {
    const gate = new AdmissionGate(4, 10);
    const a = gate.acquire(2, 1_000);
    const b = gate.acquire(2, 1_000);
    expect(a).toBeDefined();
    expect(b).toBeDefined();
    const order: string[] = [];
    const c = Promise.resolve(gate.acquire(2, 1_000)).then((p) => (order.push('c'), p));
    const d = Promise.resolve(gate.acquire(1, 1_000)).then((p) => (order.push('d'), p));
    expect(gate.status()).toMatchObject({ inUse: 4, queued: 2 });
    (a as { release(): void }).release();
    expect(await c).toBeDefined();
    // d needs one connection and none is free: it waits behind c, it does not overtake it.
    (b as { release(): void }).release();
    expect(await d).toBeDefined();
    expect(order).toEqual(['c', 'd']);
    expect(gate.status()).toMatchObject({ inUse: 3, queued: 0, refused: 0 });
  });

  it('refuses a request that waited past its bound, and one beyond the queue at once', async () => {
    const gate = new AdmissionGate(2, 1);
    const held = gate.acquire(2, 1_000);
    expect(held).toBeDefined();
    const waiting = gate.acquire(2, 50);
    expect(gate.acquire(2, 1_000)).toBeUndefined();
    expect(await waiting).toBeUndefined();
    expect(gate.status()).toMatchObject({ inUse: 2, queued: 0, refused: 2 });
  });

  it('gives a permit back once, however often it is released', () => {
    const gate = new AdmissionGate(2, 1);
    const permit = gate.acquire(2, 1_000) as { release(): void };
    permit.release();
    permit.release();
    expect(gate.status().inUse).toBe(0);
  });
});

describe('resolveAdmission', () => {
  it('shares one gate per pool, of the pool’s max by default', () => {
    const pool = poolOf(20);
    const first = resolveAdmission(pool, undefined);
    const second = resolveAdmission(pool, { connectionsPerRequest: 1 });
    expect(first.gate).toBe(second.gate);
    expect(first.gate.capacity).toBe(20);
    expect(first).toMatchObject({ connectionsPerRequest: 2, queueTimeoutMs: 5_000 });
  });

  it('refuses options that cannot work, naming the option', () => {
    expect(() => resolveAdmission(poolOf(4), { connections: 5 })).toThrow(/admission\.connections/);
    expect(() => resolveAdmission(poolOf(1), undefined)).toThrow(/admission\.connections/);
    expect(() => resolveAdmission(poolOf(4), { connectionsPerRequest: 3 as 2 })).toThrow(
      /admission\.connectionsPerRequest/,
    );
    expect(() => resolveAdmission(poolOf(4), { queueTimeoutMs: 0 })).toThrow(/admission\.queueTimeoutMs/);
    const shared = poolOf(8);
    resolveAdmission(shared, { connections: 6 });
    expect(() => resolveAdmission(shared, { connections: 4 })).toThrow(/every route on one pool/);
  });
});

describe('poolReadiness', () => {
  it('is ready while nothing waits, and says why not when requests wait for a turn', async () => {
    const pool = poolOf(2);
    const { gate } = resolveAdmission(pool, undefined);
    expect(poolReadiness(pool)).toMatchObject({ ready: true, reason: undefined, admission: { capacity: 2 } });
    const held = gate.acquire(2, 1_000) as { release(): void };
    const waiting = gate.acquire(2, 1_000);
    expect(poolReadiness(pool)).toMatchObject({ ready: false, admission: { queued: 1 } });
    expect(poolReadiness(pool).reason).toMatch(/wait for a turn/);
    held.release();
    (await waiting)?.release();
    expect(poolReadiness(pool).ready).toBe(true);
  });
});

describe('framework refusals', () => {
  it('maps body-parser’s refusals to problems and leaves other errors alone', () => {
    expect(bodyParserRefusal({ type: 'entity.parse.failed', status: 400 })?.problem).toBe('request_body_invalid_json');
    expect(bodyParserRefusal({ type: 'entity.too.large', status: 413 })?.problem).toBe('request_body_too_large');
    expect(bodyParserRefusal({ type: 'charset.unsupported', status: 415 })?.problem).toBe('request_body_unsupported');
    expect(bodyParserRefusal({ type: 'request.size.invalid', status: 400 })?.problem).toBe('request_invalid');
    expect(bodyParserRefusal(new Error('a handler bug'))).toBeUndefined();
  });

  it('maps Fastify’s content-type parser errors to problems and leaves other errors alone', () => {
    expect(fastifyRefusal({ code: 'FST_ERR_CTP_EMPTY_JSON_BODY', statusCode: 400 })?.problem).toBe(
      'request_body_invalid_json',
    );
    expect(fastifyRefusal({ code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 })?.problem).toBe(
      'request_body_too_large',
    );
    expect(fastifyRefusal({ code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', statusCode: 415 })?.problem).toBe(
      'request_body_unsupported',
    );
    expect(fastifyRefusal(Object.assign(new SyntaxError('Unexpected end'), { statusCode: 400 }))?.problem).toBe(
      'request_body_invalid_json',
    );
    expect(fastifyRefusal(Object.assign(new Error('not found'), { statusCode: 404 }))).toBeUndefined();
  });
});
