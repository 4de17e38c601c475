import { describe, expect, it } from 'vitest';

import { hasErrorCode, planReplay, purge, replayStatus, runReplay } from '../../../src/index.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** `perPartition` messages on each partition, consumed once with the effect handler; the group is then stopped. */
async function consumedTopic(prefix: string, perPartition: number, partitions = 1) {
  const topic = await env.createTopic(prefix, partitions);
  const groupId = env.groupId(prefix);
  for (let p = 0; p < partitions; p++) {
    await env.produce(
      topic,
      Array.from({ length: perPartition }, (_, i) => jsonMessage(`${prefix}-${p}-${i}`, { i }, p)),
    );
  }
  const total = perPartition * partitions;
  const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
  const outcomes = recordOutcomes(consumer);
  await consumer.start();
  await waitFor(`${total} outcomes`, () => outcomes.total === total);
  await consumer.stop();
  return { topic, groupId };
}

/** Purges everything a redelivery cannot need (window 0): the whole consumed range here. */
async function purgeAll(groupId: string) {
  return purge({ pool: env.pool, kafka: env.kafka, groupId, inboxFor: 0, pauseMs: 0 });
}

async function auditRows(groupId: string) {
  const { rows } = await env.pool.query<{ forced: boolean; ranges: unknown; report: { totals: unknown } }>(
    'SELECT forced, ranges, report FROM oncely.replays WHERE consumer_group = $1 ORDER BY id',
    [groupId],
  );
  return rows;
}

describe('G6: replay with a safety report', () => {
  it('G6: a replay inside the retention window changes nothing', async () => {
    const { topic, groupId } = await consumedTopic('g6-inside', 5, 2);
    const before = await env.effectsOf(topic);

    const plan = await planReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 'earliest' });
    expect(plan.totals).toEqual({ messages: 10, skipped: 10, applied: 0, atRisk: 0, deadLettered: 0, gone: 0 });

    const run = await runReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 'earliest' });
    expect(run.forced).toBe(false);
    expect(await env.offsetsOf(groupId, topic)).toEqual(
      new Map([
        [0, 0n],
        [1, 0n],
      ]),
    );
    expect(await env.committedOffsetsOf(groupId, topic)).toEqual(
      new Map([
        [0, 0n],
        [1, 0n],
      ]),
    );

    const again = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const replayed = recordOutcomes(again);
    await again.start();
    await waitFor('10 replayed outcomes', () => replayed.total === 10);
    expect(replayed.processed).toEqual([]);
    expect(replayed.duplicates).toHaveLength(10);
    expect(await env.effectsOf(topic)).toEqual(before);

    // `oncely status` shows the replay through to its end.
    const [progress] = await waitFor('the replay to complete', async () => {
      const status = await replayStatus(env.pool, { groupId });
      return status[0]?.completedAt !== null ? status : undefined;
    });
    expect(progress?.partitions.map((p) => [p.position, p.end, p.skippedSoFar, p.appliedSoFar])).toEqual([
      ['5', '5', 5, 0],
      ['5', '5', 5, 0],
    ]);
    expect(await auditRows(groupId)).toEqual([expect.objectContaining({ forced: false })]);
  });

  it('G6: past the horizon run is refused and the plan names the at-risk range', async () => {
    const { topic, groupId } = await consumedTopic('g6-refused', 6);
    expect((await purgeAll(groupId)).inboxDeleted).toBe(6);

    const plan = await planReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 2 });
    expect(plan.partitions[0]).toMatchObject({
      horizon: '6',
      messages: 4,
      atRisk: 4,
      atRiskRange: { first: '2', last: '5' },
    });

    const refused = await runReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 2 }).catch(
      (error: unknown) => error,
    );
    expect(hasErrorCode(refused, 'ONCELY_REPLAY_AT_RISK')).toBe(true);
    expect((refused as Error).message).toContain('partition 0 offsets 2–5 (4)');
    // Refused means nothing moved and nothing was recorded.
    expect(await env.offsetsOf(groupId, topic)).toEqual(new Map([[0, 6n]]));
    expect(await env.committedOffsetsOf(groupId, topic)).toEqual(new Map([[0, 6n]]));
    expect(await auditRows(groupId)).toEqual([]);
  });

  it('G6: --force proceeds and the audit row says forced', async () => {
    const { topic, groupId } = await consumedTopic('g6-forced', 4);
    await purgeAll(groupId);

    const run = await runReplay({
      pool: env.pool,
      kafka: env.kafka,
      groupId,
      topic,
      from: 'earliest',
      force: true,
      requestedBy: 'ops@example',
    });
    expect(run.forced).toBe(true);
    expect(await env.offsetsOf(groupId, topic)).toEqual(new Map([[0, 0n]]));
    expect(await env.committedOffsetsOf(groupId, topic)).toEqual(new Map([[0, 0n]]));
    const { rows } = await env.pool.query(
      'SELECT forced, requested_by, range_from, range_to, ranges, report FROM oncely.replays WHERE consumer_group = $1',
      [groupId],
    );
    expect(rows).toEqual([
      {
        forced: true,
        requested_by: 'ops@example',
        range_from: 'earliest',
        range_to: 'latest',
        ranges: [{ partition: 0, start: '0', end: '4' }],
        report: expect.objectContaining({ totals: expect.objectContaining({ atRisk: 4 }) }),
      },
    ]);
  });

  it('refuses a run while the group has live members, naming them', async () => {
    const { topic, groupId } = await consumedTopic('replay-live', 2);
    const live = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    await live.start();
    const refused = await runReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 'earliest' }).catch(
      (error: unknown) => error,
    );
    expect(hasErrorCode(refused, 'ONCELY_GROUP_ACTIVE')).toBe(true);
    expect((refused as Error).message).toContain('oncely-tests');
  });

  it('classifies new, dead-lettered and gone messages, and resolves times through Kafka', async () => {
    const topic = await env.createTopic('replay-classes');
    const groupId = env.groupId('replay-classes');
    await env.produce(topic, [
      jsonMessage('c-0', { i: 0 }),
      jsonMessage('c-1', { i: 1 }),
      { value: 'not json', headers: { 'message-id': 'c-bad' } },
      jsonMessage('c-3', { i: 3 }),
    ]);
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('4 outcomes', () => outcomes.total === 4);
    await consumer.stop();
    const afterFirst = new Date();
    await env.produce(topic, [jsonMessage('c-4', { i: 4 }), jsonMessage('c-4', { i: 4 })]);
    await env.admin.fetchTopicMetadata({ topics: [topic] });
    await env.admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '1' }] });

    const plan = await planReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: 0 });
    // Offset 0 is gone; 1 and 3 in the inbox; 2 dead-lettered; 4 new, 5 its republished duplicate.
    expect(plan.totals).toEqual({ messages: 5, skipped: 3, applied: 1, atRisk: 0, deadLettered: 1, gone: 1 });

    const later = await planReplay({ pool: env.pool, kafka: env.kafka, groupId, topic, from: afterFirst });
    expect(later.partitions[0]).toMatchObject({ start: '4', messages: 2, applied: 1, skipped: 1 });
  });
});
