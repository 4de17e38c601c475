import { createHash } from 'node:crypto';

import { getTableConfig } from 'drizzle-orm/pg-core';
import { describe, expect, it } from 'vitest';

import { hasErrorCode, inboxHorizonsTable, replaysTable, resetOffsets, showOffsets } from '../../../src/index.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** A topic of `count` messages on partition 0, consumed once by a group that is then stopped. */
async function consumedTopic(prefix: string, count: number, partitions = 1) {
  const topic = await env.createTopic(prefix, partitions);
  const groupId = env.groupId(prefix);
  await env.produce(
    topic,
    Array.from({ length: count }, (_, i) => jsonMessage(`${prefix}-${i}`, { i }, i % partitions)),
  );
  const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
  const outcomes = recordOutcomes(consumer);
  await consumer.start();
  await waitFor(`${count} outcomes`, () => outcomes.total === count);
  await consumer.stop();
  return { topic, groupId };
}

describe('oncely offsets', () => {
  it("shows, per partition, Kafka's committed offset, the database resume point, the log bounds and a verdict", async () => {
    const { topic, groupId } = await consumedTopic('offsets-show', 5);
    expect(await showOffsets({ pool: env.pool, kafka: env.kafka, groupId, topic })).toEqual([
      {
        groupId,
        topic,
        partition: 0,
        kafkaCommitted: '5',
        databaseResumePoint: '5',
        logStart: '0',
        highWatermark: '5',
        verdict: 'ok',
      },
    ]);

    // A resume point above the log end (topic re-created, log truncated) is named, not skipped to.
    await env.pool.query('UPDATE oncely.offsets SET next_offset = 12 WHERE consumer_group = $1', [groupId]);
    const [ahead] = await showOffsets({ pool: env.pool, kafka: env.kafka, groupId });
    expect(ahead).toMatchObject({ databaseResumePoint: '12', highWatermark: '5', verdict: 'db-ahead-of-log' });

    // A resume point below the log start: the records between them are gone unprocessed.
    await env.admin.fetchTopicMetadata({ topics: [topic] }); // kafkajs finds the leader only in fresh metadata
    await env.admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '4' }] });
    await env.pool.query('UPDATE oncely.offsets SET next_offset = 2 WHERE consumer_group = $1', [groupId]);
    const [below] = await showOffsets({ pool: env.pool, kafka: env.kafka, topic });
    expect(below).toMatchObject({ logStart: '4', databaseResumePoint: '2', verdict: 'below-log-start' });
  });

  it('refuses to reset while the group has live members, and names them', async () => {
    const { topic, groupId } = await consumedTopic('offsets-live', 3);
    const live = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    await live.start();
    const refused = await resetOffsets({ pool: env.pool, kafka: env.kafka, groupId, topic, to: 'earliest' }).catch(
      (error: unknown) => error,
    );
    expect(hasErrorCode(refused, 'ONCELY_GROUP_ACTIVE')).toBe(true);
    expect((refused as Error).message).toMatch(/1 live member: oncely-tests \(oncely-tests-[^)]+\)/);
    // Nothing moved in either store.
    expect(await env.offsetsOf(groupId, topic)).toEqual(new Map([[0, 3n]]));
    expect(await env.committedOffsetsOf(groupId, topic)).toEqual(new Map([[0, 3n]]));
  });

  it("sets Kafka's committed offset and oncely.offsets together, and the group resumes there", async () => {
    const { topic, groupId } = await consumedTopic('offsets-reset', 6, 2);
    const result = await resetOffsets({ pool: env.pool, kafka: env.kafka, groupId, topic, to: 1, partitions: [1] });
    expect(result.partitions).toEqual([{ partition: 1, from: '3', to: '1' }]);
    expect(await env.offsetsOf(groupId, topic)).toEqual(
      new Map([
        [0, 3n],
        [1, 1n],
      ]),
    );
    expect(await env.committedOffsetsOf(groupId, topic)).toEqual(
      new Map([
        [0, 3n],
        [1, 1n],
      ]),
    );
    const outOfRange = await resetOffsets({ pool: env.pool, kafka: env.kafka, groupId, topic, to: 99 }).catch(
      (error: unknown) => error,
    );
    expect(hasErrorCode(outOfRange, 'ONCELY_OFFSET_OUT_OF_RANGE')).toBe(true);

    // The group re-reads partition 1 from offset 1: two duplicates, nothing applied again.
    const before = await env.effectsOf(topic);
    const again = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(again);
    await again.start();
    await waitFor('2 redelivered outcomes', () => outcomes.total === 2);
    expect(outcomes.duplicates.map((d) => [d.partition, d.offset])).toEqual([
      [1, '1'],
      [1, '2'],
    ]);
    expect(await env.effectsOf(topic)).toEqual(before);
  });

  it('G2: marks a reset resume point with the record before it in the log it was reset in, and leaves none at the log start', async () => {
    const { topic, groupId } = await consumedTopic('offsets-mark', 3);
    const markOf = async () =>
      (
        await env.pool.query<{ hash: Buffer | null; ts: string | null }>(
          `SELECT previous_payload_hash AS hash, previous_timestamp AS ts FROM oncely.offsets
            WHERE consumer_group = $1 AND topic = $2 AND partition = 0`,
          [groupId, topic],
        )
      ).rows[0];
    await resetOffsets({ pool: env.pool, kafka: env.kafka, groupId, topic, to: 2 });
    // The record at offset 1 is {"i":1}: its fingerprint marks resume point 2.
    expect((await markOf())?.hash).toEqual(
      createHash('sha256')
        .update(JSON.stringify({ i: 1 }))
        .digest(),
    );
    expect((await markOf())?.ts).toMatch(/^\d+$/);
    await resetOffsets({ pool: env.pool, kafka: env.kafka, groupId, topic, to: 'earliest' });
    expect(await markOf()).toEqual({ hash: null, ts: null });
  });

  it('matches the exported drizzle tables of horizons and replays to the migrated columns', async () => {
    for (const table of [inboxHorizonsTable, replaysTable]) {
      const config = getTableConfig(table);
      const { rows } = await env.pool.query<{ column_name: string; is_nullable: string }>(
        `SELECT column_name, is_nullable FROM information_schema.columns
          WHERE table_schema = 'oncely' AND table_name = $1`,
        [config.name],
      );
      expect(config.columns.map((c) => [c.name, c.notNull ? 'NO' : 'YES']).sort()).toEqual(
        rows.map((r) => [r.column_name, r.is_nullable]).sort(),
      );
    }
  });
});
