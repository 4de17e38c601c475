import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';

import { type ConsumerEvents, resetOffsets, showOffsets } from '../../../src/index.js';
import {
  effectHandler,
  jsonMessage,
  type OutgoingMessage,
  recordOutcomes,
  useTestEnvironment,
  waitFor,
} from '../../support/integration.js';

const env = useTestEnvironment();

async function setResumePoint(groupId: string, topic: string, nextOffset: number): Promise<void> {
  await env.pool.query(
    `INSERT INTO oncely.offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 0, $3)
     ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset`,
    [groupId, topic, nextOffset],
  );
}

describe('G2: offsets that disagree with the log stop the partition, never skip', () => {
  it('G2: a resume point above the log’s end (topic re-created, log truncated) pauses the partition with partition:offsets-mismatch', async () => {
    const topic = await env.createTopic('ahead');
    const groupId = env.groupId('ahead');
    await env.produce(topic, [jsonMessage('a-0', {}), jsonMessage('a-1', {})]);
    // As if the topic had held 100 messages this group processed before it was re-created.
    await setResumePoint(groupId, topic, 100);
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const mismatches: ConsumerEvents['partition:offsets-mismatch'][] = [];
    consumer.on('partition:offsets-mismatch', (e) => mismatches.push(e));
    await consumer.start();
    await waitFor('the mismatch', () => mismatches.length === 1);
    expect(mismatches[0]).toMatchObject({
      topic,
      partition: 0,
      resumeOffset: '100',
      logStartOffset: '0',
      logEndOffset: '2',
      problem: 'ahead-of-log',
    });
    expect(consumer.paused()).toEqual([
      expect.objectContaining({ topic, partition: 0, reason: 'offsets-mismatch', offset: '100' }),
    ]);
    expect(consumer.paused()[0]?.error.message).toContain('oncely offsets reset');
    expect(await env.effectsOf(topic)).toEqual([]);
  });

  it('G2: a resume point below the log’s start (messages deleted before they were processed) pauses the partition', async () => {
    const topic = await env.createTopic('behind');
    const groupId = env.groupId('behind');
    await env.produce(topic, [jsonMessage('b-0', {}), jsonMessage('b-1', {}), jsonMessage('b-2', {})]);
    await setResumePoint(groupId, topic, 1); // b-0 was processed; b-1 never was
    // The admin must know the partition's leader first (kafkajs does not look it up for this call).
    await env.admin.fetchTopicMetadata({ topics: [topic] });
    await env.admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '2' }] });
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const mismatches: ConsumerEvents['partition:offsets-mismatch'][] = [];
    consumer.on('partition:offsets-mismatch', (e) => mismatches.push(e));
    await consumer.start();
    await waitFor('the mismatch', () => mismatches.length === 1);
    expect(mismatches[0]).toMatchObject({ resumeOffset: '1', logStartOffset: '2', problem: 'behind-log-start' });
    expect(await env.effectsOf(topic)).toEqual([]);
  });

  it('G2: with fromBeginning: false and no Kafka offset (expired or deleted), continues from the database resume point, not the log’s end', async () => {
    const topic = await env.createTopic('expired');
    const groupId = env.groupId('expired');
    await env.produce(topic, [jsonMessage('e-0', {}), jsonMessage('e-1', {})]);
    const first = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const firstOutcomes = recordOutcomes(first);
    await first.start();
    await waitFor('two processed', () => firstOutcomes.processed.length === 2);
    await first.stop();
    // Produced while the group was down; then its Kafka offsets expire.
    await env.produce(topic, [jsonMessage('e-2', {}), jsonMessage('e-3', {}), jsonMessage('e-4', {})]);
    await env.admin.deleteGroups([groupId]);
    const second = env.consumer({ groupId, handlers: [effectHandler(topic)], fromBeginning: false });
    const outcomes = recordOutcomes(second);
    await second.start();
    await waitFor('the three produced meanwhile', () => outcomes.processed.length === 3);
    // And it keeps consuming past the point it was moved to.
    await env.produce(topic, [jsonMessage('e-5', {})]);
    await waitFor('the one produced after', () => outcomes.processed.length === 4, { timeoutMs: 20_000 });
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['e-0', 'e-1', 'e-2', 'e-3', 'e-4', 'e-5']);
    expect(outcomes.duplicates).toEqual([]);
  });
});

