import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';

import { startError } from '../../../src/pipeline/start-errors.js';
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
