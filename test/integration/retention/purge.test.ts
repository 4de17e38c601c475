import { describe, expect, it } from 'vitest';

import { discardDeadLetter, listDeadLetters, purge } from '../../../src/index.js';
import { tryLockPurge, unlockPurge } from '../../../src/retention/store.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

async function consume(topic: string, groupId: string, count: number, options: { retention?: false | object } = {}) {
  const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)], ...options });
  const outcomes = recordOutcomes(consumer);
  await consumer.start();
  await waitFor(`${count} outcomes`, () => outcomes.total === count);
  return { consumer, outcomes };
}

async function inboxOffsets(groupId: string): Promise<[number, number][]> {
  const { rows } = await env.pool.query<{ partition: number; offset: string }>(
    'SELECT partition, "offset" FROM oncely.inbox WHERE consumer_group = $1 ORDER BY 1, 2',
    [groupId],
  );
  return rows.map((r) => [r.partition, Number(r.offset)]);
}

async function horizons(groupId: string): Promise<[number, string][]> {
  const { rows } = await env.pool.query<{ partition: number; horizon_offset: string }>(
    'SELECT partition, horizon_offset FROM oncely.inbox_horizons WHERE consumer_group = $1 ORDER BY 1',
    [groupId],
  );
  return rows.map((r) => [r.partition, r.horizon_offset]);
}

