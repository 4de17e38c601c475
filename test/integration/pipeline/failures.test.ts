import { describe, expect, it } from 'vitest';

import { DEAD_LETTER_HEADERS, NonRetriableError } from '../../../src/index.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

const fastRetry = { initialDelayMs: 10, maxDelayMs: 20 };

describe('failure handling', () => {
  it('cuts off a handler that hangs: ctx.signal aborts, the attempt fails, and the message is dead-lettered after its attempts', async () => {
    const topic = await env.createTopic('fail-hang');
    await env.produce(topic, [jsonMessage('hangs', {}), jsonMessage('after', {})]);
    const aborted: unknown[] = [];
    const handler = effectHandler(topic, async (ctx) => {
      if (ctx.messageId !== 'hangs') return;
      ctx.signal.addEventListener('abort', () => aborted.push(ctx.signal.reason));
      await new Promise(() => undefined); // never settles
    });
    const consumer = env.consumer({
      groupId: env.groupId('hang'),
      handlers: [handler],
      handlerTimeoutMs: 300,
      retry: { attempts: 2, ...fastRetry },
    });
    const outcomes = recordOutcomes(consumer);
    const started = Date.now();
    await consumer.start();
    await waitFor('both outcomes', () => outcomes.total === 2);

    expect(Date.now() - started).toBeLessThan(15_000);
    expect(aborted).toHaveLength(2);
    expect(aborted[0]).toMatchObject({ code: 'ONCELY_HANDLER_TIMEOUT' });
    expect(outcomes.deadLettered).toEqual([
      expect.objectContaining({ messageId: 'hangs', reason: 'handler_failed', attempts: 2 }),
    ]);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['after']);
  });

  it('hands a handler that reads ctx.signal only after the timeout an already aborted signal', async () => {
    const topic = await env.createTopic('fail-late-signal');
    await env.produce(topic, [jsonMessage('late', {})]);
    const late: boolean[] = [];
    const handler = effectHandler(topic, async (ctx) => {
      await new Promise((resolve) => setTimeout(resolve, 600));
      late.push(ctx.signal.aborted);
    });
    const consumer = env.consumer({
      groupId: env.groupId('late'),
      handlers: [handler],
      handlerTimeoutMs: 200,
      retry: { attempts: 1 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('the outcome', () => outcomes.total === 1);
    await waitFor('the late read', () => late.length === 1);
    expect(late).toEqual([true]);
  });

  it('cuts off a handler stuck in the database: PostgreSQL cancels the statement at the same timeout', async () => {
    const topic = await env.createTopic('fail-db-hang');
    await env.produce(topic, [jsonMessage('sleeps', {}), jsonMessage('after', {})]);
    const handler = effectHandler(topic, async (ctx) => {
      if (ctx.messageId === 'sleeps') await ctx.tx.execute('SELECT pg_sleep(60)');
    });
    const consumer = env.consumer({
      groupId: env.groupId('dbhang'),
      handlers: [handler],
      handlerTimeoutMs: 400,
      retry: { attempts: 1 },
    });
    const outcomes = recordOutcomes(consumer);
    const started = Date.now();
    await consumer.start();
    await waitFor('both outcomes', () => outcomes.total === 2);
    // Without the statement timeout the ROLLBACK would wait behind pg_sleep(60).
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(outcomes.deadLettered).toEqual([expect.objectContaining({ messageId: 'sleeps', reason: 'handler_failed' })]);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['after']);
  });

  it('dead-letters NonRetriableError at once, without retries', async () => {
    const topic = await env.createTopic('fail-nonretriable');
    await env.produce(topic, [jsonMessage('declined', {})]);
    let calls = 0;
    const handler = effectHandler(topic, () => {
      calls += 1;
      throw new NonRetriableError('card permanently declined');
    });
    const consumer = env.consumer({
      groupId: env.groupId('nonret'),
      handlers: [handler],
      retry: { attempts: 5, ...fastRetry },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('the outcome', () => outcomes.total === 1);
    expect(calls).toBe(1);
    expect(outcomes.deadLettered).toEqual([expect.objectContaining({ reason: 'handler_failed', attempts: 1 })]);
  });

  it('publishes every dead letter to the dead-letter topic, on the source partition, with where it came from and why', async () => {
    const topic = await env.createTopic('fail-dlq', 2);
    await env.admin.createTopics({ topics: [{ topic: `${topic}.dlq`, numPartitions: 2 }], waitForLeaders: true });
    await env.produce(topic, [
      { value: '{"broken', headers: { 'message-id': 'bad-json', trace: 't-1' }, key: 'acct-1', partition: 1 },
      jsonMessage('fails', { n: 1 }, 0),
      jsonMessage('fine', { n: 2 }, 0),
    ]);
    const groupId = env.groupId('dlq');
    const handler = effectHandler(topic, (ctx) => {
      if (ctx.messageId === 'fails') throw new Error('ledger service down');
    });
    const consumer = env.consumer({
      groupId,
      handlers: [handler],
      retry: { attempts: 2, ...fastRetry },
      deadLetter: { topic: true },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('three outcomes', () => outcomes.total === 3);

    const reader = env.kafka.consumer({ groupId: env.groupId('dlq-reader'), maxWaitTimeInMs: 100 });
    const received: {
      partition: number;
      key: string | undefined;
      value: string | undefined;
      headers: Record<string, string>;
    }[] = [];
    await reader.connect();
    try {
      await reader.subscribe({ topic: `${topic}.dlq`, fromBeginning: true });
      await reader.run({
        eachMessage: async ({ partition, message }) => {
          const headers = Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]));
          received.push({ partition, key: message.key?.toString(), value: message.value?.toString(), headers });
        },
      });
      await waitFor('two dead letters on the topic', () => received.length === 2);
    } finally {
      await reader.disconnect();
    }
    const byId = new Map(received.map((r) => [r.headers['message-id'], r]));
    expect(byId.get('bad-json')).toMatchObject({
      partition: 1,
      key: 'acct-1',
      value: '{"broken',
      headers: {
        trace: 't-1',
        [DEAD_LETTER_HEADERS.topic]: topic,
        [DEAD_LETTER_HEADERS.partition]: '1',
        [DEAD_LETTER_HEADERS.offset]: '0',
        [DEAD_LETTER_HEADERS.group]: groupId,
        [DEAD_LETTER_HEADERS.reason]: 'invalid_payload',
        [DEAD_LETTER_HEADERS.attempts]: '0',
      },
    });
    const failed = byId.get('fails');
    expect(failed).toMatchObject({
      partition: 0,
      headers: { [DEAD_LETTER_HEADERS.reason]: 'handler_failed', [DEAD_LETTER_HEADERS.attempts]: '2' },
    });
    const error = JSON.parse(failed?.headers[DEAD_LETTER_HEADERS.error] ?? '{}') as { message: string; stack: string };
    expect(error.message).toBe('ledger service down');
    expect(Buffer.byteLength(error.stack)).toBeLessThanOrEqual(8 * 1024);
  });

  it('refuses to start when the dead-letter topic is missing, saying how to create it', async () => {
    const topic = await env.createTopic('fail-no-dlq', 3);
    const consumer = env.consumer({
      groupId: env.groupId('nodlq'),
      handlers: [effectHandler(topic)],
      deadLetter: { topic: true },
    });
    const error = await consumer.start().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ONCELY_TOPIC_NOT_FOUND' });
    expect((error as Error).message).toContain(`"${topic}.dlq" does not exist: create it with 3 partitions`);
  });

  it('pauses a partition at a message whose attempts ran out, keeps later messages unprocessed, and continues on resume()', async () => {
    const topic = await env.createTopic('fail-pause', 2);
    await env.produce(topic, [jsonMessage('p0-a', {}, 0), jsonMessage('p0-stuck', {}, 0), jsonMessage('p0-c', {}, 0)]);
    await env.produce(topic, [jsonMessage('p1-a', {}, 1), jsonMessage('p1-b', {}, 1)]);
    let downstreamUp = false;
    const handler = effectHandler(topic, (ctx) => {
      if (ctx.messageId === 'p0-stuck' && !downstreamUp) throw new Error('ledger service down');
    });
    const groupId = env.groupId('pause');
    const consumer = env.consumer({
      groupId,
      handlers: [handler],
      concurrency: 2,
      onExhausted: 'pause',
      retry: { attempts: 2, ...fastRetry },
    });
    const paused: unknown[] = [];
    consumer.on('partition:paused', (e) => void paused.push(e));
    await consumer.start();
    await waitFor('the pause', () => paused.length === 1);
    await waitFor('partition 1 to finish', async () => (await env.effectsOf(topic)).length === 3);
    // Give partition 0 every chance to (wrongly) move on before checking it did not.
    await new Promise((resolve) => setTimeout(resolve, 1_000));

    expect((await env.effectsOf(topic)).map((r) => r.messageId).sort()).toEqual(['p0-a', 'p1-a', 'p1-b']);
    expect(paused[0]).toMatchObject({ topic, partition: 0, offset: '1', messageId: 'p0-stuck', attempts: 2 });
    expect(consumer.paused()).toEqual([
      expect.objectContaining({ topic, partition: 0, offset: '1', messageId: 'p0-stuck' }),
    ]);
    expect((await env.offsetsOf(groupId, topic)).get(0)).toBe(1n);
    const { rows } = await env.pool.query('SELECT 1 FROM oncely.dead_letters WHERE topic = $1', [topic]);
    expect(rows).toEqual([]);

    downstreamUp = true;
    consumer.resume(topic, 0);
    await waitFor('partition 0 to finish', async () => (await env.effectsOf(topic)).length === 5);
    expect((await env.effectsOf(topic)).filter((r) => r.partition === 0).map((r) => r.messageId)).toEqual([
      'p0-a',
      'p0-stuck',
      'p0-c',
    ]);
    expect(consumer.paused()).toEqual([]);
    expect(() => consumer.resume(topic, 0)).toThrow(/is not paused/);
  });

  it('keeps consuming when an event listener throws or rejects', async () => {
    const topic = await env.createTopic('fail-listener');
    await env.produce(topic, [jsonMessage('one', {}), jsonMessage('two', {})]);
    const consumer = env.consumer({ groupId: env.groupId('listener'), handlers: [effectHandler(topic)] });
    let calls = 0;
    consumer.on('message:processed', () => {
      calls += 1;
      throw new Error('listener bug');
    });
    consumer.on('message:processed', () => Promise.reject(new Error('async listener bug')));
    await consumer.start();
    await waitFor('both effects', async () => (await env.effectsOf(topic)).length === 2);
    expect(calls).toBe(2);
  });
});
