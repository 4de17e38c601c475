import { setImmediate as nextTurn } from 'node:timers/promises';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';

import { defineBatchHandler, defineHandler } from '../../../src/index.js';
import { deliverOnce } from '../../../src/testing/index.js';
import {
  effectHandler,
  effects,
  jsonMessage,
  recordOutcomes,
  useTestEnvironment,
  waitFor,
} from '../../support/integration.js';

const env = useTestEnvironment();

// A rejection nobody awaited would end a production process; here it is caught and counted.
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
beforeEach(() => {
  unhandled.length = 0;
  process.on('unhandledRejection', onUnhandled);
});
afterEach(() => {
  process.off('unhandledRejection', onUnhandled);
});

/** Lets a rejection that nobody awaited reach the `unhandledRejection` listeners. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await nextTurn();
}

/** A schema whose async refine looks something up and throws for event `n === bad`. */
function asyncRefine(bad: number) {
  return z.object({ n: z.number() }).refine(async (event) => {
    await nextTurn();
    if (event.n === bad) throw new Error(`ledger lookup failed for n=${bad}`);
    return true;
  });
}

async function deadLetters(topic: string): Promise<{ message_id: string | null; reason: string; message: string }[]> {
  const { rows } = await env.pool.query<{ message_id: string | null; reason: string; error: { message: string } }>(
    'SELECT message_id, reason, error FROM oncely.dead_letters WHERE topic = $1 ORDER BY "offset"',
    [topic],
  );
  return rows.map((r) => ({ message_id: r.message_id, reason: r.reason, message: r.error.message }));
}

const five = (prefix: string) => Array.from({ length: 5 }, (_, n) => jsonMessage(`${prefix}-${n}`, { n }));

describe('async user code is awaited: a rejection is an outcome, never an unhandled rejection', () => {
  it('G2: a schema whose async refine throws dead-letters the message as invalid_payload and the next message runs', async () => {
    const topic = await env.createTopic('async-refine');
    await env.produce(topic, five('r'));
    const consumer = env.consumer({
      groupId: env.groupId('async-refine'),
      handlers: [effectHandler(topic, undefined, asyncRefine(2))],
      maxMessagesPerTransaction: 1,
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('five outcomes', () => outcomes.total === 5);
    await settle();

    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['r-0', 'r-1', 'r-3', 'r-4']);
    expect(await deadLetters(topic)).toEqual([
      { message_id: 'r-2', reason: 'invalid_payload', message: expect.stringContaining("The handler's schema threw") },
    ]);
    expect(unhandled).toEqual([]);
  });

  it('G2: in a commit group, an async transform that rejects dead-letters its message as invalid_payload and its neighbours are applied once', async () => {
    const topic = await env.createTopic('async-transform-group');
    await env.produce(topic, five('t'));
    const schema = z.object({ n: z.number() }).transform(async (event) => {
      await nextTurn();
      if (event.n === 3) throw new Error('exchange rate service said no');
      return { ...event, converted: true };
    });
    const consumer = env.consumer({
      groupId: env.groupId('async-transform-group'),
      handlers: [effectHandler(topic, undefined, schema)],
      maxMessagesPerTransaction: 5,
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('five outcomes', () => outcomes.total === 5);
    await settle();

    const applied = await env.effectsOf(topic);
    expect(applied.map((r) => r.messageId)).toEqual(['t-0', 't-1', 't-2', 't-4']);
    expect(applied.every((r) => (r.payload as { converted?: boolean }).converted === true)).toBe(true);
    expect(outcomes.deadLettered.map((d) => [d.messageId, d.reason])).toEqual([['t-3', 'invalid_payload']]);
    expect(unhandled).toEqual([]);
  });

  it('G2: a decoder that returns a rejected promise dead-letters the message as invalid_payload and the next message runs', async () => {
    const topic = await env.createTopic('async-decode');
    await env.produce(topic, five('d'));
    const handler = defineHandler({
      topic,
      async decode(value) {
        await nextTurn();
        const event = JSON.parse(value?.toString('utf8') ?? 'null') as { n: number };
        if (event.n === 1) throw new Error('schema registry unreachable for this record');
        return event;
      },
      schema: z.object({ n: z.number() }),
      async handle(event, ctx) {
        await ctx.tx.insert(effects).values({
          messageId: ctx.messageId,
          topic,
          partition: 0,
          offset: Number(ctx.message.offset),
          payload: event,
        });
      },
    });
    const consumer = env.consumer({ groupId: env.groupId('async-decode'), handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('five outcomes', () => outcomes.total === 5);
    await settle();

    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['d-0', 'd-2', 'd-3', 'd-4']);
    expect(await deadLetters(topic)).toEqual([
      { message_id: 'd-1', reason: 'invalid_payload', message: 'schema registry unreachable for this record' },
    ]);
    expect(unhandled).toEqual([]);
  });

  it('G2: an async messageId() is awaited for the id, and one that rejects dead-letters its message as invalid_message_id', async () => {
    const topic = await env.createTopic('async-message-id');
    await env.produce(
      topic,
      [0, 1, 2, 3].map((n) => ({ value: JSON.stringify({ n, paymentId: `pay-${n}` }), partition: 0 })),
    );
    const handler = defineHandler({
      topic,
      schema: z.object({ n: z.number(), paymentId: z.string() }),
      async messageId(event) {
        await nextTurn();
        if (event.n === 2) throw new Error('id service timed out');
        return event.paymentId;
      },
      async handle(event, ctx) {
        await ctx.tx.insert(effects).values({
          messageId: ctx.messageId,
          topic,
          partition: 0,
          offset: Number(ctx.message.offset),
          payload: event,
        });
      },
    });
    const consumer = env.consumer({ groupId: env.groupId('async-message-id'), handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('four outcomes', () => outcomes.total === 4);
    await settle();

    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['pay-0', 'pay-1', 'pay-3']);
    expect(await deadLetters(topic)).toEqual([
      {
        message_id: null,
        reason: 'invalid_message_id',
        message: expect.stringContaining('messageId() threw: id service timed out'),
      },
    ]);
    expect(unhandled).toEqual([]);
  });

  it('G2: in batch mode, an async refine that throws dead-letters its message as invalid_payload and the rest of the chunk is applied once', async () => {
    const topic = await env.createTopic('async-refine-batch');
    await env.produce(topic, five('b'));
    const handler = defineBatchHandler({
      topic,
      schema: asyncRefine(0),
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
    const consumer = env.consumer({ groupId: env.groupId('async-refine-batch'), handlers: [handler], batchSize: 5 });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('five outcomes', () => outcomes.total === 5);
    await settle();

    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['b-1', 'b-2', 'b-3', 'b-4']);
    expect(outcomes.deadLettered.map((d) => [d.messageId, d.reason])).toEqual([['b-0', 'invalid_payload']]);
    expect(unhandled).toEqual([]);
  });

  it('G2: oncely/testing runs the same path: an async refine that throws is an invalid_payload dead letter there too', async () => {
    const topic = `kit-async-${Date.now()}`;
    const report = await deliverOnce({
      db: env.db,
      handlers: [effectHandler(topic, undefined, asyncRefine(1))],
      messages: [0, 1, 2].map((n) => ({ topic, value: { n }, headers: { 'message-id': `kit-${n}` }, partition: 0 })),
    });
    await settle();

    expect(report).toMatchObject({ processed: 2, deadLettered: { invalid_payload: 1 } });
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['kit-0', 'kit-2']);
    expect(unhandled).toEqual([]);
  });
});