describe('retention', () => {
  it('G6: a purge never deletes a row a redelivery could still need', async () => {
    // Resume points are moved by hand below, as an operator's SQL would: their marks (the record
    // before each, which recognises the log) go with the old offset, so they are cleared too.
    // Wolverine #1725: a consumer down longer than the window with processed messages whose
    // offsets Kafka has not committed. Partition 0 lost its last Kafka commits (Kafka at 2, the
    // database at 5); partition 1's resume point was rewound to 1 (Kafka at 5).
    const topic = await env.createTopic('g6-purge', 2);
    const groupId = env.groupId('g6-purge');
    for (const partition of [0, 1]) {
      await env.produce(
        topic,
        Array.from({ length: 5 }, (_, i) => jsonMessage(`p-${partition}-${i}`, { i }, partition)),
      );
    }
    const { consumer } = await consume(topic, groupId, 10);
    await consumer.stop();
    await env.admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '2' }] });
    await env.pool.query(
      'UPDATE oncely.offsets SET next_offset = 1, previous_payload_hash = NULL, previous_timestamp = NULL WHERE consumer_group = $1 AND partition = 1',
      [groupId],
    );

    const result = await purge({ pool: env.pool, kafka: env.kafka, groupId, inboxFor: 0, pauseMs: 0 });
    expect(result.inboxDeleted).toBe(3);
    // Kept: every row at or above min(Kafka committed, database resume point) of its partition.
    expect(await inboxOffsets(groupId)).toEqual([
      [0, 2],
      [0, 3],
      [0, 4],
      [1, 1],
      [1, 2],
      [1, 3],
      [1, 4],
    ]);

    // The group restarts from those offsets in both stores: every redelivery is a duplicate.
    await env.admin.setOffsets({ groupId, topic, partitions: [{ partition: 1, offset: '1' }] });
    await env.pool.query(
      'UPDATE oncely.offsets SET next_offset = 2, previous_payload_hash = NULL, previous_timestamp = NULL WHERE consumer_group = $1 AND partition = 0',
      [groupId],
    );
    const before = await env.effectsOf(topic);
    const { outcomes } = await consume(topic, groupId, 7);
    expect(outcomes.processed).toEqual([]);
    expect(await env.effectsOf(topic)).toEqual(before);
  });

  it('keeps rows inside the window whatever the offsets say', async () => {
    const topic = await env.createTopic('purge-window');
    const groupId = env.groupId('purge-window');
    await env.produce(topic, [jsonMessage('w-0', {}), jsonMessage('w-1', {})]);
    (await consume(topic, groupId, 2)).consumer.stop().catch(() => undefined);
    await waitFor('the committed offset', async () => (await env.committedOffsetsOf(groupId, topic)).get(0) === 2n);
    const result = await purge({ pool: env.pool, kafka: env.kafka, groupId, inboxFor: 60_000, pauseMs: 0 });
    expect(result).toMatchObject({ ran: true, inboxDeleted: 0 });
    expect(await inboxOffsets(groupId)).toHaveLength(2);
    expect(await horizons(groupId)).toEqual([]);
  });

  it('deletes in batches, oldest first, and raises each partition’s horizon with each batch, never lowering it', async () => {
    const topic = await env.createTopic('purge-batches', 2);
    const groupId = env.groupId('purge-batches');
    await env.produce(topic, [
      ...Array.from({ length: 7 }, (_, i) => jsonMessage(`b-0-${i}`, {}, 0)),
      ...Array.from({ length: 5 }, (_, i) => jsonMessage(`b-1-${i}`, {}, 1)),
    ]);
    const { consumer } = await consume(topic, groupId, 12);
    await consumer.stop();

    const result = await purge({ pool: env.pool, kafka: env.kafka, groupId, inboxFor: 0, batchSize: 5, pauseMs: 0 });
    expect(result).toMatchObject({ ran: true, inboxDeleted: 12 });
    expect(result.batches).toBeGreaterThanOrEqual(3);
    expect(await horizons(groupId)).toEqual([
      [0, '7'],
      [1, '5'],
    ]);
    expect(result.horizons).toEqual([
      { topic, partition: 0, horizon: '7' },
      { topic, partition: 1, horizon: '5' },
    ]);

    // A later purge after a rewind (lower bounds) leaves the horizons where they were.
    await env.pool.query(
      'UPDATE oncely.offsets SET next_offset = 1, previous_payload_hash = NULL, previous_timestamp = NULL WHERE consumer_group = $1',
      [groupId],
    );
    await purge({ pool: env.pool, kafka: env.kafka, groupId, inboxFor: 0, pauseMs: 0 });
    expect(await horizons(groupId)).toEqual([
      [0, '7'],
      [1, '5'],
    ]);
  });

  it('keeps open dead letters and their inbox rows; purges resolved ones past their window', async () => {
    const topic = await env.createTopic('purge-dead-letters');
    const groupId = env.groupId('purge-dead-letters');
    await env.produce(topic, [
      { value: 'not json', headers: { 'message-id': 'd-0' } },
      { value: 'not json either', headers: { 'message-id': 'd-1' } },
      jsonMessage('d-2', {}),
    ]);
    const { consumer } = await consume(topic, groupId, 3);
    await consumer.stop();
    const [first] = await listDeadLetters(env.db, { groupId });
    await discardDeadLetter(env.db, first?.id ?? '', 'test data');

    const result = await purge({
      pool: env.pool,
      kafka: env.kafka,
      groupId,
      inboxFor: 0,
      deadLettersFor: 0,
      pauseMs: 0,
    });
    expect(result).toMatchObject({ inboxDeleted: 2, deadLettersDeleted: 1 });
    // The open dead letter (offset 1) keeps its inbox row: a retry needs it.
    expect(await inboxOffsets(groupId)).toEqual([[0, 1]]);
    expect((await listDeadLetters(env.db, { groupId, status: 'all' })).map((l) => l.messageId)).toEqual(['d-1']);
  });

  it('runs one purge per group at a time, and extra purgers in the same job', async () => {
    const groupId = env.groupId('purge-lock');
    const holder = await env.pool.connect();
    try {
      expect(await tryLockPurge(holder, groupId)).toBe(true);
      const skipped = await purge({ pool: env.pool, kafka: env.kafka, groupId });
      expect(skipped.ran).toBe(false);
    } finally {
      // Unlock before giving the connection back: a destroyed connection's session (and its lock)
      // ends on the server a moment later, which the next purge could still see.
      await unlockPurge(holder, groupId);
      holder.release();
    }
    const ran = await purge({
      pool: env.pool,
      kafka: env.kafka,
      groupId,
      extraPurgers: { outboxSent: () => Promise.resolve(4) },
    });
    expect(ran).toMatchObject({ ran: true, extra: { outboxSent: 4 } });
  });

  it("purges in-process with the consumer's retention option", async () => {
    const topic = await env.createTopic('purge-option');
    const groupId = env.groupId('purge-option');
    await env.produce(topic, [jsonMessage('o-0', {}), jsonMessage('o-1', {})]);
    await consume(topic, groupId, 2, { retention: { inboxFor: 0, every: 1_000 } });
    await waitFor('the in-process purge', async () => (await inboxOffsets(groupId)).length === 0, {
      timeoutMs: 20_000,
    });
    expect(await horizons(groupId)).toEqual([[0, '2']]);
  });
});
