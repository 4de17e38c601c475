import { randomUUID } from 'node:crypto';

import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { describe, expect, it } from 'vitest';

import { databaseUrlFor, testPool } from '../../support/settings.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

describe('consumer lifecycle', () => {
  it('shares one start between concurrent callers and stops idempotently', async () => {
    const topic = await env.createTopic('life-idem');
    await env.produce(topic, [jsonMessage('a', {})]);
    const consumer = env.consumer({ groupId: env.groupId('idem'), handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    const first = consumer.start();
    expect(consumer.start()).toBe(first);
    await first;
    await waitFor('the outcome', () => outcomes.total === 1);
    const stopping = consumer.stop();
    expect(consumer.stop()).toBe(stopping);
    await stopping;
    await consumer.stop();
    await expect(consumer.start()).rejects.toMatchObject({ code: 'ONCELY_STOPPING' });
  });

  it('drains the message in flight on stop, commits its offset to Kafka and leaves the group', async () => {
    const topic = await env.createTopic('life-drain');
    const groupId = env.groupId('drain');
    await env.produce(
      topic,
      Array.from({ length: 5 }, (_, i) => jsonMessage(`d-${i}`, { i })),
    );
    let inside!: () => void;
    const entered = new Promise<void>((resolve) => (inside = resolve));
    const handler = effectHandler(topic, async (ctx) => {
      if (ctx.message.offset === '2') {
        inside();
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    });
    const consumer = env.consumer({ groupId, handlers: [handler] });
    await consumer.start();
    await entered;
    await consumer.stop();

    // The message in flight finished and committed; nothing after it was started.
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['d-0', 'd-1', 'd-2']);
    expect((await env.offsetsOf(groupId, topic)).get(0)).toBe(3n);
    expect((await env.committedOffsetsOf(groupId, topic)).get(0)).toBe(3n);
    const { groups } = await env.admin.describeGroups([groupId]);
    expect(groups[0]?.members).toEqual([]);
  });

  it('keeps its partition while a handler runs longer than the session timeout: it heartbeats meanwhile', async () => {
    const topic = await env.createTopic('life-slow');
    const groupId = env.groupId('slow');
    await env.produce(topic, [jsonMessage('slow-0', {}), jsonMessage('slow-1', {})]);
    const handler = effectHandler(topic, async (ctx) => {
      if (ctx.message.offset === '0') await new Promise((resolve) => setTimeout(resolve, 4_000));
    });
    // Every group join of the consumer, counted on its kafkajs consumer.
    const kafka = new Kafka({ clientId: 'life-slow', brokers: env.brokers, logLevel: logLevel.NOTHING });
    let joins = 0;
    const makeConsumer = kafka.consumer.bind(kafka);
    kafka.consumer = (config) => {
      const made = makeConsumer(config);
      made.on(made.events.GROUP_JOIN, () => void joins++);
      return made;
    };
    const consumer = env.consumer({
      kafka,
      groupId,
      handlers: [handler],
      // The broker drops a member it has not heard from for 1.5 s; the handler takes 4 s.
      consumer: { sessionTimeout: 1_500, heartbeatInterval: 300, rebalanceTimeout: 3_000 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('both outcomes', () => outcomes.total === 2, { timeoutMs: 20_000 });
    await consumer.stop();
    expect(outcomes.processed).toHaveLength(2);
    // Joined once: a member evicted mid-handler would have joined again.
    expect(joins).toBe(1);
    expect((await env.committedOffsetsOf(groupId, topic)).get(0)).toBe(2n);
  });

  it('supports `await using`: disposal stops the consumer', async () => {
    const topic = await env.createTopic('life-dispose');
    await env.produce(topic, [jsonMessage('x', {})]);
    const groupId = env.groupId('dispose');
    {
      await using consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
      await consumer.start();
      await waitFor('the effect', async () => (await env.effectsOf(topic)).length === 1);
    }
    const { groups } = await env.admin.describeGroups([groupId]);
    expect(groups[0]?.members).toEqual([]);
  });

  it('refuses to start on a database without the oncely schema, saying how to migrate', async () => {
    const database = `oncely_bare_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const admin = new pg.Client({ connectionString: env.databaseUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    const pool = testPool(databaseUrlFor(env.databaseUrl, database), 3);
    try {
      const topic = await env.createTopic('life-bare');
      const consumer = env.consumer({
        groupId: env.groupId('bare'),
        db: drizzle(pool),
        handlers: [effectHandler(topic)],
      });
      const error = await consumer.start().catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ONCELY_NOT_MIGRATED' });
      expect((error as Error).message).toContain('oncely migrate');
    } finally {
      await pool.end();
      await admin.query(`DROP DATABASE ${database} WITH (FORCE)`);
      await admin.end();
    }
  });

  it('refuses to start when a handler’s topic does not exist, naming it', async () => {
    const consumer = env.consumer({
      groupId: env.groupId('missing'),
      handlers: [effectHandler('no-such-topic-oncely')],
    });
    const error = await consumer.start().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ONCELY_TOPIC_NOT_FOUND' });
    expect((error as Error).message).toContain('"no-such-topic-oncely"');
  });
});