/** Deletes `topic` and creates it again under the same name: a new log, its offsets counted from 0. */
async function recreateTopic(topic: string, partitions: number): Promise<void> {
  await env.admin.deleteTopics({ topics: [topic] });
  await waitFor('the topic deleted', async () => !(await env.admin.listTopics()).includes(topic));
  // The broker may still be removing the old log: creating the name again fails until it is gone.
  await waitFor('the topic created again', async () => {
    try {
      await env.admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Produces to a re-created topic with a producer of its own: the shared one still holds the old
 * topic's metadata, and kafkajs drops a message for a partition that metadata does not know.
 */
async function produceFresh(topic: string, messages: readonly OutgoingMessage[]): Promise<void> {
  const producer = env.kafka.producer();
  await producer.connect();
  try {
    await producer.send({
      topic,
      messages: messages.map((m) => ({ value: m.value, headers: m.headers, partition: m.partition ?? 0 })),
    });
  } finally {
    await producer.disconnect();
  }
}

describe('G2: a resume point recognises its log (topic identity)', () => {
  it('G2: a topic re-created with a log past the resume point pauses the partition with partition:offsets-mismatch', async () => {
    const topic = await env.createTopic('recreated');
    const groupId = env.groupId('recreated');
    await env.produce(topic, [
      jsonMessage('old-0', { n: 0 }),
      jsonMessage('old-1', { n: 1 }),
      jsonMessage('old-2', { n: 2 }),
    ]);
    const first = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const firstOutcomes = recordOutcomes(first);
    await first.start();
    await waitFor('the old log processed', () => firstOutcomes.processed.length === 3);
    await first.stop();

    // A new log under the same name, already longer than the old resume point (3).
    await recreateTopic(topic, 1);
    await produceFresh(
      topic,
      Array.from({ length: 5 }, (_, i) => jsonMessage(`new-${i}`, { n: i })),
    );
    const second = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const mismatches: ConsumerEvents['partition:offsets-mismatch'][] = [];
    second.on('partition:offsets-mismatch', (e) => mismatches.push(e));
    const outcomes = recordOutcomes(second);
    await second.start();
    await waitFor('the mismatch', () => mismatches.length === 1);
    expect(mismatches[0]).toMatchObject({
      topic,
      partition: 0,
      resumeOffset: '3',
      logStartOffset: '0',
      logEndOffset: '5',
      problem: 'other-log',
    });
    expect(second.paused()).toEqual([
      expect.objectContaining({ topic, partition: 0, reason: 'offsets-mismatch', offset: '3' }),
    ]);
    expect(second.paused()[0]?.error.message).toContain('oncely offsets reset');
    expect(outcomes.processed).toEqual([]);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['old-0', 'old-1', 'old-2']);

    // The runbook: `oncely offsets show` names the problem, a reset to the new log's start fixes it.
    const shown = await showOffsets({ pool: env.pool, kafka: env.kafka, groupId, topic });
    expect(shown.map((p) => [p.partition, p.verdict])).toEqual([[0, 'other-log']]);
    await second.stop();
    await resetOffsets({ pool: env.pool, kafka: env.kafka, groupId, topic, to: 'earliest' });
    const third = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const thirdOutcomes = recordOutcomes(third);
    await third.start();
    await waitFor('the new log processed', () => thirdOutcomes.processed.length === 5);
    expect((await showOffsets({ pool: env.pool, kafka: env.kafka, groupId, topic }))[0]?.verdict).toBe('ok');
  });

  it('G2: a topic re-created with more partitions pauses the old partition and consumes the new one', async () => {
    const topic = await env.createTopic('repartitioned');
    const groupId = env.groupId('repartitioned');
    await env.produce(topic, [jsonMessage('old-0', {}), jsonMessage('old-1', {})]);
    const first = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const firstOutcomes = recordOutcomes(first);
    await first.start();
    await waitFor('the old log processed', () => firstOutcomes.processed.length === 2);
    await first.stop();

    await recreateTopic(topic, 2);
    await produceFresh(topic, [
      jsonMessage('new-0', {}, 0),
      jsonMessage('new-1', {}, 0),
      jsonMessage('new-2', {}, 0),
      jsonMessage('new-p1-0', {}, 1),
    ]);
    const second = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const mismatches: ConsumerEvents['partition:offsets-mismatch'][] = [];
    second.on('partition:offsets-mismatch', (e) => mismatches.push(e));
    const outcomes = recordOutcomes(second);
    await second.start();
    await waitFor('the mismatch on partition 0', () => mismatches.length === 1);
    await waitFor('the new partition consumed', () => outcomes.processed.length === 1);
    expect(mismatches[0]).toMatchObject({ topic, partition: 0, resumeOffset: '2', problem: 'other-log' });
    // Partition 1 had no resume point: nothing to recognise, it starts from its beginning.
    expect(outcomes.processed.map((o) => o.messageId)).toEqual(['new-p1-0']);
    expect(second.paused()).toEqual([expect.objectContaining({ topic, partition: 0, reason: 'offsets-mismatch' })]);
  });
});

describe('G2: resume points from before marks existed', () => {
  it('G2: a resume point without a mark (recorded before migration 0007) is not checked, and the next outcome marks it', async () => {
    const topic = await env.createTopic('unmarked');
    const groupId = env.groupId('unmarked');
    await env.produce(topic, [jsonMessage('u-0', {}), jsonMessage('u-1', {})]);
    const first = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const firstOutcomes = recordOutcomes(first);
    await first.start();
    await waitFor('two processed', () => firstOutcomes.processed.length === 2);
    await first.stop();
    await env.pool.query(
      'UPDATE oncely.offsets SET previous_payload_hash = NULL, previous_timestamp = NULL WHERE consumer_group = $1',
      [groupId],
    );

    await env.produce(topic, [jsonMessage('u-2', {})]);
    const second = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const mismatches: ConsumerEvents['partition:offsets-mismatch'][] = [];
    second.on('partition:offsets-mismatch', (e) => mismatches.push(e));
    const outcomes = recordOutcomes(second);
    await second.start();
    await waitFor('the new message processed', () => outcomes.processed.length === 1);
    expect(mismatches).toEqual([]);
    const { rows } = await env.pool.query<{ marked: boolean }>(
      'SELECT previous_payload_hash IS NOT NULL AND previous_timestamp IS NOT NULL AS marked FROM oncely.offsets WHERE consumer_group = $1',
      [groupId],
    );
    expect(rows).toEqual([{ marked: true }]);
  });
});

describe('G2: a paused partition is consumed or reported by whoever owns it', () => {
  it('G2: a partition paused here, moved to another member and back, is consumed again, not left paused in Kafka', async () => {
    const topic = await env.createTopic('pause-move');
    const groupId = env.groupId('pause-move');
    let failing = true;
    const handler = effectHandler(topic, (ctx) => {
      if (failing && ctx.messageId === 'poison') throw new Error('not yet');
    });
    // Members are ordered by client id when partitions are assigned: "b-…" gets the only partition over "z-…".
    const client = (clientId: string) => new Kafka({ clientId, brokers: env.brokers, logLevel: logLevel.NOTHING });
    const options = { groupId, handlers: [handler], onExhausted: 'pause' as const, retry: { attempts: 1 } };
    const owner = env.consumer({ ...options, kafka: client('z-owner') });
    await env.produce(topic, [jsonMessage('poison', {})]);
    await owner.start();
    await waitFor('the partition paused at the poison', () => owner.paused().length === 1);

    failing = false; // fixed meanwhile; the other member gets the partition and applies it
    const other = env.consumer({ ...options, kafka: client('b-other') });
    const otherOutcomes = recordOutcomes(other);
    await other.start();
    await waitFor('the other member applied the poison', () => otherOutcomes.processed.length === 1);
    expect(owner.paused()).toEqual([]); // it went elsewhere: no longer ours to report
    await other.stop();

    // Back with the first member: it must consume the partition again.
    const ownerOutcomes = recordOutcomes(owner);
    await env.produce(topic, [jsonMessage('after', {})]);
    await waitFor('the first member consumes again', () => ownerOutcomes.processed.length === 1, { timeoutMs: 30_000 });
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['poison', 'after']);
  });
});
