import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';

import { resolveConsumerConfig } from '../../../src/pipeline/options.js';
import { defineHandler, hasErrorCode, type InboxConsumerOptions } from '../../../src/index.js';
import { offsetsVerdict } from '../../../src/replay/offsets.js';
import { parseDuration, parsePartitions } from '../../../src/operator/input.js';

// Constructing these opens no connection.
const pool = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', max: 5 });
const options: InboxConsumerOptions = {
  kafka: new Kafka({ brokers: ['127.0.0.1:1'] }),
  db: drizzle(pool),
  groupId: 'ledger',
  handlers: [defineHandler({ topic: 'payments', handle: () => undefined })],
  logger: pino({ level: 'silent' }),
};
afterAll(() => pool.end());

const DAY = 86_400_000;

describe('the retention option', () => {
  it('is off unless given, and fills in its defaults when given', () => {
    expect(resolveConsumerConfig(options).retention).toBeUndefined();
    expect(resolveConsumerConfig({ ...options, retention: false }).retention).toBeUndefined();
    expect(resolveConsumerConfig({ ...options, retention: { inboxFor: DAY } }).retention).toEqual({
      inboxFor: DAY,
      deadLettersFor: 30 * DAY,
      every: 3_600_000,
      batchSize: 5_000,
    });
  });

  it('rejects bad values and unknown keys with ONCELY_CONFIG, suggesting the closest', () => {
    const bad = (retention: unknown): Error => {
      try {
        resolveConsumerConfig({ ...options, retention } as InboxConsumerOptions);
      } catch (error) {
        expect(hasErrorCode(error, 'ONCELY_CONFIG')).toBe(true);
        return error as Error;
      }
      throw new Error('expected ONCELY_CONFIG');
    };
    expect(bad({ inboxFor: -1 }).message).toContain('retention.inboxFor');
    expect(bad({ every: 10 }).message).toContain('at least 1,000 ms');
    expect(bad({ inboxFro: DAY }).message).toContain('did you mean `inboxFor`');
  });
});

describe('offsets verdicts and CLI arguments', () => {
  const log = { logStart: 10n, highWatermark: 20n };
  it('names each way the two stores can disagree with the log', () => {
    expect(offsetsVerdict(15n, 15n, log)).toBe('ok');
    expect(offsetsVerdict(12n, 15n, log)).toBe('ok'); // a lost Kafka commit: the consumer passes over
    expect(offsetsVerdict(20n, 25n, log)).toBe('db-ahead-of-log');
    expect(offsetsVerdict(undefined, 5n, log)).toBe('below-log-start');
    expect(offsetsVerdict(18n, 15n, log)).toBe('kafka-ahead-of-db');
    expect(offsetsVerdict(undefined, undefined, log)).toBe('no-offsets');
  });

  it('parses durations and partition lists, refusing what it cannot read', () => {
    expect(parseDuration('7d')).toBe(7 * DAY);
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('250')).toBe(250);
    expect(() => parseDuration('a week')).toThrow(/not a duration/);
    expect(parsePartitions('0, 2')).toEqual([0, 2]);
    expect(() => parsePartitions('0,x')).toThrow(/not a list of partition numbers/);
  });
});
