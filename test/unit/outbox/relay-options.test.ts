import { Kafka } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';

import { isOncelyError } from '../../../src/errors.js';
import { type OutboxRelayOptions, resolveRelayOptions } from '../../../src/outbox/relay-options.js';

// Constructing these opens no connection.
const pool = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', max: 3 });
const kafka = new Kafka({ brokers: ['127.0.0.1:1'] });
const valid: OutboxRelayOptions = { db: pool, kafka, logger: pino({ level: 'silent' }) };
afterAll(() => pool.end());

function configErrorOf(options: unknown): { message: string; option: unknown } {
  try {
    resolveRelayOptions(options as OutboxRelayOptions);
  } catch (error) {
    if (isOncelyError(error) && error.code === 'ONCELY_CONFIG')
      return { message: error.message, option: error.context.option };
    throw error;
  }
  throw new Error('expected ONCELY_CONFIG');
}

describe('the outbox relay options', () => {
  it('resolve every default, and the lock session settings from the lease', () => {
    const config = resolveRelayOptions(valid);
    expect(config).toMatchObject({
      pool,
      ownedPool: false,
      batchSize: 500,
      pollIntervalMs: 1000,
      standbyPollMs: 2000,
      lockLeaseMs: 30_000,
      maxAttempts: 10,
      initialBackoffMs: 200,
      maxBackoffMs: 10_000,
      producerConfig: {},
      metrics: undefined,
    });
    expect(config.connection).toMatchObject({ application_name: 'oncely-relay', query_timeout: 15_000 });
  });

  it.each([
    ['no options at all', undefined, 'relay', 'Invalid option `relay`: pass { db, kafka }'],
    [
      'a kafka that is not a kafkajs client',
      { ...valid, kafka: { brokers: [] } },
      'relay.kafka',
      'Invalid option `relay.kafka`: expected a kafkajs client: `new Kafka({ clientId, brokers })`',
    ],
    [
      'a fractional batch size',
      { ...valid, batchSize: 2.5 },
      'relay.batchSize',
      'Invalid option `relay.batchSize`: must be a whole number ≥ 1',
    ],
    [
      'a lease under a second',
      { ...valid, lockLeaseMs: 500 },
      'relay.lockLeaseMs',
      'Invalid option `relay.lockLeaseMs`: must be a whole number of milliseconds ≥ 1000',
    ],
    [
      'an unknown option (a typo)',
      { ...valid, pollIntervalMS: 50 },
      'relay.pollIntervalMS',
      'Invalid option `relay.pollIntervalMS`: unknown option; did you mean `pollIntervalMs`?',
    ],
    [
      'a registry that is not one',
      { ...valid, metrics: { registry: {} } },
      'relay.metrics.registry',
      "Invalid option `relay.metrics.registry`: expected a prom-client Registry: `new Registry()` from 'prom-client'",
    ],
  ])('refuse %s, naming the option and the fix', (_name, options, option, message) => {
    expect(configErrorOf(options)).toEqual({ message, option });
  });

  it("take a consumer's metrics options, which carry the consumer's own `lag` too", () => {
    const metrics = { registry: { registerMetric: () => undefined, metrics: () => '' }, lag: false };
    expect(() => resolveRelayOptions({ ...valid, metrics } as unknown as OutboxRelayOptions)).not.toThrow();
  });

  it('list several problems in one error', () => {
    expect(configErrorOf({ ...valid, batchSize: 0, maxAttempts: 0 }).message).toBe(
      'Invalid options: `relay.batchSize`: must be a whole number ≥ 1; `relay.maxAttempts`: must be a whole number ≥ 1',
    );
  });
});
