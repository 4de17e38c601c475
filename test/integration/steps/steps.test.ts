import { sql } from 'drizzle-orm';
import pg from 'pg';
import { getTableConfig } from 'drizzle-orm/pg-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  createStepRunner,
  defineBatchHandler,
  defineHandler,
  hasErrorCode,
  purgeSteps,
  retryDeadLetter,
  stepsTable,
  type StoredError,
} from '../../../src/index.js';
import { spawnFixture } from '../../support/child.js';
import { recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';
import { callProvider, type PaymentProvider, startPaymentProvider } from '../../support/payment-provider.js';
import { type Charge, chargeHandler, twoChargesThenFail } from './charge-handler.js';
import { compensationIdempotencyKey, stepIdempotencyKey } from '../../../src/steps/runner.js';
import { loadMessageSteps } from '../../../src/steps/store.js';

const env = useTestEnvironment();
const fastRetry = { initialDelayMs: 10, maxDelayMs: 50, jitter: 0 };

let provider: PaymentProvider;
beforeEach(async () => {
  provider = await startPaymentProvider();
});
afterEach(async () => {
  await provider.close();
});

const chargeCalls = (): number => provider.calls.filter((c) => c.path === '/charges').length;
const refundCalls = (): number => provider.calls.filter((c) => c.path === '/refunds').length;

async function stepRows(scope: string): Promise<{ owner_id: string; name: string; status: string; result: unknown }[]> {
  const { rows } = await env.pool.query<{ owner_id: string; name: string; status: string; result: unknown }>(
    'SELECT owner_id, name, status, result FROM oncely.steps WHERE scope = $1 ORDER BY seq',
    [scope],
  );
  return rows;
}

describe('steps (ctx.step)', () => {
  it('works with a destructured ctx: tx, step, publish, message, messageId, attempt and log as plain members', async () => {
    const topic = await env.createTopic('steps-destructure');
    const groupId = env.groupId('steps-destructure');
    await env.produce(topic, [{ value: JSON.stringify({ order: 7 }), headers: { 'message-id': 'order-7' } }]);
    const seen: unknown[] = [];
    const handler = defineHandler({
      topic,
      // Destructured on purpose: ctx's step and publish are functions of the attempt, not methods.
      async handle(_event, { tx, step, publish, message, messageId, attempt, log }) {
        const charge = await step('charge', async ({ idempotencyKey }) => ({ idempotencyKey }));
        await publish({ topic: 'orders.charged', key: messageId, value: charge });
        await tx.execute(sql`SELECT 1`);
        log.debug('charged');
        seen.push(message.offset, messageId, attempt);
      },
    });
    const consumer = env.consumer({ groupId, handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('the outcome', () => outcomes.total === 1);
    expect(outcomes.processed).toHaveLength(1);
    expect(seen).toEqual(['0', 'order-7', 1]);
    expect((await stepRows(groupId)).map((r) => [r.name, r.status])).toEqual([['charge', 'completed']]);
    const { rows } = await env.pool.query<{ topic: string; causation_id: string }>(
      'SELECT topic, causation_id FROM oncely.outbox WHERE causation_id = $1',
      ['order-7'],
    );
    expect(rows).toEqual([{ topic: 'orders.charged', causation_id: 'order-7' }]);
  });

  it('G9: a consumer killed after the provider charged but before the step was recorded charges once', async () => {
    const topic = await env.createTopic('steps-kill');
    const groupId = env.groupId('steps-kill');
    // The first charge is made, but its answer never comes: the step cannot be recorded.
    provider.plan('/charges', 'process-then-hang');
    await env.produce(topic, [{ value: JSON.stringify({ order: 1 }), headers: { 'message-id': 'order-1' } }]);
    const child = spawnFixture('step-consumer.ts', {
      KAFKA_BROKERS: env.brokers.join(','),
      DATABASE_URL: env.databaseUrl,
      TOPIC: topic,
      GROUP_ID: groupId,
      PROVIDER_URL: provider.url,
    });
    await provider.whenProcessed('/charges');
    await child.kill('SIGKILL');
    expect(await stepRows(groupId)).toEqual([]);

    // Another member takes the partition over; the message comes again and its step runs again.
    const consumer = env.consumer({ groupId, handlers: [chargeHandler(topic, provider.url)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('the redelivered message processed', () => outcomes.processed.length === 1);

    expect(chargeCalls()).toBe(2);
    // Both calls carried the same key, so the provider made one charge.
    expect(new Set(provider.calls.map((c) => c.idempotencyKey))).toEqual(
      new Set([stepIdempotencyKey(groupId, 'order-1', 'charge')]),
    );
    expect(provider.charges.size).toBe(1);
    expect(await env.effectsOf(topic)).toHaveLength(1);
    expect((await stepRows(groupId)).map((r) => r.name)).toEqual(['charge']);
  });

  it('G9: a handler that fails after its charge step is retried without calling the charge again', async () => {
    const topic = await env.createTopic('steps-retry');
    const groupId = env.groupId('steps-retry');
    const seen: Charge[] = [];
    const consumer = env.consumer({
      groupId,
      retry: { attempts: 3, ...fastRetry },
      handlers: [
        chargeHandler(topic, provider.url, (ctx, charge) => {
          seen.push(charge);
          if (ctx.attempt < 3) throw new Error('the ledger write failed after the charge');
        }),
      ],
    });
    const outcomes = recordOutcomes(consumer);
    await env.produce(topic, [{ value: '{}', headers: { 'message-id': 'order-2' } }]);
    await consumer.start();
    await waitFor('the message processed', () => outcomes.processed.length === 1);

    expect(outcomes.processed[0]?.attempts).toBe(3);
    expect(chargeCalls()).toBe(1);
    expect(provider.charges.size).toBe(1);
    // Every attempt got the recorded charge back.
    expect(new Set(seen.map((c) => c.id)).size).toBe(1);
    expect(seen).toHaveLength(3);
    expect(await env.effectsOf(topic)).toHaveLength(1);
  });

  it('G9: a commit group rolled back by a neighbour re-runs its handlers without calling a completed step again', async () => {
    const topic = await env.createTopic('steps-group');
    const groupId = env.groupId('steps-group');
    const runs: string[] = [];
    const consumer = env.consumer({
      groupId,
      retry: { attempts: 2, ...fastRetry },
      handlers: [
        chargeHandler(topic, provider.url, (ctx) => {
          runs.push(ctx.messageId);
          // The last order of the group fails after its charge: the whole group rolls back.
          if (ctx.messageId === 'order-c') throw new Error('the ledger refused order-c');
        }),
      ],
    });
    const outcomes = recordOutcomes(consumer);
    await env.produce(
      topic,
      ['order-a', 'order-b', 'order-c'].map((id) => ({ value: '{}', headers: { 'message-id': id } })),
    );
    await consumer.start();
    await waitFor('three outcomes', () => outcomes.total === 3);
    await provider.whenProcessed('/refunds', 1);

    // order-a and order-b ran again after the rollback of order-c's group (unless a loaded
    // machine made the group's 100 ms bound cut it before order-c: then they committed alone) ...
    expect(outcomes.processed.map((p) => p.messageId)).toEqual(['order-a', 'order-b']);
    expect(runs.filter((id) => id === 'order-c')).toHaveLength(2);
    expect(runs.filter((id) => id !== 'order-c').length).toBeGreaterThanOrEqual(2);
    // ... but every charge was called once: the re-runs replayed the recorded steps.
    expect(chargeCalls()).toBe(3);
    expect(provider.charges.size).toBe(3);
    // Only the dead-lettered order was refunded.
    expect(refundCalls()).toBe(1);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['order-a', 'order-b']);
  });

  it('G9: a commit group reads its members’ recorded steps after its claim: a charge an earlier process completed is not called again', async () => {
    const topic = await env.createTopic('steps-group-read');
    const groupId = env.groupId('steps-group-read');
    const consumer = env.consumer({ groupId, handlers: [chargeHandler(topic, provider.url)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    // A first message shows the consumer that this handler steps: its later groups read their
    // members' steps in one statement, right after their claim.
    await env.produce(topic, [{ value: '{}', headers: { 'message-id': 'order-v' } }]);
    await waitFor('the first message processed', () => outcomes.processed.length === 1);
    // An earlier process charged order-x and recorded the step, then died before its commit.
    await env.pool.query(
      `INSERT INTO oncely.steps (scope, owner_id, name, result, compensable) VALUES ($1, 'order-x', 'charge', $2, true)`,
      [groupId, JSON.stringify({ id: 'ch_earlier', amountCents: 1250 })],
    );
    await env.produce(
      topic,
      ['order-w', 'order-x', 'order-y'].map((id) => ({ value: '{}', headers: { 'message-id': id } })),
    );
    await waitFor('four messages processed', () => outcomes.processed.length === 4);

    // order-v, order-w and order-y were charged; order-x's recorded charge was used, not made again.
    expect(chargeCalls()).toBe(3);
    const applied = await env.effectsOf(topic);
    const x = applied.find((r) => r.messageId === 'order-x');
    expect((x?.payload as { charge?: Charge } | undefined)?.charge?.id).toBe('ch_earlier');
    expect(applied.map((r) => r.messageId)).toEqual(['order-v', 'order-w', 'order-x', 'order-y']);
  });

  it('G9: a group reads its members’ steps ahead only on a READ COMMITTED connection: under a higher default isolation its snapshot would predate the claim’s wait', async () => {
    const groupId = env.groupId('steps-isolation');
    await env.pool.query(
      `INSERT INTO oncely.steps (scope, owner_id, name, result) VALUES ($1, 'order-i', 'charge', '{}')`,
      [groupId],
    );
    const read: Record<string, number | undefined> = {};
    for (const level of ['read committed', 'repeatable read']) {
      const client = new pg.Client({
        connectionString: env.databaseUrl,
        options: `-c default_transaction_isolation=${level.replace(' ', '\\ ')}`,
      });
      await client.connect();
      try {
        await client.query('BEGIN');
        read[level] = (await loadMessageSteps(client, groupId, ['order-i', 'order-j']))?.size;
        await client.query('ROLLBACK');
      } finally {
        await client.end();
      }
    }
    // Read committed: order-i's step, read. Repeatable read: no read, each member reads alone.
    expect(read).toEqual({ 'read committed': 1, 'repeatable read': undefined });
  });

  it('G9: a message dead-lettered after its charge is refunded once, a failing refund retried', async () => {
    const topic = await env.createTopic('steps-refund');
    const groupId = env.groupId('steps-refund');
    // The first refund fails: the compensation is retried, and still refunds once.
    provider.plan('/refunds', 'fail');
    const consumer = env.consumer({
      groupId,
      retry: { attempts: 2, ...fastRetry },
      handlers: [
        chargeHandler(topic, provider.url, () => {
          throw new Error('the order cannot be booked');
        }),
      ],
    });
    const outcomes = recordOutcomes(consumer);
    await env.produce(topic, [{ value: '{}', headers: { 'message-id': 'order-3' } }]);
    await consumer.start();
    await waitFor('the message dead-lettered', () => outcomes.deadLettered.length === 1);

    expect(chargeCalls()).toBe(1);
    expect(refundCalls()).toBe(2);
    expect(provider.refunds.size).toBe(1);
    const [refund] = [...provider.refunds.values()];
    expect(refund?.chargeId).toBe([...provider.charges.values()][0]?.id);
    expect(provider.calls.at(-1)?.idempotencyKey).toBe(compensationIdempotencyKey(groupId, 'order-3', 'charge'));
    const { rows } = await env.pool.query<{ error: StoredError }>(
      'SELECT error FROM oncely.dead_letters WHERE consumer_group = $1',
      [groupId],
    );
    expect(rows[0]?.error.compensation).toEqual({ compensated: ['charge'], failed: [], unknown: [] });
    expect((await stepRows(groupId)).map((r) => r.name)).toEqual(['charge', 'compensate:', 'compensate:charge']);
  });

  it('G9: a consumer killed mid-compensation is resumed by the next one without refunding twice', async () => {
    const topic = await env.createTopic('steps-kill-compensation');
    const groupId = env.groupId('steps-kill-compensation');
    // Compensation runs newest first: charge-b's refund answers, charge-a's is made and then hangs.
    provider.plan('/refunds', 'ok', 'process-then-hang');
    await env.produce(topic, [{ value: '{}', headers: { 'message-id': 'order-7' } }]);
    const child = spawnFixture('step-consumer.ts', {
      KAFKA_BROKERS: env.brokers.join(','),
      DATABASE_URL: env.databaseUrl,
      TOPIC: topic,
      GROUP_ID: groupId,
      PROVIDER_URL: provider.url,
      HANDLER: 'two-charges-then-fail',
      RETRY_ATTEMPTS: '2',
    });
    await provider.whenProcessed('/refunds', 2);
    await child.kill('SIGKILL');
    expect(
      await env.pool.query('SELECT 1 FROM oncely.dead_letters WHERE consumer_group = $1', [groupId]),
    ).toMatchObject({ rowCount: 0 });

    const consumer = env.consumer({
      groupId,
      retry: { attempts: 2, ...fastRetry },
      handlers: [twoChargesThenFail(topic, provider.url)],
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('the message dead-lettered', () => outcomes.deadLettered.length === 1);

    // The handler re-ran only to replay its recorded steps: no charge was called again.
    expect(chargeCalls()).toBe(2);
    // charge-b's refund was recorded and not called again; charge-a's was called again with its key.
    expect(refundCalls()).toBe(3);
    expect(provider.refunds.size).toBe(2);
    const { rows } = await env.pool.query<{ error: StoredError }>(
      'SELECT error FROM oncely.dead_letters WHERE consumer_group = $1',
      [groupId],
    );
    expect(rows[0]?.error.compensation).toEqual({ compensated: ['charge-b', 'charge-a'], failed: [], unknown: [] });
  });

  it('G9: a refund that keeps failing is recorded on the dead letter, after the retry policy', async () => {
    const topic = await env.createTopic('steps-refund-fails');
    const groupId = env.groupId('steps-refund-fails');
    provider.plan('/refunds', 'fail', 'fail');
    const consumer = env.consumer({
      groupId,
      retry: { attempts: 2, ...fastRetry },
      handlers: [
        chargeHandler(topic, provider.url, () => {
          throw new Error('the order cannot be booked');
        }),
      ],
    });
    const outcomes = recordOutcomes(consumer);
    await env.produce(topic, [{ value: '{}', headers: { 'message-id': 'order-4' } }]);
    await consumer.start();
    await waitFor('the message dead-lettered', () => outcomes.deadLettered.length === 1);

    expect(refundCalls()).toBe(2);
    expect(provider.refunds.size).toBe(0);
    const { rows } = await env.pool.query<{ error: StoredError }>(
      'SELECT error FROM oncely.dead_letters WHERE consumer_group = $1',
      [groupId],
    );
    expect(rows[0]?.error.compensation).toEqual({
      compensated: [],
      failed: [{ step: 'charge', attempts: 2, error: { name: 'Error', message: 'provider answered 503 to /refunds' } }],
      unknown: [],
    });
    const failed = (await stepRows(groupId)).find((r) => r.name === 'compensate:charge');
    expect(failed?.status).toBe('failed');
  });

  it('G9: a step name repeated in one handler run fails at once, before its function runs', async () => {
    const topic = await env.createTopic('steps-repeat');
    const groupId = env.groupId('steps-repeat');
    let failure: unknown;
    const consumer = env.consumer({
      groupId,
      retry: { attempts: 3, ...fastRetry },
      handlers: [
        defineHandler({
          topic,
          async handle(_event, ctx) {
            const charge = ({ idempotencyKey }: { idempotencyKey: string }) =>
              callProvider(provider.url, '/charges', { amountCents: 100 }, { idempotencyKey });
            await ctx.step('charge', charge);
            await ctx.step('charge', charge).catch((error: unknown) => {
              failure = error;
              throw error;
            });
          },
        }),
      ],
    });
    const outcomes = recordOutcomes(consumer);
    await env.produce(topic, [{ value: '{}', headers: { 'message-id': 'order-5' } }]);
    await consumer.start();
    await waitFor('the message to get its outcome', () => outcomes.total === 1);
    expect(outcomes.deadLettered).toHaveLength(1);

    expect(hasErrorCode(failure, 'ONCELY_CONFIG')).toBe(true);
    // A bug in the handler, not a failure to retry: dead-lettered on its first attempt.
    expect(outcomes.deadLettered[0]?.attempts).toBe(1);
    expect(chargeCalls()).toBe(1);
  });

  it('G9: batch handlers step per event, and a retried chunk calls no completed step again', async () => {
    const topic = await env.createTopic('steps-batch');
    const groupId = env.groupId('steps-batch');
    let attempts = 0;
    const consumer = env.consumer({
      groupId,
      mode: 'batch',
      retry: { attempts: 3, ...fastRetry },
      handlers: [
        defineBatchHandler({
          topic,
          async handleBatch(events, ctx) {
            attempts += 1;
            for (const event of events) {
              await ctx.step(event, 'charge', ({ idempotencyKey }) =>
                callProvider<Charge>(provider.url, '/charges', { amountCents: 1 }, { idempotencyKey }),
              );
            }
            if (ctx.attempt === 1) throw new Error('the chunk failed after its charges');
          },
        }),
      ],
    });
    const outcomes = recordOutcomes(consumer);
    await env.produce(
      topic,
      [1, 2, 3].map((n) => ({ value: '{}', headers: { 'message-id': `batch-${n}` } })),
    );
    await consumer.start();
    await waitFor('the chunk processed', () => outcomes.processed.length === 3);

    expect(attempts).toBeGreaterThanOrEqual(2);
    expect(chargeCalls()).toBe(3);
    expect(new Set(provider.calls.map((c) => c.idempotencyKey))).toEqual(
      new Set([1, 2, 3].map((n) => stepIdempotencyKey(groupId, `batch-${n}`, 'charge'))),
    );
  });

  it('G9: a batch message dead-lettered after its charge is refunded once; its neighbours are charged once', async () => {
    const topic = await env.createTopic('steps-batch-refund');
    const groupId = env.groupId('steps-batch-refund');
    const consumer = env.consumer({
      groupId,
      mode: 'batch',
      retry: { attempts: 2, ...fastRetry },
      handlers: [
        defineBatchHandler({
          topic,
          async handleBatch(events, ctx) {
            for (const event of events) {
              await ctx.step(
                event,
                'charge',
                ({ idempotencyKey }) =>
                  callProvider<Charge>(provider.url, '/charges', { amountCents: 1 }, { idempotencyKey }),
                {
                  compensate: (charge, { idempotencyKey }) =>
                    callProvider(provider.url, '/refunds', { chargeId: charge.id }, { idempotencyKey }),
                },
              );
              if (event.messageId === 'poison') throw new Error('this order cannot be booked');
            }
          },
        }),
      ],
    });
    const outcomes = recordOutcomes(consumer);
    await env.produce(
      topic,
      ['good-1', 'poison', 'good-2'].map((id) => ({ value: '{}', headers: { 'message-id': id } })),
    );
    await consumer.start();
    await waitFor('every message with its outcome', () => outcomes.total === 3);

    expect(outcomes.processed.map((o) => o.messageId).sort()).toEqual(['good-1', 'good-2']);
    expect(outcomes.deadLettered.map((o) => o.messageId)).toEqual(['poison']);
    expect(chargeCalls()).toBe(3);
    expect(refundCalls()).toBe(1);
    expect(provider.calls.find((c) => c.path === '/refunds')?.idempotencyKey).toBe(
      compensationIdempotencyKey(groupId, 'poison', 'charge'),
    );
  });

  it('G9: a dead letter retried by hand replays its completed steps instead of calling them again', async () => {
    const topic = await env.createTopic('steps-redrive');
    const groupId = env.groupId('steps-redrive');
    let bookable = false;
    const handler = defineHandler({
      topic,
      async handle(_event, ctx) {
        // No compensate: a dead letter keeps its charge, to be booked when the cause is fixed.
        await ctx.step('charge', ({ idempotencyKey }) =>
          callProvider<Charge>(provider.url, '/charges', { amountCents: 1 }, { idempotencyKey }),
        );
        if (!bookable) throw new Error('the ledger is closed');
      },
    });
    const consumer = env.consumer({ groupId, retry: { attempts: 1 }, handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    await env.produce(topic, [{ value: '{}', headers: { 'message-id': 'order-8' } }]);
    await consumer.start();
    await waitFor('the message dead-lettered', () => outcomes.deadLettered.length === 1);
    const { rows } = await env.pool.query<{ id: string }>(
      'SELECT id FROM oncely.dead_letters WHERE consumer_group = $1',
      [groupId],
    );

    bookable = true;
    const result = await retryDeadLetter({ db: env.db, handlers: [handler] }, rows[0]?.id ?? '');
    expect(result.outcome).toBe('processed');
    expect(chargeCalls()).toBe(1);
  });
});

describe('createStepRunner (framework-neutral)', () => {
  it('G9: a step recorded inside a transaction that rolls back stays recorded and is not run again', async () => {
    const scope = env.groupId('http-scope');
    const client = await env.pool.connect();
    let calls = 0;
    try {
      await client.query('BEGIN');
      const runner = createStepRunner({ pool: env.pool, scope, ownerId: 'key-1' });
      const first = await runner.step('charge', ({ idempotencyKey }) => {
        calls += 1;
        return { key: idempotencyKey, at: new Date(0), skipped: undefined };
      });
      expect(first).toEqual({ key: stepIdempotencyKey(scope, 'key-1', 'charge'), at: '1970-01-01T00:00:00.000Z' });
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    const retry = createStepRunner({ pool: env.pool, scope, ownerId: 'key-1' });
    const again = await retry.step('charge', () => {
      calls += 1;
      return 'called again';
    });
    expect(again).toEqual({ key: stepIdempotencyKey(scope, 'key-1', 'charge'), at: '1970-01-01T00:00:00.000Z' });
    expect(await retry.step('nothing', () => undefined)).toBeNull();
    expect(calls).toBe(1);
    // A result JSON cannot hold is refused, not stored as something else.
    await expect(retry.step('bigint', () => 10n)).rejects.toMatchObject({ code: 'ONCELY_CONFIG' });
  });

  it('G9: a compensation interrupted by a crash resumes without repeating a finished one', async () => {
    const scope = env.groupId('resume');
    const undone: string[] = [];
    const attempt = async (runner: ReturnType<typeof createStepRunner>, crashOn?: string): Promise<void> => {
      for (const name of ['reserve', 'charge']) {
        await runner.step(name, () => ({ name }), {
          compensate: (result) => {
            if (result.name === crashOn) throw new Error('killed mid-compensation');
            undone.push(result.name);
          },
        });
      }
    };
    const first = createStepRunner({ pool: env.pool, scope, ownerId: 'order-6' });
    await attempt(first, 'reserve');
    // `charge` is undone and recorded; `reserve` fails (stands in for a crash before its record).
    const partial = await first.compensate({ attempts: 1 });
    expect(partial.compensated).toEqual(['charge']);
    expect(undone).toEqual(['charge']);

    // The message comes again: its handler re-runs, completed steps replay (no calls), and it gives up.
    const second = createStepRunner({ pool: env.pool, scope, ownerId: 'order-6' });
    await attempt(second);
    expect(() => second.assertNotCompensating()).toThrow(/being compensated/);
    await expect(second.step('new-step', () => 1)).rejects.toMatchObject({ code: 'ONCELY_NON_RETRIABLE' });
    const report = await second.compensate({ attempts: 1 });
    expect(report).toEqual({ compensated: ['charge', 'reserve'], failed: [], unknown: [], stopped: false });
    expect(undone).toEqual(['charge', 'reserve']);
  });

  it('G9: purgeSteps deletes expired steps but keeps those of a message whose inbox row is kept or whose dead letter is open', async () => {
    const scope = env.groupId('purge');
    for (const owner of ['old-gone', 'old-kept', 'old-dead', 'fresh']) {
      await createStepRunner({ pool: env.pool, scope, ownerId: owner }).step('charge', () => owner);
    }
    await env.pool.query(
      `UPDATE oncely.steps SET completed_at = now() - interval '10 days' WHERE scope = $1 AND owner_id <> 'fresh'`,
      [scope],
    );
    await env.pool.query(
      `INSERT INTO oncely.inbox (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at)
       VALUES ($1, 'old-kept', 't', 0, 0, decode(repeat('00', 32), 'hex'), 'processed', 1, now())`,
      [scope],
    );
    // An old dead letter, still open: `oncely dead-letters retry` may run its handler again.
    await env.pool.query(
      `INSERT INTO oncely.dead_letters (consumer_group, topic, partition, "offset", message_id, reason, error, attempts, created_at)
       VALUES ($1, 't', 0, 1, 'old-dead', 'handler_failed', '{}', 5, now() - interval '10 days')`,
      [scope],
    );
    const deleted = await purgeSteps(env.pool, { olderThan: 7 * 24 * 3600_000, batchSize: 1 });
    expect(deleted).toBe(1);
    expect((await stepRows(scope)).map((r) => r.owner_id).sort()).toEqual(['fresh', 'old-dead', 'old-kept']);
  });

  it('purgeSteps keeps old steps of an HTTP key generation that is still stored, and deletes those of a gone one', async () => {
    const scope = env.groupId('purge-http');
    for (const [owner, generation] of [
      ['key-live', 1_000_001n],
      ['key-gone', 1_000_002n],
    ] as const) {
      await createStepRunner({ pool: env.pool, scope, ownerId: owner, generation }).step('charge', () => owner);
    }
    await env.pool.query(
      `INSERT INTO oncely.idempotency_keys (scope, key, generation, status, request_fingerprint, method, path, expires_at)
       VALUES ($1, 'key-live', 1000001, 'in_progress', decode(repeat('00', 32), 'hex'), 'POST', '/x', now() + interval '1 day')`,
      [scope],
    );
    await env.pool.query(`UPDATE oncely.steps SET completed_at = now() - interval '10 days' WHERE scope = $1`, [scope]);
    expect(await purgeSteps(env.pool, { olderThan: 7 * 24 * 3600_000 })).toBeGreaterThanOrEqual(1);
    // The live generation's request may still be retried: its recovery point stays with its key.
    expect((await stepRows(scope)).map((r) => r.owner_id)).toEqual(['key-live']);
  });

  it('matches the exported stepsTable to the migrated columns', async () => {
    const config = getTableConfig(stepsTable);
    const { rows } = await env.pool.query<{ column_name: string; is_nullable: string }>(
      `SELECT column_name, is_nullable FROM information_schema.columns
        WHERE table_schema = 'oncely' AND table_name = $1`,
      [config.name],
    );
    expect(config.columns.map((c) => [c.name, c.notNull ? 'NO' : 'YES']).sort()).toEqual(
      rows.map((r) => [r.column_name, r.is_nullable]).sort(),
    );
  });
});
