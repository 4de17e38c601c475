import { drizzle } from 'drizzle-orm/node-postgres';
import { describe, expect, it } from 'vitest';

import { publish } from '../../../src/index.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';
import { readTopic, testRelay } from './support.js';

const env = useTestEnvironment();

describe('the outbox relay', () => {
  it('G8: never sends an event whose transaction rolled back', async () => {
    const source = await env.createTopic('ob-src');
    const out = await env.createTopic('ob-out');
    // Outside a consumer: a rolled-back transaction's event never exists.
    await drizzle(env.pool)
      .transaction(async (tx) => {
        await publish(tx, { topic: out, key: 'k', value: { n: 'rolled-back' } });
        throw new Error('the request failed after publishing');
      })
      .catch(() => undefined);
    await drizzle(env.pool).transaction(async (tx) => {
      await publish(tx, { topic: out, key: 'k', value: { n: 'committed' } }, { messageId: 'request-1' });
    });
    // Inside a handler: the first attempt publishes and then fails; only the retry's commit counts.
    let attempts = 0;
    const consumer = env.consumer({
      groupId: env.groupId('ob-rollback'),
      handlers: [
        effectHandler(source, async (ctx) => {
          await ctx.publish({ topic: out, key: 'k', value: { n: 'from-handler', attempt: ctx.attempt } });
          if (++attempts === 1) throw new Error('ledger service down');
        }),
      ],
      retry: { attempts: 3, initialDelayMs: 10, maxDelayMs: 10 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await env.produce(source, [
      {
        ...jsonMessage('payment-1', { amount: 5 }),
        headers: { 'message-id': 'payment-1', traceparent: '00-abc-def-01' },
      },
    ]);
    await waitFor('the message processed', () => outcomes.processed.length === 1);
    await testRelay({ db: env.db, kafka: env.kafka }).start();

    const received = await readTopic(env.kafka, out, (r) => r.length >= 2);
    // Give a wrongly sent third event the chance to arrive.
    await waitFor('every row sent', async () => {
      const { rows } = await env.pool.query("SELECT 1 FROM oncely.outbox WHERE topic = $1 AND status = 'pending'", [
        out,
      ]);
      return rows.length === 0;
    });
    expect(received.map((r) => JSON.parse(r.value ?? 'null') as unknown)).toEqual([
      { n: 'committed' },
      { n: 'from-handler', attempt: 2 },
    ]);
    expect(received[1]?.headers).toMatchObject({
      'message-id': 'payment-1:0',
      'causation-id': 'payment-1',
      traceparent: '00-abc-def-01',
    });
    expect(received[0]?.headers['message-id']).toBe('request-1');
    const { rows } = await env.pool.query<{ n: string }>('SELECT count(*) AS n FROM oncely.outbox WHERE topic = $1', [
      out,
    ]);
    expect(rows[0]?.n).toBe('2');
  });
});
