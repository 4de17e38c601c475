import { randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { spawnFixture } from '../../support/child.js';
import { testPool } from '../../support/settings.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** Message ids applied more than once, from the effects table. */
async function doubled(topic: string): Promise<string[]> {
  const rows = await env.effectsOf(topic);
  const seen = new Map<string, number>();
  for (const row of rows) seen.set(row.messageId, (seen.get(row.messageId) ?? 0) + 1);
  return [...seen].filter(([, n]) => n > 1).map(([id]) => id);
}

describe('G1: the handler’s writes commit at most once per group and message id', () => {
  it('G1: applies a producer duplicate (same message-id, new offset) once and classifies it as a republish', async () => {
    const topic = await env.createTopic('g1-republish');
    const ids = Array.from({ length: 20 }, (_, i) => `pay-${i}`);
    await env.produce(
      topic,
      ids.map((id) => jsonMessage(id, { id, amountCents: 100 })),
    );
    // The producer retries two sends: same id, same bytes, new offsets.
    await env.produce(topic, [
      jsonMessage('pay-3', { id: 'pay-3', amountCents: 100 }),
      jsonMessage('pay-7', { id: 'pay-7', amountCents: 100 }),
    ]);

    const consumer = env.consumer({ groupId: env.groupId('g1'), handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('22 outcomes', () => outcomes.total === 22);

    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(ids);
    expect(outcomes.duplicates).toEqual([
      { partition: 0, offset: '20', messageId: 'pay-3', duplicateClass: 'republish' },
      { partition: 0, offset: '21', messageId: 'pay-7', duplicateClass: 'republish' },
    ]);
  });

  it('G1: runs the handler once when two connections claim the same id at the same time', async () => {
    const topic = await env.createTopic('g1-concurrent', 2);
    // The same event on two partitions, consumed concurrently: both transactions try to claim it.
    await env.produce(topic, [jsonMessage('twin', { n: 1 }, 0), jsonMessage('twin', { n: 1 }, 1)]);
    const watcher = testPool(env.databaseUrl, 1);
    let handlerRuns = 0;
    const handler = effectHandler(topic, async () => {
      handlerRuns += 1;
      // Hold the claim until the other claimer is provably blocked on it (waiting on a lock), so
      // the two claims really overlap instead of merely running one after the other.
      await waitFor(
        'the second claim to block on the first',
        async () => {
          const { rows } = await watcher.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%oncely.inbox%'`,
          );
          return (rows[0]?.n ?? 0) >= 1;
        },
        { timeoutMs: 20_000, intervalMs: 20 },
      );
    });
    const consumer = env.consumer({ groupId: env.groupId('g1c'), concurrency: 2, handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    try {
      await consumer.start();
      await waitFor('both outcomes', () => outcomes.total === 2);
    } finally {
      await watcher.end();
    }
    expect(handlerRuns).toBe(1);
    expect(outcomes.processed).toHaveLength(1);
    expect(outcomes.duplicates).toEqual([expect.objectContaining({ messageId: 'twin', duplicateClass: 'republish' })]);
    expect(await env.effectsOf(topic)).toHaveLength(1);
  });

  it('G1: applies a message once when its member is evicted mid-transaction and a second member takes the partition and processes it too', async () => {
    const topic = await env.createTopic('g1-evicted');
    const groupId = env.groupId('g1e');
    await env.produce(topic, [jsonMessage('victim', { n: 1 }), jsonMessage('after', { n: 2 })]);
    const releaseFile = join(tmpdir(), `oncely-release-${randomUUID()}`);
    const watcher = testPool(env.databaseUrl, 1);
    try {
      // Member 1 (a child process) claims "victim", writes its effect in the open transaction, then
      // blocks its event loop: no heartbeat leaves it, and its 3 s session expires.
      const first = spawnFixture('evictable-consumer.ts', {
        KAFKA_BROKERS: env.brokers.join(','),
        DATABASE_URL: env.databaseUrl,
        TOPIC: topic,
        GROUP_ID: groupId,
        BLOCK_ID: 'victim',
        RELEASE_FILE: releaseFile,
        SESSION_TIMEOUT_MS: '3000',
      });
      await first.waitForLine((l) => l.event === 'inside');

      // Member 2 joins; the group evicts member 1 and gives member 2 the partition, which it
      // fetches from the start (nothing was committed) while member 1 still holds the transaction.
      const second = env.consumer({ groupId, handlers: [effectHandler(topic)] });
      const outcomes = recordOutcomes(second);
      await second.start();
      // Member 2's claim of "victim" waits on member 1's uncommitted inbox row: both members
      // hold the partition and work on the same message at this moment.
      await waitFor(
        'member 2 to block on member 1’s claim',
        async () => {
          const { rows } = await watcher.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%oncely.inbox%'`,
          );
          return (rows[0]?.n ?? 0) >= 1;
        },
        { timeoutMs: 30_000, intervalMs: 50 },
      );

      // Member 1 finishes and commits (PostgreSQL does not know it lost the partition).
      writeFileSync(releaseFile, '');
      await first.waitForLine((l) => l.event === 'processed' && l.id === 'victim');
      // Member 1 rejoins as soon as it unblocks, and the group may give it the partition back
      // before member 2 gets to "after": then member 1, not member 2, processes "after". Either
      // way each message is applied once, and member 2 never applies "victim".
      const processedByFirst = (): unknown[] =>
        first.lines.filter((l) => l.event === 'processed' && l.id === 'after').map((l) => l.id);
      await waitFor(
        'member 2 to record "victim" and one member to process "after"',
        () =>
          outcomes.duplicates.some((d) => d.messageId === 'victim') &&
          (outcomes.processed.some((p) => p.messageId === 'after') || processedByFirst().length > 0),
      ).catch((error: unknown) => {
        // What each member saw, for the failure message.
        throw new Error(
          `${String(error)}; member 1: ${JSON.stringify(first.lines)}; member 2: ${JSON.stringify(outcomes)}`,
        );
      });

      expect(outcomes.duplicates.filter((d) => d.messageId === 'victim')).toHaveLength(1);
      expect(outcomes.processed.filter((p) => p.messageId === 'victim')).toEqual([]);
      const afterProcessed = outcomes.processed.filter((p) => p.messageId === 'after').length;
      expect(afterProcessed + processedByFirst().length).toBe(1);
      expect((await env.effectsOf(topic)).map((r) => r.messageId).sort()).toEqual(['after', 'victim']);
      expect(await doubled(topic)).toEqual([]);
    } finally {
      writeFileSync(releaseFile, '');
      await watcher.end();
      rmSync(releaseFile, { force: true });
    }
  });

  it('G1: applies every message exactly once while a third consumer joins the group mid-stream', async () => {
    const partitions = 6;
    const topic = await env.createTopic('g1-rebalance', partitions);
    const groupId = env.groupId('g1r');
    const total = 1_200;
    const message = (i: number) => jsonMessage(`evt-${i}`, { i }, i % partitions);
    await env.produce(
      topic,
      Array.from({ length: total / 2 }, (_, i) => message(i)),
    );

    // A little work per message so the rebalance lands while batches are in flight.
    const slow = effectHandler(topic, () => new Promise((resolve) => setTimeout(resolve, 2)));
    const first = env.consumer({ groupId, concurrency: 3, handlers: [slow] });
    const second = env.consumer({ groupId, concurrency: 3, handlers: [slow] });
    await Promise.all([first.start(), second.start()]);
    await waitFor('a quarter applied', async () => (await env.effectsOf(topic)).length >= total / 4);

    const third = env.consumer({ groupId, concurrency: 3, handlers: [slow] });
    const thirdOutcomes = recordOutcomes(third);
    await third.start();
    await env.produce(
      topic,
      Array.from({ length: total / 2 }, (_, i) => message(total / 2 + i)),
    );

    await waitFor(
      'every partition recorded to its end',
      async () => {
        const offsets = await env.offsetsOf(groupId, topic);
        const sum = [...offsets.values()].reduce((a, b) => a + b, 0n);
        return sum === BigInt(total);
      },
      { timeoutMs: 90_000 },
    );
    const rows = await env.effectsOf(topic);
    expect(await doubled(topic)).toEqual([]);
    expect(new Set(rows.map((r) => r.messageId)).size).toBe(total);
    expect(rows).toHaveLength(total);
    // The joiner got partitions and did real work: the rebalance happened mid-stream.
    expect(thirdOutcomes.processed.length).toBeGreaterThan(0);
  });
});
