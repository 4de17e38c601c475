import { drizzle } from 'drizzle-orm/node-postgres';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { beforeEach, describe, expect, it } from 'vitest';

import { publish } from '../../../src/index.js';
import { attachMetrics } from '../../../src/metrics/prometheus.js';
import { RELAY_LOCK_KEY } from '../../../src/outbox/lock-session.js';
import { EventHub } from '../../../src/events/index.js';
import { insertReplay, setResumePoints } from '../../../src/replay/store.js';
import { useTestEnvironment, waitFor } from '../../support/integration.js';
import { testRelay } from '../outbox/support.js';

const env = useTestEnvironment();

/** One sample's value (histogram `_count` / `_sum` read from the histogram). */
async function sample(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const base = name.replace(/_(count|sum)$/, '');
  const metric = await registry.getSingleMetric(base)?.get();
  return metric?.values.find(
    (v) =>
      (v as { metricName?: string }).metricName === (base === name ? undefined : name) &&
      Object.entries(labels).every(([k, l]) => v.labels[k] === l),
  )?.value;
}

beforeEach(async () => {
  await env.pool.query('DELETE FROM oncely.outbox');
});

describe('metrics of the outbox relay', () => {
  it('reports the backlog from a standby, then the latency of what the active relay sent', async () => {
    const out = await env.createTopic('obm-out');
    const missing = `obm-missing-${Date.now()}`;
    // Another session holds the relay lock: the relay under test stays a standby and sends nothing.
    const holder = await env.pool.connect();
    await holder.query('SELECT pg_advisory_lock($1)', [RELAY_LOCK_KEY.toString()]);
    try {
      for (const n of [1, 2, 3])
        await drizzle(env.pool).transaction((tx) => publish(tx, { topic: out, key: 'k', value: { n } }));
      await drizzle(env.pool).transaction((tx) => publish(tx, { topic: missing, value: { n: 4 } }));
      const registry = new Registry();
      const relay = testRelay({
        db: env.pool,
        kafka: env.kafka,
        maxAttempts: 1,
        metrics: { registry, refreshIntervalMs: 0 },
      });
      await relay.start();

      expect(await sample(registry, 'oncely_outbox_backlog', { topic: out, status: 'pending' })).toBe(3);
      expect(await sample(registry, 'oncely_outbox_backlog', { topic: missing, status: 'pending' })).toBe(1);
      expect(await sample(registry, 'oncely_outbox_oldest_pending_age_seconds', {})).toBeGreaterThan(0);
      expect(relay.isActive()).toBe(false);

      await holder.query('SELECT pg_advisory_unlock($1)', [RELAY_LOCK_KEY.toString()]);
      await waitFor('the three events sent and the unsendable one parked', async () => {
        const sent = await sample(registry, 'oncely_relay_latency_seconds_count', { topic: out });
        const parked = await sample(registry, 'oncely_outbox_backlog', { topic: missing, status: 'parked' });
        return sent === 3 && parked === 1;
      });
      expect(await sample(registry, 'oncely_outbox_backlog', { topic: out, status: 'pending' })).toBeUndefined();
      expect(await sample(registry, 'oncely_outbox_oldest_pending_age_seconds', {})).toBe(0);
      // sent_at − created_at: the time the events waited for the lock, at least.
      expect(await sample(registry, 'oncely_relay_latency_seconds_sum', { topic: out })).toBeGreaterThan(0);
      const labelNames = (await registry.getMetricsAsJSON()).flatMap((m) =>
        m.values.flatMap((v) => Object.keys(v.labels)),
      );
      expect(new Set(labelNames.filter((l) => l !== 'le'))).toEqual(new Set(['topic', 'status']));
    } finally {
      holder.release();
    }
  });
});

describe('replay progress metrics', () => {
  it('shows a running replay’s re-read and remaining messages from the group’s resume point, then nothing once it is done', async () => {
    const groupId = env.groupId('rpm');
    const topic = 'rpm-topic';
    const registry = new Registry();
    const metrics = attachMetrics(
      { registry, refreshIntervalMs: 0, lag: false },
      {
        groupId,
        topics: [topic],
        events: new EventHub(pino({ level: 'silent' })),
        kafka: {} as never, // lag is off: never asked
        pool: env.pool,
        logger: pino({ level: 'silent' }),
      },
    );
    metrics.start();
    const client = await env.pool.connect();
    try {
      await insertReplay(client, {
        groupId,
        topic,
        from: '0',
        to: 'latest',
        ranges: [
          { partition: 0, start: '0', end: '10' },
          { partition: 1, start: '5', end: '8' },
        ],
        report: {},
        forced: false,
        requestedBy: 'test',
      });
      const moveTo = (p0: bigint, p1: bigint) =>
        setResumePoints(client, groupId, topic, [
          { partition: 0, offset: p0 },
          { partition: 1, offset: p1 },
        ]);
      await moveTo(4n, 5n);
      const labels = { group: groupId, topic };
      expect(await sample(registry, 'oncely_replay_replayed_messages', labels)).toBe(4);
      expect(await sample(registry, 'oncely_replay_remaining_messages', labels)).toBe(6 + 3);
      await moveTo(10n, 8n);
      expect(await sample(registry, 'oncely_replay_remaining_messages', labels)).toBeUndefined();
      expect(await sample(registry, 'oncely_replay_replayed_messages', labels)).toBeUndefined();
    } finally {
      client.release();
      await metrics.stop();
    }
  });
});
