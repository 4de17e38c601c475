import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';

import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** One sample's value; a histogram's `_count` / `_sum` series are read from the histogram. */
async function sample(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const base = name.replace(/_(count|sum)$/, '');
  const metric = await registry.getSingleMetric(base)?.get();
  return metric?.values.find(
    (v) =>
      (v as { metricName?: string }).metricName === (base === name ? undefined : name) &&
      Object.entries(labels).every(([k, l]) => v.labels[k] === l),
  )?.value;
}

describe('metrics of a running consumer', () => {
  it('counts outcomes, duplicate age, open dead letters and a lag that falls to zero once offsets commit', async () => {
    const topic = await env.createTopic('metrics', 2);
    const groupId = env.groupId('metrics');
    const registry = new Registry();
    await env.produce(topic, [
      jsonMessage('a', { n: 1 }),
      jsonMessage('b', { n: 2 }),
      jsonMessage('a', { n: 1 }), // the same bytes again: a republish
      { value: 'not json', headers: { 'message-id': 'poison' } },
      jsonMessage('c', { n: 3 }, 1),
    ]);
    const consumer = env.consumer({
      groupId,
      handlers: [effectHandler(topic)],
      metrics: { registry, refreshIntervalMs: 0 },
    });
    const outcomes = recordOutcomes(consumer);
    // Consecutive messages of a partition may share a transaction (commit grouping): the duration
    // histograms count transactions, so they are checked against the transactions that committed.
    let transactions = 0;
    consumer.on('transaction:committed', () => {
      transactions++;
    });
    await consumer.start();
    await waitFor('five outcomes', () => outcomes.total === 5);

    const group = { group: groupId, topic };
    expect(await sample(registry, 'oncely_messages_total', { ...group, outcome: 'processed' })).toBe(3);
    expect(
      await sample(registry, 'oncely_messages_total', { ...group, outcome: 'duplicate', duplicate_class: 'republish' }),
    ).toBe(1);
    expect(
      await sample(registry, 'oncely_messages_total', {
        ...group,
        outcome: 'dead_lettered',
        reason: 'invalid_payload',
      }),
    ).toBe(1);
    expect(
      await sample(registry, 'oncely_duplicate_age_seconds_count', { ...group, duplicate_class: 'republish' }),
    ).toBe(1);
    expect(transactions).toBeGreaterThanOrEqual(2); // one per partition at least
    expect(await sample(registry, 'oncely_handler_duration_seconds_count', group)).toBe(transactions);
    expect(await sample(registry, 'oncely_transaction_duration_seconds_count', group)).toBe(transactions);
    expect(await sample(registry, 'oncely_dead_letters_open', { ...group, reason: 'invalid_payload' })).toBe(1);
    // Kafka commits the resolved offsets after each batch: the lag reaches zero on both partitions.
    await waitFor('lag 0 on both partitions', async () => {
      const zero0 = (await sample(registry, 'oncely_consumer_lag', { ...group, partition: '0' })) === 0;
      const zero1 = (await sample(registry, 'oncely_consumer_lag', { ...group, partition: '1' })) === 0;
      return zero0 && zero1;
    });
  });

  it('shows the lag of a stuck partition growing: log end minus committed, not what was fetched', async () => {
    const topic = await env.createTopic('metrics-lag');
    const registry = new Registry();
    const consumer = env.consumer({
      groupId: env.groupId('metrics-lag'),
      handlers: [
        effectHandler(topic, () => {
          throw new Error('the downstream is down');
        }),
      ],
      retry: { attempts: 1 },
      onExhausted: 'pause',
      metrics: { registry, refreshIntervalMs: 0 },
    });
    await env.produce(topic, [jsonMessage('stuck', { n: 1 })]);
    await consumer.start();
    await waitFor('the partition to pause', () => consumer.paused().length === 1);
    await env.produce(topic, [jsonMessage('x', { n: 2 }), jsonMessage('y', { n: 3 })]);
    const labels = { topic, partition: '0' };
    await waitFor('lag 3', async () => (await sample(registry, 'oncely_consumer_lag', labels)) === 3);
    await consumer.stop();
    // A stopped consumer answers no more: its series leaves the registry.
    expect(await sample(registry, 'oncely_consumer_lag', labels)).toBeUndefined();
  });
});
