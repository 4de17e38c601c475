import { Kafka, logLevel } from 'kafkajs';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { pino } from 'pino';
import { describe, expect, inject, it } from 'vitest';

import { createInboxConsumer, defineHandler } from '../../../src/index.js';
import { startError } from '../../../src/pipeline/lifecycle/start-errors.js';
import { databaseUrlFor } from '../../support/settings.js';

/** What a real client rejects with. */
async function failureOf(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to fail');
}

describe('errors start() rejects with, from real clients', () => {
  it('wraps a database that does not exist and a server that refuses connections', async () => {
    const missing = new pg.Pool({ connectionString: databaseUrlFor(inject('databaseUrl'), 'oncely_no_such_db') });
    const refused = new pg.Pool({
      connectionString: 'postgres://oncely@127.0.0.1:1/oncely',
      connectionTimeoutMillis: 2000,
    });
    try {
      expect(startError(await failureOf(() => missing.query('SELECT 1')))).toMatchObject({
        code: 'ONCELY_DATABASE_ERROR',
        retriable: false,
        context: { sqlState: '3D000' },
      });
      expect(startError(await failureOf(() => refused.query('SELECT 1')))).toMatchObject({
        code: 'ONCELY_DATABASE_UNREACHABLE',
        retriable: true,
      });
    } finally {
      await Promise.all([missing.end(), refused.end()]);
    }
  });

  it('a consumer started on a database that does not exist rejects with ONCELY_DATABASE_ERROR and the cause', async () => {
    const pool = new pg.Pool({ connectionString: databaseUrlFor(inject('databaseUrl'), 'oncely_no_such_db'), max: 3 });
    const consumer = createInboxConsumer({
      kafka: new Kafka({ brokers: inject('kafkaBrokers'), logLevel: logLevel.NOTHING }),
      db: drizzle(pool),
      groupId: 'start-errors',
      handlers: [defineHandler({ topic: 'start-errors', handle: () => undefined })],
      handleSignals: false,
      logger: pino({ level: 'silent' }),
    });
    try {
      const error = await failureOf(() => consumer.start());
      expect(error).toMatchObject({ code: 'ONCELY_DATABASE_ERROR', context: { sqlState: '3D000' } });
      expect((error as Error).cause).toMatchObject({ code: '3D000' });
    } finally {
      await consumer.stop();
      await pool.end();
    }
  });

  it('wraps a broker that cannot be reached', async () => {
    const kafka = new Kafka({
      brokers: ['127.0.0.1:1'],
      logLevel: logLevel.NOTHING,
      retry: { retries: 1, initialRetryTime: 50 },
      connectionTimeout: 500,
    });
    const admin = kafka.admin();
    const error = await failureOf(() => admin.connect());
    await admin.disconnect();
    expect(startError(error)).toMatchObject({ code: 'ONCELY_KAFKA_UNREACHABLE', retriable: true, cause: error });
  });
});
