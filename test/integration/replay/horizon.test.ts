import { describe, expect, it } from 'vitest';

import { hasErrorCode, planReplay, purge, runReplay } from '../../../src/index.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

describe('G6: the inbox horizon counts every id a purge could have removed', () => {
  it('G6: a replay over republished copies of a purged message counts every copy at risk and run refuses', async () => {
    const topic = await env.createTopic('g6-copies');
    const groupId = env.groupId('g6-copies');
    const originals = Array.from({ length: 20 }, (_, i) => jsonMessage(`copy-${i}`, { i }));
    await env.produce(topic, originals);
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('20 processed', () => outcomes.processed.length === 20);
    // The producer publishes all 20 again (same ids, same bytes, offsets 20–39), inside the window.
    await env.produce(topic, originals);
    await waitFor('20 republishes', () => outcomes.duplicates.length === 20);
    expect(new Set(outcomes.duplicates.map((d) => d.duplicateClass))).toEqual(new Set(['republish']));
    await consumer.stop();

    // The purge removes the 20 rows (offsets 0–19); the copies at 20–39 keep no row of their own.
    expect((await purge({ pool: env.pool, kafka: env.kafka, groupId, inboxFor: 0, pauseMs: 0 })).inboxDeleted).toBe(20);
    // Five genuinely new messages after the purge (offsets 40–44), never consumed.
    const fresh = Array.from({ length: 5 }, (_, i) => jsonMessage(`fresh-${i}`, { i }));
    await env.produce(topic, fresh);

    const plan = await planReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 20 });
    // Independently: ids in the range that were applied once already and have no inbox row.
    const inRange = [...originals, ...fresh].map((m) => String(m.headers?.['message-id']));
    const { rows } = await env.pool.query<{ count: string }>(
      `SELECT count(*) FROM unnest($1::text[]) AS r(id)
        WHERE EXISTS (SELECT 1 FROM effects e WHERE e.topic = $2 AND e.message_id = r.id)
          AND NOT EXISTS (SELECT 1 FROM oncely.inbox i WHERE i.consumer_group = $3 AND i.message_id = r.id)`,
      [inRange, topic, groupId],
    );
    expect(Number(rows[0]?.count)).toBe(20);
    expect(plan.totals).toEqual({ messages: 25, skipped: 0, applied: 5, atRisk: 20, deadLettered: 0, gone: 0 });
    expect(plan.partitions[0]?.atRiskRange).toEqual({ first: '20', last: '39' });

    const refused = await runReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 20 }).catch(
      (error: unknown) => error,
    );
    expect(hasErrorCode(refused, 'ONCELY_REPLAY_AT_RISK')).toBe(true);
    expect(await env.offsetsOf(groupId, topic)).toEqual(new Map([[0, 40n]]));

    // Forced, the count proves exact: exactly the at-risk messages are applied a second time.
    await runReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 20, force: true });
    const again = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const replayed = recordOutcomes(again);
    await again.start();
    await waitFor('25 replayed outcomes', () => replayed.total === 25);
    const applied = await env.pool.query<{ twice: string; once: string }>(
      `SELECT count(*) FILTER (WHERE n = 2) AS twice, count(*) FILTER (WHERE n = 1) AS once
         FROM (SELECT message_id, count(*) AS n FROM effects WHERE topic = $1 GROUP BY message_id) t`,
      [topic],
    );
    expect(applied.rows[0]).toEqual({ twice: String(plan.totals.atRisk), once: String(plan.totals.applied) });
  });

  it('G6: messages published after the last purge are new, not at risk', async () => {
    const topic = await env.createTopic('g6-after');
    const groupId = env.groupId('g6-after');
    await env.produce(topic, [jsonMessage('a-0', {}), jsonMessage('a-1', {})]);
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('2 processed', () => outcomes.processed.length === 2);
    await consumer.stop();
    await purge({ pool: env.pool, kafka: env.kafka, groupId, inboxFor: 0, pauseMs: 0 });
    await env.produce(topic, [jsonMessage('a-2', {}), jsonMessage('a-3', {})]);

    const plan = await planReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 'earliest' });
    expect(plan.totals).toMatchObject({ messages: 4, atRisk: 2, applied: 2 });
    expect(plan.purgedUntil).not.toBeNull();
  });
});
