import { describe, expect, it } from 'vitest';

import { defineHandler } from '../../../src/index.js';
import {
  effectHandler,
  effects,
  jsonMessage,
  recordOutcomes,
  useTestEnvironment,
  waitFor,
} from '../../support/integration.js';

const env = useTestEnvironment();

async function inboxRows(topic: string): Promise<{ message_id: string; status: string; attempts: number }[]> {
  const { rows } = await env.pool.query<{ message_id: string; status: string; attempts: number }>(
    'SELECT message_id, status, attempts FROM oncely.inbox WHERE topic = $1 ORDER BY "offset"',
    [topic],
  );
  return rows;
}

async function deadLetterReasons(topic: string): Promise<[string | null, string, string][]> {
  const { rows } = await env.pool.query<{ message_id: string | null; reason: string; error: { message: string } }>(
    'SELECT message_id, reason, error FROM oncely.dead_letters WHERE topic = $1 ORDER BY "offset"',
    [topic],
  );
  return rows.map((r) => [r.message_id, r.reason, r.error.message]);
}

describe('bad input gets a clear, recorded outcome and the consumer keeps going', () => {
  it('dead-letters a message without an id of its own when requireMessageId is on', async () => {
    const topic = await env.createTopic('bad-no-id');
    await env.produce(topic, [
      { value: '{}' },
      jsonMessage('has-id', {}),
      { value: '{}', headers: { 'idempotency-key': 'k-1' } },
    ]);
    const consumer = env.consumer({
      groupId: env.groupId('noid'),
      handlers: [effectHandler(topic)],
      requireMessageId: true,
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('three outcomes', () => outcomes.total === 3);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['has-id', 'k-1']);
    expect(await deadLetterReasons(topic)).toEqual([
      [null, 'invalid_message_id', expect.stringContaining('The message has no id (requireMessageId is on)')],
    ]);
  });

  it('dead-letters a tombstone by default, saying how to accept them', async () => {
    const topic = await env.createTopic('bad-tombstone');
    await env.produce(topic, [{ value: null, headers: { 'message-id': 'gone' } }, jsonMessage('next', {})]);
    const consumer = env.consumer({ groupId: env.groupId('tomb'), handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2);
    expect(await deadLetterReasons(topic)).toEqual([
      ['gone', 'invalid_payload', expect.stringContaining("Set the handler's `tombstone` option to 'skip'")],
    ]);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['next']);
  });

  it("records and skips a tombstone with tombstone: 'skip', without running the handler", async () => {
    const topic = await env.createTopic('bad-tombstone-skip');
    await env.produce(topic, [{ value: null, headers: { 'message-id': 'gone' } }, jsonMessage('next', {})]);
    let calls = 0;
    const handler = defineHandler({
      topic,
      tombstone: 'skip',
      async handle(_event, ctx) {
        calls += 1;
        await ctx.tx
          .insert(effects)
          .values({ messageId: ctx.messageId, topic, partition: 0, offset: Number(ctx.message.offset) });
      },
    });
    const consumer = env.consumer({ groupId: env.groupId('skip'), handlers: [handler] });
    const skipped: unknown[] = [];
    consumer.on('message:skipped', (e) => void skipped.push(e));
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('both outcomes', () => skipped.length === 1 && outcomes.processed.length === 1);
    expect(calls).toBe(1);
    expect(skipped).toEqual([expect.objectContaining({ messageId: 'gone', reason: 'tombstone', offset: '0' })]);
    // Recorded: a redelivery of the tombstone is a duplicate; attempts 0 = the handler did not run.
    expect(await inboxRows(topic)).toEqual([
      { message_id: 'gone', status: 'processed', attempts: 0 },
      { message_id: 'next', status: 'processed', attempts: 1 },
    ]);
  });

  it('hands a tombstone to the handler’s tombstone function, in the transaction', async () => {
    const topic = await env.createTopic('bad-tombstone-fn');
    await env.produce(topic, [{ value: null, key: 'acct-9', headers: { 'message-id': 'close-acct-9' } }]);
    const handler = defineHandler({
      topic,
      handle: () => undefined,
      async tombstone(ctx) {
        await ctx.tx.insert(effects).values({
          messageId: ctx.messageId,
          topic,
          partition: 0,
          offset: 0,
          payload: { deleted: ctx.message.key?.toString() },
        });
      },
    });
    const consumer = env.consumer({ groupId: env.groupId('tombfn'), handlers: [handler] });
    await consumer.start();
    await waitFor('the effect', async () => (await env.effectsOf(topic)).length === 1);
    expect((await env.effectsOf(topic))[0]).toMatchObject({
      messageId: 'close-acct-9',
      payload: { deleted: 'acct-9' },
    });
  });

  it('dead-letters a value larger than maxPayloadBytes', async () => {
    const topic = await env.createTopic('bad-oversize');
    await env.produce(topic, [jsonMessage('big', { pad: 'x'.repeat(2_000) }), jsonMessage('small', {})]);
    const consumer = env.consumer({
      groupId: env.groupId('big'),
      handlers: [effectHandler(topic)],
      maxPayloadBytes: 1_024,
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2);
    expect(await deadLetterReasons(topic)).toEqual([
      ['big', 'invalid_payload', 'The message value is 2010 bytes; the limit is 1024 (maxPayloadBytes).'],
    ]);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['small']);
  });

  it('processes a message whose other header values are not UTF-8, handing the handler the raw bytes', async () => {
    const topic = await env.createTopic('bad-header');
    const binary = Buffer.from([0xde, 0xad, 0xbe, 0xef]);
    await env.produce(topic, [{ value: '{}', headers: { 'message-id': 'traced', traceparent: binary } }]);
    let seen: unknown;
    const consumer = env.consumer({
      groupId: env.groupId('hdr'),
      handlers: [effectHandler(topic, (ctx) => void (seen = ctx.message.headers.traceparent))],
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('the outcome', () => outcomes.total === 1);
    expect(outcomes.processed).toEqual([expect.objectContaining({ messageId: 'traced' })]);
    expect(seen).toEqual(binary);
  });
});
