import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';

import { defineBatchHandler, defineHandler, type InboxConsumerOptions, isOncelyError } from '../../../src/index.js';
import type { ConsumedRecord } from '../../../src/kafka/runner.js';
import { fnv1a, LaneAssigner } from '../../../src/pipeline/lanes/lane-key.js';
import { PartitionWatermark } from '../../../src/pipeline/lanes/watermark.js';
import { resolveConsumerConfig } from '../../../src/pipeline/options.js';

function record(offset: number, key: string | null = null): ConsumedRecord {
  return {
    topic: 't',
    partition: 0,
    offset: String(offset),
    key: key === null ? null : Buffer.from(key),
    value: Buffer.from(`v${offset}`),
    headers: {},
    timestamp: '0',
  };
}

describe('PartitionWatermark', () => {
  // Offsets with a gap (a compacted record or a transaction marker at 13): the watermark follows
  // the records, not the numbers.
  const records = [10, 11, 12, 14, 15].map((o) => record(o));
  const at = (offset: number): ConsumedRecord => records.find((r) => r.offset === String(offset)) ?? record(offset);

  it('moves only over a prefix of recorded records, and lets Kafka pass only that prefix', () => {
    const resolved: string[] = [];
    const watermark = new PartitionWatermark(records, { groupId: 'g', resolve: (o) => resolved.push(o) });
    // A later lane commits first: nothing moves, nothing resolved.
    expect(watermark.lastRecordedWith([at(12), at(14)])).toBeUndefined();
    watermark.markRecorded([at(12), at(14)]);
    expect(watermark.recorded).toBe(0);
    expect(resolved).toEqual([]);
    // The lowest record commits: the watermark jumps over everything already recorded after it.
    expect(watermark.lastRecordedWith([at(10)])?.offset).toBe('10');
    expect(watermark.lastRecordedWith([at(10), at(11)])?.offset).toBe('14');
    watermark.markRecorded([at(10), at(11)]);
    expect(watermark.recorded).toBe(4);
    expect(resolved).toEqual(['14']);
    watermark.markRecorded([at(15)]);
    expect(resolved).toEqual(['14', '15']);
  });

  it('wakes whoever waits for it when it moves', async () => {
    const watermark = new PartitionWatermark(records, { groupId: 'g', resolve: () => undefined });
    let woke = false;
    const waiting = watermark.moved().then(() => (woke = true));
    watermark.markRecorded([at(11)]);
    await Promise.resolve();
    expect(woke).toBe(false);
    watermark.markRecorded([at(10)]);
    await waiting;
    expect(woke).toBe(true);
  });

  it('asks for a resume point only past the one recorded, and says when the recorded one is behind', () => {
    const watermark = new PartitionWatermark(records, { groupId: 'g', resolve: () => undefined });
    // Two lanes committed at the same moment, each writing what it knew: 10 and (not knowing 10) nothing.
    watermark.written(at(10));
    watermark.markRecorded([at(10)]);
    watermark.markRecorded([at(11)]);
    expect(watermark.behind()?.offset).toBe('11');
    // A transaction covering 12 writes past 11, not again up to 10.
    expect(watermark.lastRecordedWith([at(12)])?.offset).toBe('12');
    watermark.written(at(11));
    expect(watermark.behind()).toBeUndefined();
    expect(watermark.lastRecordedWith([at(15)])).toBeUndefined();
  });
});

describe('LaneAssigner', () => {
  it('puts one key’s records on one lane, and spreads many keys over every lane', () => {
    const assigner = new LaneAssigner({ count: 8, key: undefined, maxInFlight: 100 }, () => undefined);
    expect(assigner.laneOf(record(1, 'acct-7'))).toBe(assigner.laneOf(record(99, 'acct-7')));
    const used = new Set(Array.from({ length: 200 }, (_, i) => assigner.laneOf(record(i, `acct-${i}`))));
    expect(used.size).toBe(8);
    // Without a key, records share the lane of the empty key.
    expect(assigner.laneOf(record(1))).toBe(assigner.laneOf(record(2)));
    expect(assigner.laneOf(record(1))).toBe(fnv1a(new Uint8Array(0)) % 8);
  });

  it('uses the key function, and sends a record whose key function throws to the lane of records without a key', () => {
    const failures: string[] = [];
    const assigner = new LaneAssigner(
      {
        count: 16,
        key: (message) => {
          if (message.offset === '3') throw new Error('no account in this event');
          return message.value?.toString().slice(0, 2) ?? null;
        },
        maxInFlight: 100,
      },
      (_error, r) => failures.push(r.offset),
    );
    expect(assigner.laneOf(record(1))).toBe(fnv1a(Buffer.from('v1')) % 16);
    expect(assigner.laneOf(record(3))).toBe(fnv1a(new Uint8Array(0)) % 16);
    expect(failures).toEqual(['3']);
  });

  it('pins sample lanes: the key hash is FNV-1a, stable across versions', () => {
    expect(fnv1a(Buffer.from(''))).toBe(0x811c9dc5);
    expect(fnv1a(Buffer.from('a'))).toBe(0xe40c292c);
    expect(fnv1a(Buffer.from('foobar'))).toBe(0xbf9cf968);
  });
});

describe('the lanes option', () => {
  const pool = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', max: 10 });
  afterAll(() => pool.end());
  const base: InboxConsumerOptions = {
    kafka: new Kafka({ brokers: ['127.0.0.1:1'] }),
    db: drizzle(pool),
    groupId: 'ledger',
    handlers: [defineHandler({ topic: 'payments', handle: () => undefined })],
    logger: pino({ level: 'silent' }),
  };
  const refusal = (options: InboxConsumerOptions): string => {
    try {
      resolveConsumerConfig(options);
    } catch (error) {
      if (isOncelyError(error) && error.code === 'ONCELY_CONFIG') return error.message;
      throw error;
    }
    throw new Error('expected ONCELY_CONFIG');
  };

  it('resolves a count, an object with defaults, and 1 as no lanes', () => {
    expect(resolveConsumerConfig({ ...base, lanes: 4 }).lanes).toEqual({
      count: 4,
      key: undefined,
      maxInFlight: 1000,
    });
    expect(resolveConsumerConfig({ ...base, lanes: { count: 2, maxInFlight: 50 } }).lanes).toMatchObject({
      count: 2,
      maxInFlight: 50,
    });
    expect(resolveConsumerConfig({ ...base, lanes: 1 }).lanes).toBeUndefined();
    expect(resolveConsumerConfig(base).lanes).toBeUndefined();
  });

  it('refuses lanes in batch mode, saying why', () => {
    const batch = defineBatchHandler({ topic: 'payments', handleBatch: () => undefined });
    expect(refusal({ ...base, handlers: [batch], lanes: 4 })).toMatch(/`lanes`: lanes applies to message mode only/);
  });

  it('refuses a pool too small for every lane of every partition at once, naming the size needed', () => {
    expect(refusal({ ...base, lanes: 4, concurrency: 3 })).toMatch(/hold up to 12 connections.*max: 14/);
    expect(refusal({ ...base, lanes: 0 })).toMatch(/`lanes`/);
  });
});
