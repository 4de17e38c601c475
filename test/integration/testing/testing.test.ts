import { AssertionError } from 'node:assert';

import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { defineBatchHandler, defineHandler } from '../../../src/index.js';
import { deliverAdversarially, expectSameAsCleanDelivery, SCENARIOS } from '../../../src/testing/index.js';
import { effectHandler, effects, useTestEnvironment } from '../../support/integration.js';

const env = useTestEnvironment();

const messages = (topic: string, count = 12) =>
  Array.from({ length: count }, (_, i) => ({
    topic,
    key: `acct-${i % 4}`,
    value: { n: i, amountCents: 100 + i },
    headers: { 'message-id': `${topic}-m-${i}` },
  }));

/** The effects of one topic, order-insensitive across partitions: what a ledger would sum. */
const snapshotOf = (topic: string) => async () =>
  (
    await env.pool.query<{ message_id: string; payload: unknown }>(
      'SELECT message_id, payload FROM effects WHERE topic = $1 ORDER BY message_id',
      [topic],
    )
  ).rows;
const resetOf = (topic: string) => async () => {
  await env.pool.query('DELETE FROM effects WHERE topic = $1', [topic]);
};

describe('oncely/testing', () => {
  it('finds a handler that writes through ctx.tx unchanged by every adversarial scenario', async () => {
    const topic = `kit-${Date.now()}`;
    const reports = await expectSameAsCleanDelivery({
      db: env.db,
      handlers: [effectHandler(topic)],
      messages: messages(topic),
      snapshot: snapshotOf(topic),
      reset: resetOf(topic),
    });
    expect(Object.keys(reports).sort()).toEqual(['clean', ...SCENARIOS].sort());
    expect(reports.clean).toMatchObject({ delivered: 12, processed: 12 });
    expect(reports.redelivery).toMatchObject({
      delivered: 24,
      processed: 12,
      duplicates: { redelivery: 12, republish: 0 },
    });
    expect(reports.republish).toMatchObject({
      delivered: 24,
      processed: 12,
      duplicates: { redelivery: 0, republish: 12 },
    });
    expect(reports.concurrent).toMatchObject({ delivered: 24, processed: 12, duplicates: { republish: 12 } });
    expect(reports.mutated).toMatchObject({ delivered: 24, processed: 12, deadLettered: { key_reuse: 12 } });
  });

  it('works with batch handlers too', async () => {
    const topic = `kit-batch-${Date.now()}`;
    const handler = defineBatchHandler({
      topic,
      async handleBatch(events, ctx) {
        await ctx.tx.insert(effects).values(
          events.map((e) => ({
            messageId: e.messageId,
            topic,
            partition: e.message.partition,
            offset: Number(e.message.offset),
            payload: e.event,
          })),
        );
      },
    });
    const reports = await expectSameAsCleanDelivery({
      db: env.db,
      handlers: [handler],
      messages: messages(topic, 30),
      snapshot: snapshotOf(topic),
      reset: resetOf(topic),
    });
    expect(reports.concurrent?.processed).toBe(30);
  });

  it('catches a messageId() that is not stable: a re-sent event gets applied twice', async () => {
    const topic = `kit-unstable-${Date.now()}`;
    let counter = 0;
    const handler = defineHandler({
      topic,
      schema: z.object({ n: z.number() }),
      messageId: (event) => `${event.n}-${counter++}`, // a bug: differs on every delivery
      async handle(event, ctx) {
        await ctx.tx
          .insert(effects)
          .values({ messageId: ctx.messageId, topic, partition: 0, offset: 0, payload: event });
      },
    });
    const failure = await expectSameAsCleanDelivery({
      db: env.db,
      handlers: [handler],
      messages: messages(topic, 3),
      // Compares the events applied, not their (unstable) ids.
      snapshot: async () =>
        (
          await env.pool.query<{ payload: unknown }>('SELECT payload FROM effects WHERE topic = $1 ORDER BY id', [
            topic,
          ])
        ).rows,
      reset: resetOf(topic),
      scenarios: ['republish'],
    }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(AssertionError);
    expect((failure as Error).message).toContain('scenario "republish" left a different state than one clean delivery');
  });

  it('catches a handler whose result depends on the order across partitions', async () => {
    const topic = `kit-order-${Date.now()}`;
    // "Last event wins" across all accounts: Kafka orders nothing across partitions.
    await env.pool.query('CREATE TABLE IF NOT EXISTS latest (id int PRIMARY KEY, n int)');
    const handler = defineHandler({
      topic,
      schema: z.object({ n: z.number() }),
      async handle(event, ctx) {
        await ctx.tx.execute(
          sql`INSERT INTO latest VALUES (1, ${event.n}) ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n`,
        );
      },
    });
    // One interleaving may happen to end like the clean order; a few seeds will not all.
    const outcomes = [];
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      outcomes.push(
        await expectSameAsCleanDelivery({
          db: env.db,
          handlers: [handler],
          messages: messages(topic, 24),
          seed,
          snapshot: async () => (await env.pool.query<{ n: number }>('SELECT n FROM latest')).rows,
          reset: async () => void (await env.pool.query('DELETE FROM latest')),
          scenarios: ['shuffled'],
        }).then(
          () => 'same',
          (error: unknown) => (error as Error).message,
        ),
      );
    }
    expect(outcomes.some((o) => o.includes('scenario "shuffled" left a different state'))).toBe(true);
  });

  it('catches a handler that writes through the pool instead of ctx.tx: a rolled-back commit leaves its write behind', async () => {
    const topic = `kit-pool-${Date.now()}`;
    // A bug: the write goes through the pool, outside the message's transaction, so it commits
    // even when the message's transaction rolls back.
    const handler = defineHandler({
      topic,
      async handle(event, ctx) {
        await env.db
          .insert(effects)
          .values({ messageId: ctx.messageId, topic, partition: 0, offset: 0, payload: event });
      },
    });
    const failure = await expectSameAsCleanDelivery({
      db: env.db,
      handlers: [handler],
      messages: messages(topic, 4),
      snapshot: snapshotOf(topic),
      reset: resetOf(topic),
      scenarios: ['rolled-back'],
    }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(AssertionError);
    expect((failure as Error).message).toContain(
      'scenario "rolled-back" left a different state than one clean delivery',
    );
  });

  it('passes a handler that writes through ctx.tx under the rolled-back scenario, in both modes', async () => {
    const topic = `kit-tx-${Date.now()}`;
    const reports = await expectSameAsCleanDelivery({
      db: env.db,
      handlers: [effectHandler(topic)],
      messages: messages(topic, 6),
      snapshot: snapshotOf(topic),
      reset: resetOf(topic),
      scenarios: ['rolled-back'],
    });
    expect(reports['rolled-back']).toMatchObject({ delivered: 6, processed: 6 });

    const batchTopic = `kit-tx-batch-${Date.now()}`;
    let calls = 0;
    const batch = defineBatchHandler({
      topic: batchTopic,
      async handleBatch(events, ctx) {
        calls += 1;
        await ctx.tx.insert(effects).values(
          events.map((e) => ({
            messageId: e.messageId,
            topic: batchTopic,
            partition: 0,
            offset: 0,
            payload: e.event,
          })),
        );
      },
    });
    const callsAtSnapshot: number[] = [];
    const batchReports = await expectSameAsCleanDelivery({
      db: env.db,
      handlers: [batch],
      messages: messages(batchTopic, 9),
      snapshot: async () => {
        callsAtSnapshot.push(calls);
        return snapshotOf(batchTopic)();
      },
      reset: resetOf(batchTopic),
      scenarios: ['rolled-back'],
    });
    expect(batchReports['rolled-back']).toMatchObject({ delivered: 9, processed: 9 });
    // Every chunk ran twice when rolled back once: twice the handler calls of the clean delivery.
    const [clean = 0, total = 0] = callsAtSnapshot;
    expect(total - clean).toBe(2 * clean);
  });

  it('runs one scenario on its own and reports what it recorded', async () => {
    const topic = `kit-one-${Date.now()}`;
    const report = await deliverAdversarially({
      db: env.db,
      handlers: [effectHandler(topic)],
      messages: [...messages(topic, 2), { topic, value: 'not json', headers: { 'message-id': 'broken' } }],
      scenario: 'redelivery',
    });
    expect(report).toMatchObject({
      delivered: 6,
      processed: 2,
      duplicates: { redelivery: 3 },
      deadLettered: { invalid_payload: 1 },
    });
  });
});
