import { getTableConfig } from 'drizzle-orm/pg-core';
import { describe, expect, it } from 'vitest';

import { outboxTable } from '../../../src/index.js';

import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';
import { readTopic, testRelay } from './support.js';

const env = useTestEnvironment();

describe('dead letters through the outbox', () => {
  it('records a dead letter and its outbox row in the outcome transaction; the partition moves on before any relay sends it', async () => {
    const topic = await env.createTopic('ob-dlq');
    await env.admin.createTopics({ topics: [{ topic: `${topic}.dlq` }], waitForLeaders: true });
    await env.produce(topic, [jsonMessage('poison', { n: 1 }), jsonMessage('fine', { n: 2 })]);
    const consumer = env.consumer({
      groupId: env.groupId('ob-dlq'),
      handlers: [
        effectHandler(topic, (ctx) => {
          if (ctx.messageId === 'poison') throw new Error('cannot apply');
        }),
      ],
      retry: { attempts: 1 },
      deadLetter: { topic: true },
      // No relay here: the dead letter must not wait for Kafka to be recorded.
      relay: false,
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('both outcomes', () => outcomes.total === 2);
    const { rows } = await env.pool.query<{ message_id: string; status: string; partition: number }>(
      'SELECT message_id, status, partition FROM oncely.outbox WHERE topic = $1',
      [`${topic}.dlq`],
    );
    expect(rows).toEqual([
      { message_id: expect.stringMatching(/^dead-letter:/) as unknown, status: 'pending', partition: 0 },
    ]);

    await testRelay({ db: env.db, kafka: env.kafka }).start();
    const received = await readTopic(env.kafka, `${topic}.dlq`, (r) => r.length >= 1);
    expect(received[0]?.headers).toMatchObject({ 'message-id': 'poison', 'oncely-reason': 'handler_failed' });
  });

  it('exports outboxTable matching the migrated columns', async () => {
    const config = getTableConfig(outboxTable);
    const { rows } = await env.pool.query<{ column_name: string; is_nullable: string }>(
      `SELECT column_name, is_nullable FROM information_schema.columns
        WHERE table_schema = 'oncely' AND table_name = 'outbox'`,
    );
    expect(config.columns.map((c) => [c.name, c.notNull ? 'NO' : 'YES']).sort()).toEqual(
      rows.map((r) => [r.column_name, r.is_nullable]).sort(),
    );
  });
});
