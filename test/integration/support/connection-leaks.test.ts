/**
 * The leak check of the integration project (test/support/leak-setup.ts) sees what a test can
 * leave open: a pg Pool, an oncely consumer (its kafkajs consumer's broker connections) and a
 * kafkajs admin; and it sees them closed again once they are. (That a file leaking a pool fails,
 * naming the line that opened it, is what useTestEnvironment's teardown does with this.)
 */
import { describe, expect, inject, it } from 'vitest';

import { assertNoLeakedConnections, openConnections } from '../../support/connection-leaks.js';
import { effectHandler, useTestEnvironment } from '../../support/integration.js';
import { testPool } from '../../support/settings.js';

const env = useTestEnvironment();

const kafkaPorts = (): Set<number> => new Set(inject('kafkaBrokers').map((b) => Number(b.split(':').at(-1))));
const postgresPort = (): Set<number> => new Set([Number(new URL(inject('databaseUrl')).port)]);

describe('the connection leak check', () => {
  it('finds the connections of a pg Pool that was not ended, and none once it is', async () => {
    const before = openConnections(postgresPort()).length;
    const pool = testPool(env.databaseUrl, 3);
    await Promise.all([1, 2, 3].map(() => pool.query('SELECT pg_sleep(0.05)')));
    const open = openConnections(postgresPort());
    expect(open.length - before).toBe(3);
    // The report names the code that opened the connection.
    expect(open.filter((c) => c.openedAt.includes('connection-leaks.test.ts'))).toHaveLength(3);

    await pool.end();
    await expect.poll(() => openConnections(postgresPort()).length, { timeout: 3_000 }).toBe(before);
  });

  it('finds the broker connections of an oncely consumer that was not stopped, and none once it is', async () => {
    const topic = await env.createTopic('leak');
    const consumer = env.consumer({ groupId: env.groupId('leak'), handlers: [effectHandler(topic)] });
    const before = openConnections(kafkaPorts()).length;
    await consumer.start();
    expect(openConnections(kafkaPorts()).length).toBeGreaterThan(before);

    await consumer.stop();
    await expect.poll(() => openConnections(kafkaPorts()).length, { timeout: 3_000 }).toBe(before);
  });

  it('finds a kafkajs admin that was not disconnected', async () => {
    const before = openConnections(kafkaPorts()).length;
    const admin = env.kafka.admin();
    await admin.connect();
    await admin.listTopics();
    expect(openConnections(kafkaPorts()).length).toBeGreaterThan(before);
    await admin.disconnect();
    await expect.poll(() => openConnections(kafkaPorts()).length, { timeout: 3_000 }).toBe(before);
  });

  it('fails naming the service and the line that opened a leaked connection', async () => {
    const pool = testPool(env.databaseUrl, 1);
    try {
      await pool.query('SELECT 1');
      // The file's own pool, admin and producer are open too while its tests run: all are named.
      const failure = assertNoLeakedConnections(200);
      await expect(failure).rejects.toThrow(/still open after this file/);
      await expect(failure).rejects.toThrow(
        /PostgreSQL 127\.0\.0\.1:\d+ .*opened in "[^"]*leaked connection" at\n.*connection-leaks\.test\.ts/,
      );
    } finally {
      await pool.end();
    }
  });
});
