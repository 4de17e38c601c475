import { describe, expect, it } from 'vitest';

import { type BatchEvent, defineBatchHandler, defineHandler } from '../../../src/index.js';
import { effects, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** A batch handler writing one `effects` row per event with one INSERT, then running `check`. */
function batchEffects(topic: string, check?: (events: readonly BatchEvent<unknown>[]) => void) {
  return defineBatchHandler({
    topic,
    async handleBatch(events, ctx) {
      await ctx.tx.insert(effects).values(
        events.map((e) => ({
          messageId: e.messageId,
          topic: e.message.topic,
          partition: e.message.partition,
          offset: Number(e.message.offset),
          payload: e.event,
        })),
      );
      check?.(events);
    },
  });
}

async function doubled(topic: string): Promise<string[]> {
  const { rows } = await env.pool.query<{ message_id: string }>(
    'SELECT message_id FROM effects WHERE topic = $1 GROUP BY message_id HAVING count(*) > 1',
    [topic],
  );
  return rows.map((r) => r.message_id);
}

describe('batch mode', () => {
  it('G1: isolates one poison message among 1,000: 999 applied once, 1 dead letter, nothing applied twice across the retries', async () => {
    const topic = await env.createTopic('batch-poison');
    const groupId = env.groupId('poison');
    await env.produce(
      topic,
      Array.from({ length: 1_000 }, (_, i) => jsonMessage(`m-${i}`, { i })),
    );
    let calls = 0;
    const handler = batchEffects(topic, (events) => {
      calls += 1;
      if (events.some((e) => e.messageId === 'm-637')) throw new Error('ledger rejected m-637');
    });
    const consumer = env.consumer({
      groupId,
      handlers: [handler],
      batchSize: 1_000,
      retry: { attempts: 2, initialDelayMs: 5, maxDelayMs: 10 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('1,000 outcomes', () => outcomes.total === 1_000);

    const rows = await env.effectsOf(topic);
    expect(rows).toHaveLength(999);
    expect(await doubled(topic)).toEqual([]);
    expect(rows.some((r) => r.messageId === 'm-637')).toBe(false);
    expect(outcomes.deadLettered).toEqual([
      expect.objectContaining({ messageId: 'm-637', reason: 'handler_failed', attempts: 2 }),
    ]);
    expect(outcomes.processed).toHaveLength(999);
    // Offset order held through the splits, and the partition is recorded to its end.
    expect(rows.map((r) => r.offset)).toEqual([...Array(1_000).keys()].filter((i) => i !== 637));
    expect((await env.offsetsOf(groupId, topic)).get(0)).toBe(1_000n);
    // Splitting, not one transaction per message: about log2(1000) failing chunks on the way down.
    expect(calls).toBeLessThan(60);
  });

  it('claims a chunk in one statement and hands the handler only freshly claimed, valid events', async () => {
    const topic = await env.createTopic('batch-mixed');
    await env.produce(topic, [
      jsonMessage('a', { n: 1 }),
      jsonMessage('b', { n: 2 }),
      { value: 'not json', headers: { 'message-id': 'broken' } },
      { value: '{}', headers: { 'message-id': '' } },
      jsonMessage('a', { n: 1 }), // republished in the same chunk
      { value: JSON.stringify({ n: 99 }), headers: { 'message-id': 'b' } }, // key reuse in the same chunk
      jsonMessage('c', { n: 3 }),
    ]);
    const seen: string[] = [];
    const consumer = env.consumer({
      groupId: env.groupId('mixed'),
      handlers: [batchEffects(topic, (events) => events.forEach((e) => seen.push(e.messageId)))],
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('seven outcomes', () => outcomes.total === 7);

    expect(seen).toEqual(['a', 'b', 'c']);
    expect(outcomes.duplicates).toEqual([
      expect.objectContaining({ offset: '4', messageId: 'a', duplicateClass: 'republish' }),
    ]);
    expect(outcomes.deadLettered.map((d) => [d.offset, d.reason])).toEqual([
      ['2', 'invalid_payload'],
      ['3', 'invalid_message_id'],
      ['5', 'key_reuse'],
    ]);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['a', 'b', 'c']);
    // The undecodable message was claimed before it was decoded: its claim became the dead letter's
    // inbox row in the same transaction, never a `processed` row. An invalid id has no inbox row.
    const { rows } = await env.pool.query<{ message_id: string; status: string; offset: string }>(
      'SELECT message_id, status, "offset" FROM oncely.inbox WHERE topic = $1 ORDER BY "offset"',
      [topic],
    );
    expect(rows.map((r) => `${r.offset}:${r.message_id}:${r.status}`)).toEqual([
      '0:a:processed',
      '1:b:processed',
      '2:broken:dead_lettered',
      '6:c:processed',
    ]);
  });

  it('G6: re-consuming a rewound range in batch mode skips every message as a duplicate and changes nothing', async () => {
    const topic = await env.createTopic('batch-replay', 2);
    const groupId = env.groupId('breplay');
    await env.produce(
      topic,
      Array.from({ length: 100 }, (_, i) => jsonMessage(`r-${i}`, { i }, i % 2)),
    );
    const first = env.consumer({ groupId, handlers: [batchEffects(topic)] });
    const firstOutcomes = recordOutcomes(first);
    await first.start();
    await waitFor('100 outcomes', () => firstOutcomes.total === 100);
    await first.stop();
    const before = await env.effectsOf(topic);
    // Each inbox row with the transaction that wrote it: a replay must leave every one untouched.
    const inboxRows = async (): Promise<string[]> =>
      (
        await env.pool.query<{ row: string }>(
          `SELECT message_id || ' ' || xmin::text || ' ' || status || ' ' || attempts AS row
             FROM oncely.inbox WHERE consumer_group = $1 ORDER BY message_id`,
          [groupId],
        )
      ).rows.map((r) => r.row);
    const inboxBefore = await inboxRows();

    await env.rewind(groupId, topic);
    let handlerCalls = 0;
    const replay = env.consumer({ groupId, handlers: [batchEffects(topic, () => void handlerCalls++)] });
    const replayed = recordOutcomes(replay);
    await replay.start();
    await waitFor('100 replayed outcomes', () => replayed.total === 100);
    await replay.stop();
    expect(replayed.duplicates.every((d) => d.duplicateClass === 'redelivery')).toBe(true);
    expect(replayed.duplicates).toHaveLength(100);
    expect(handlerCalls).toBe(0);
    expect(await env.effectsOf(topic)).toEqual(before);
    // Duplicates are read-only: no inbox row inserted, updated or rewritten…
    expect(await inboxRows()).toEqual(inboxBefore);
    // …while the resume point still follows the replay to the end of each partition.
    expect(await env.offsetsOf(groupId, topic)).toEqual(
      new Map([
        [0, 50n],
        [1, 50n],
      ]),
    );
  });

  it('G6: a replayed chunk tells each holder apart: the record itself, a dead letter, a republish, a key reuse', async () => {
    const topic = await env.createTopic('batch-holders');
    const groupId = env.groupId('holders');
    await env.produce(topic, [
      jsonMessage('x', { n: 1 }),
      { value: 'not json', headers: { 'message-id': 'y' } }, // dead-lettered (invalid_payload)
    ]);
    const first = env.consumer({ groupId, handlers: [batchEffects(topic)] });
    const firstOutcomes = recordOutcomes(first);
    await first.start();
    await waitFor('two outcomes', () => firstOutcomes.total === 2);
    await first.stop();
    await env.produce(topic, [
      jsonMessage('x', { n: 1 }), // republished: same bytes, another offset
      { value: JSON.stringify({ n: 2 }), headers: { 'message-id': 'x' } }, // key reuse
      jsonMessage('z', { n: 3 }),
    ]);

    // A consumer's first chunk is claimed by a plain INSERT, which meets the held ids and is claimed
    // again reading the holders first: the path every replay takes.
    await env.rewind(groupId, topic);
    const replay = env.consumer({ groupId, handlers: [batchEffects(topic)] });
    const originals: Record<string, { offset: string; processedAt: Date | null }> = {};
    replay.on('message:duplicate', (e) => {
      originals[e.offset] = { offset: e.original.offset, processedAt: e.original.processedAt };
    });
    const replayed = recordOutcomes(replay);
    await replay.start();
    await waitFor('five outcomes', () => replayed.total === 5);
    await replay.stop();

    expect(replayed.duplicates.map((d) => [d.offset, d.messageId, d.duplicateClass])).toEqual([
      ['0', 'x', 'redelivery'],
      ['1', 'y', 'redelivery'],
      ['2', 'x', 'republish'],
    ]);
    expect(replayed.deadLettered.map((d) => [d.offset, d.reason])).toEqual([['3', 'key_reuse']]);
    expect(replayed.processed.map((p) => [p.offset, p.messageId])).toEqual([['4', 'z']]);
    const { rows } = await env.pool.query<{ message_id: string; processed_at: Date }>(
      'SELECT message_id, processed_at FROM oncely.inbox WHERE consumer_group = $1 ORDER BY message_id',
      [groupId],
    );
    const processedAt = new Map(rows.map((r) => [r.message_id, r.processed_at.getTime()]));
    // Each duplicate names its holder, with the time its outcome was recorded.
    expect(originals['0']).toEqual({ offset: '0', processedAt: new Date(processedAt.get('x') ?? 0) });
    expect(originals['1']).toEqual({ offset: '1', processedAt: new Date(processedAt.get('y') ?? 0) });
    expect(originals['2']).toEqual({ offset: '0', processedAt: new Date(processedAt.get('x') ?? 0) });
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['x', 'z']);
  });

  it('claims a chunk larger than any VALUES list could hold (PostgreSQL allows 65,535 parameters)', async () => {
    const topic = await env.createTopic('batch-huge');
    const count = 8_000; // × 10 columns = 80,000 parameters as a VALUES list
    for (let i = 0; i < count; i += 2_000) {
      await env.produce(
        topic,
        Array.from({ length: 2_000 }, (_, j) => jsonMessage(`h-${i + j}`, {})),
      );
    }
    let largest = 0;
    const consumer = env.consumer({
      groupId: env.groupId('huge'),
      batchSize: count,
      handlers: [batchEffects(topic, (events) => void (largest = Math.max(largest, events.length)))],
      consumer: { maxBytesPerPartition: 10 * 1024 * 1024 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('every outcome', () => outcomes.total === count);
    expect(largest).toBeGreaterThan(65_535 / 10);
    expect(await env.effectsOf(topic)).toHaveLength(count);
  });

  it('never decodes a duplicate: a replay costs claims, not parsing and validation', async () => {
    for (const mode of ['message', 'batch'] as const) {
      const topic = await env.createTopic(`decode-once-${mode}`);
      await env.produce(topic, [
        jsonMessage('a', { n: 1 }),
        jsonMessage('b', { n: 2 }),
        jsonMessage('a', { n: 1 }),
        jsonMessage('b', { n: 2 }),
      ]);
      let decoded = 0;
      const decode = (value: Buffer | null): unknown => {
        decoded += 1;
        return JSON.parse(value?.toString() ?? 'null') as unknown;
      };
      const handlers =
        mode === 'batch'
          ? [defineBatchHandler({ topic, decode, handleBatch: () => undefined })]
          : [defineHandler({ topic, decode, handle: () => undefined })];
      const consumer = env.consumer({ groupId: env.groupId(`once-${mode}`), handlers });
      const outcomes = recordOutcomes(consumer);
      await consumer.start();
      await waitFor('four outcomes', () => outcomes.total === 4);
      expect({ mode, decoded, duplicates: outcomes.duplicates.length }).toEqual({ mode, decoded: 2, duplicates: 2 });
      await consumer.stop();
    }
  });

  it('rejects batch handlers in a message-mode consumer, saying which to use', () => {
    expect(() => env.consumer({ groupId: env.groupId('x'), mode: 'message', handlers: [batchEffects('t')] })).toThrow(
      /made with defineBatchHandler\(\), but the consumer is in message mode/,
    );
  });
});
