import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';

import { resolveConsumerConfig } from '../../../src/pipeline/options.js';
import { createOutboxRelay, defineHandler, idempotent, type InboxConsumerOptions } from '../../../src/index.js';

// Constructing these opens no connection.
const pool = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', max: 5 });
const valid: InboxConsumerOptions = {
  kafka: new Kafka({ brokers: ['127.0.0.1:1'] }),
  db: drizzle(pool),
  groupId: 'ledger',
  handlers: [defineHandler({ topic: 'payments', handle: () => undefined })],
  logger: pino({ level: 'silent' }),
};
afterAll(() => pool.end());

describe('the observability options', () => {
  it('are off by default, with a 30 s start timeout', () => {
    expect(resolveConsumerConfig(valid)).toMatchObject({
      metrics: undefined,
      tracing: undefined,
      startTimeoutMs: 30_000,
    });
  });

  it('take a prom-client Registry and refuse anything else, naming the fix', () => {
    const registry = new Registry();
    expect(resolveConsumerConfig({ ...valid, metrics: { registry } }).metrics?.registry).toBe(registry);
    expect(() => resolveConsumerConfig({ ...valid, metrics: { registry: {} as Registry } })).toThrow(
      /`metrics\.registry`: expected a prom-client Registry/,
    );
    expect(() =>
      resolveConsumerConfig({
        ...valid,
        metrics: { registry, refreshInterval: 5 } as unknown as { registry: Registry },
      }),
    ).toThrow(/`metrics\.refreshInterval`: unknown option; did you mean `refreshIntervalMs`\?/);
  });

  it('refuse a start timeout that is not a positive whole number of milliseconds', () => {
    expect(() => resolveConsumerConfig({ ...valid, startTimeoutMs: 0 })).toThrow(
      /`startTimeoutMs`: must be at least 1/,
    );
  });

  it('take a Registry for the relay and the idempotent routes too, and a bounded route name', async () => {
    const registry = new Registry();
    const relay = createOutboxRelay({ db: pool, kafka: valid.kafka, metrics: { registry } });
    await relay.stop();
    expect(() => createOutboxRelay({ db: pool, kafka: valid.kafka, metrics: { registry: {} as Registry } })).toThrow(
      /`relay\.metrics\.registry`: expected a prom-client Registry/,
    );
    const db = drizzle(pool);
    idempotent({ db, scope: 's', metrics: { registry, route: 'create-payment' } }, () => new Response(null));
    // Every outcome starts at 0, so rate() sees the first count.
    expect((await registry.getSingleMetric('oncely_idempotency_requests_total')?.get())?.values).toHaveLength(4);
    expect(() =>
      idempotent({ db, scope: 's', metrics: { registry: {} as Registry } }, () => new Response(null)),
    ).toThrow(/`metrics\.registry`: expected a prom-client Registry/);
    expect(() =>
      idempotent({ db, scope: 's', metrics: { registry, route: 'x'.repeat(101) } }, () => new Response(null)),
    ).toThrow(/`metrics\.route`/);
  });
});
