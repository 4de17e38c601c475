import { pino } from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';

import { attachMetrics, CONSUMER_METRIC_NAMES } from '../../../src/metrics/prometheus.js';
import { EventHub } from '../../../src/events/index.js';

const where = { groupId: 'payments', topic: 'charges', partition: 0, offset: '7', messageId: 'm-1', headers: {} };

function setUp() {
  const registry = new Registry();
  const events = new EventHub(pino({ level: 'silent' }));
  const metrics = attachMetrics(
    { registry },
    {
      groupId: 'payments',
      topics: ['charges'],
      events,
      // Never touched: the scrape-time gauges answer only after start().
      kafka: {} as never,
      pool: {} as never,
      logger: pino({ level: 'silent' }),
    },
  );
  return { registry, events, metrics };
}

async function value(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = await registry.getSingleMetric(name)?.get();
  const found = metric?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return found?.value;
}

/** Histogram samples carry their series name (`_sum`, `_count`, `_bucket`); prom-client's types omit it. */
const nameOf = (v: object): unknown => (v as { metricName?: unknown }).metricName;

describe('Prometheus metrics', () => {
  it('registers every documented metric in the registry it is given, not the global one', async () => {
    const { registry } = setUp();
    const names = (await registry.getMetricsAsJSON()).map((m) => m.name).sort();
    expect(names).toEqual([...CONSUMER_METRIC_NAMES].sort());
  });

  it('counts messages by outcome, duplicate class and dead-letter reason', async () => {
    const { registry, events } = setUp();
    events.emit('message:processed', () => ({ ...where, attempts: 1, durationMs: 3 }));
    events.emit('message:processed', () => ({ ...where, attempts: 2, durationMs: 3 }));
    const original = { topic: 'charges', partition: 0, offset: '1', processedAt: new Date(Date.now() - 90_000) };
    events.emit('message:duplicate', () => ({ ...where, duplicateClass: 'republish', original, durationMs: 1 }));
    const error = { name: 'Error', message: 'reused' };
    events.emit('message:dead-lettered', () => ({ ...where, reason: 'key_reuse', error, attempts: 0, durationMs: 1 }));
    events.emit('message:retrying', () => ({ ...where, attempt: 1, delayMs: 10, error: new Error('x') }));

    const messages = { group: 'payments', topic: 'charges' };
    expect(await value(registry, 'oncely_messages_total', { ...messages, outcome: 'processed' })).toBe(2);
    expect(
      await value(registry, 'oncely_messages_total', {
        ...messages,
        outcome: 'duplicate',
        duplicate_class: 'republish',
      }),
    ).toBe(1);
    expect(
      await value(registry, 'oncely_messages_total', {
        ...messages,
        outcome: 'dead_lettered',
        duplicate_class: 'key_reuse',
        reason: 'key_reuse',
      }),
    ).toBe(1);
    expect(await value(registry, 'oncely_retries_total', messages)).toBe(1);
  });

  it('measures a duplicate’s age from the original’s processed_at', async () => {
    const { registry, events } = setUp();
    const original = { topic: 'charges', partition: 0, offset: '1', processedAt: new Date(Date.now() - 2 * 3600_000) };
    events.emit('message:duplicate', () => ({ ...where, duplicateClass: 'redelivery', original, durationMs: 1 }));
    const labels = { group: 'payments', topic: 'charges', duplicate_class: 'redelivery' };
    const metric = await registry.getSingleMetric('oncely_duplicate_age_seconds')?.get();
    const sum = metric?.values.find((v) => nameOf(v) === 'oncely_duplicate_age_seconds_sum');
    expect(sum?.labels).toMatchObject(labels);
    expect(sum?.value).toBeGreaterThanOrEqual(7200);
    expect(sum?.value).toBeLessThan(7260);
  });

  it('observes handler and transaction durations in seconds, once per committed transaction', async () => {
    const { registry, events } = setUp();
    events.emit('transaction:committed', () => ({
      groupId: 'payments',
      topic: 'charges',
      partition: 0,
      messages: 50,
      durationMs: 250,
      handlerMs: 200,
    }));
    const sums = async (name: string) =>
      (await registry.getSingleMetric(name)?.get())?.values.find((v) => nameOf(v) === `${name}_sum`)?.value;
    expect(await sums('oncely_handler_duration_seconds')).toBeCloseTo(0.2);
    expect(await sums('oncely_transaction_duration_seconds')).toBeCloseTo(0.25);
  });

  it('shares one set of metrics between consumers on the same registry', () => {
    const registry = new Registry();
    const input = {
      groupId: 'a',
      topics: ['t'],
      events: new EventHub(pino({ level: 'silent' })),
      kafka: {} as never,
      pool: {} as never,
      logger: pino({ level: 'silent' }),
    };
    attachMetrics({ registry }, input);
    expect(() => attachMetrics({ registry }, { ...input, groupId: 'b' })).not.toThrow();
  });

  it('never labels by message id or key (bounded cardinality)', async () => {
    const { registry, events } = setUp();
    for (let i = 0; i < 20; i++) {
      events.emit('message:processed', () => ({
        ...where,
        messageId: `m-${i}`,
        offset: String(i),
        attempts: 1,
        durationMs: 1,
      }));
    }
    const text = await registry.metrics();
    expect(text).not.toMatch(/m-\d+/);
    const labelNames = (await registry.getMetricsAsJSON()).flatMap((m) =>
      m.values.flatMap((v) => Object.keys(v.labels)),
    );
    expect(new Set(labelNames)).toEqual(new Set(['group', 'topic', 'outcome', 'duplicate_class', 'reason']));
  });
});
