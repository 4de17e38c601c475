import { drizzle } from 'drizzle-orm/node-postgres';
import { describe, expect, it } from 'vitest';

import { publish } from '../../../src/index.js';
import { spawnFixture } from '../../support/child.js';
import { effectHandler, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';
import { readTopic, testRelay } from './support.js';

const env = useTestEnvironment();

const childEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  KAFKA_BROKERS: env.brokers.join(','),
  DATABASE_URL: env.databaseUrl,
  ...extra,
});

async function pendingCount(topic: string): Promise<number> {
  const { rows } = await env.pool.query<{ n: string }>(
    "SELECT count(*) AS n FROM oncely.outbox WHERE topic = $1 AND status = 'pending'",
    [topic],
  );
  return Number(rows[0]?.n);
}

describe('the outbox relay under crashes', () => {
  it("G8: a relay SIGKILLed between the broker's ack and the mark re-sends, and the downstream consumer classifies it republish", async () => {
    await env.pool.query('DELETE FROM oncely.outbox');
    const out = await env.createTopic('ob-crash');
    const db = drizzle(env.pool);
    for (const n of [1, 2, 3]) {
      await db.transaction((tx) => publish(tx, { topic: out, key: 'acct-1', value: { n } }, { messageId: `ev-${n}` }));
    }
    const relay = spawnFixture('outbox-relay.ts', childEnv({ HANG_AFTER_SEND: '1' }));
    const acked = await relay.waitForLine((line) => line.event === 'acked');
    expect(acked.messageIds).toEqual(['ev-1', 'ev-2', 'ev-3']);
    await relay.kill('SIGKILL');
    // Acknowledged by the broker, never marked: still pending.
    expect(await pendingCount(out)).toBe(3);

    await testRelay({ db: env.db, kafka: env.kafka }).start();
    await waitFor('the re-send marked', async () => (await pendingCount(out)) === 0);

    const consumer = env.consumer({ groupId: env.groupId('ob-downstream'), handlers: [effectHandler(out)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('six deliveries downstream', () => outcomes.total === 6);
    expect(outcomes.processed.map((p) => p.messageId)).toEqual(['ev-1', 'ev-2', 'ev-3']);
    expect(outcomes.duplicates.map((d) => [d.messageId, d.duplicateClass])).toEqual([
      ['ev-1', 'republish'],
      ['ev-2', 'republish'],
      ['ev-3', 'republish'],
    ]);
    expect((await env.effectsOf(out)).map((e) => e.messageId)).toEqual(['ev-1', 'ev-2', 'ev-3']);
  });

  it('G8: order per key holds across a relay failover', async () => {
    await env.pool.query('DELETE FROM oncely.outbox');
    const out = await env.createTopic('ob-failover', 3);
    const keys = ['acct-a', 'acct-b', 'acct-c', 'acct-d'];
    const perKey = 40;
    const first = spawnFixture('outbox-relay.ts', childEnv({ BATCH_SIZE: '7' }));
    await first.waitForLine((line) => line.event === 'active');
    const standby = testRelay({ db: env.db, kafka: env.kafka, batchSize: 7 });
    await standby.start();

    const db = drizzle(env.pool);
    const publishing = (async () => {
      for (let seq = 0; seq < perKey; seq++) {
        await db.transaction(async (tx) => {
          for (const key of keys) await publish(tx, { topic: out, key, value: { key, seq } });
        });
      }
    })();
    // Kill the active relay while it is sending, not before or after.
    await waitFor('some rows sent by the first relay', async () => {
      const { rows } = await env.pool.query<{ n: string }>(
        "SELECT count(*) AS n FROM oncely.outbox WHERE topic = $1 AND status = 'sent'",
        [out],
      );
      return Number(rows[0]?.n) >= 20;
    });
    await first.kill('SIGKILL');
    expect(standby.isActive()).toBe(false);
    await publishing;
    await waitFor('the standby to take over', () => standby.isActive());
    await waitFor('every row sent', async () => (await pendingCount(out)) === 0);

    const total = keys.length * perKey;
    const received = await readTopic(
      env.kafka,
      out,
      (r) => new Set(r.map((m) => m.headers['message-id'])).size >= total,
    );
    for (const key of keys) {
      // Re-sends may repeat events; the first time each event appears, it appears in order.
      const seen = new Set<string>();
      const firsts: number[] = [];
      for (const message of received.filter((m) => m.key === key)) {
        const id = message.headers['message-id'] ?? '';
        if (seen.has(id)) continue;
        seen.add(id);
        firsts.push((JSON.parse(message.value ?? '{}') as { seq: number }).seq);
      }
      expect(firsts, key).toEqual(Array.from({ length: perKey }, (_, i) => i));
    }
  });
});
