import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';

import { resolveConsumerConfig } from '../../src/pipeline/options.js';
import { defineHandler, type InboxConsumerOptions, isOncelyError } from '../../src/index.js';

// Constructing these opens no connection.
const pool = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', max: 5 });
const kafka = new Kafka({ brokers: ['127.0.0.1:1'] });
const handler = defineHandler({ topic: 'payments', handle: () => undefined });
const valid: InboxConsumerOptions = {
  kafka,
  db: drizzle(pool),
  groupId: 'ledger',
  handlers: [handler],
  logger: pino({ level: 'silent' }),
};

afterAll(() => pool.end());

function configErrorOf(options: unknown): { message: string; option: unknown } {
  try {
    resolveConsumerConfig(options as InboxConsumerOptions);
  } catch (error) {
    if (isOncelyError(error) && error.code === 'ONCELY_CONFIG')
      return { message: error.message, option: error.context.option };
    throw error;
  }
  throw new Error('expected ONCELY_CONFIG');
}

describe('resolveConsumerConfig', () => {
  it('resolves every default', () => {
    const config = resolveConsumerConfig(valid);
    expect(config).toMatchObject({
      groupId: 'ledger',
      mode: 'message',
      concurrency: 1,
      retry: { attempts: 5, initialDelayMs: 200, maxDelayMs: 10_000, multiplier: 2, jitter: 0.2 },
      logPayloads: false,
      fromBeginning: true,
      handleSignals: false,
      consumerConfig: {},
      handlerTimeoutMs: 30_000,
      requireMessageId: false,
      maxPayloadBytes: undefined,
      onExhausted: 'dead-letter',
      deadLetterTopicName: undefined,
      relay: undefined,
    });
    expect(config.pool).toBe(pool);
    expect([...config.handlers.keys()]).toEqual(['payments']);
  });

  it('merges a partial retry policy over the defaults', () => {
    expect(resolveConsumerConfig({ ...valid, retry: { attempts: 2 } }).retry).toMatchObject({
      attempts: 2,
      initialDelayMs: 200,
    });
  });

  it.each([
    [
      'a missing groupId',
      { groupId: undefined },
      'groupId',
      'Invalid option `groupId`: expected the Kafka consumer group id as a string',
    ],
    ['an empty groupId', { groupId: '' }, 'groupId', 'Invalid option `groupId`: must not be empty'],
    ['no handlers', { handlers: [] }, 'handlers', 'give at least one handler'],
    [
      'a handler not made with defineHandler',
      { handlers: [{ topic: 't', handle: () => undefined }] },
      'handlers.0',
      'each handler must be made with defineHandler()',
    ],
    ['a kafka that is not a kafkajs client', { kafka: { brokers: [] } }, 'kafka', '`new Kafka({ clientId, brokers })`'],
    ['a fractional concurrency', { concurrency: 1.5 }, 'concurrency', 'must be a whole number'],
    ['zero retry attempts', { retry: { attempts: 0 } }, 'retry.attempts', 'must be at least 1 (1 = no retries)'],
    [
      'maxDelayMs below initialDelayMs',
      { retry: { initialDelayMs: 500, maxDelayMs: 100 } },
      'retry.maxDelayMs',
      'maxDelayMs must be at least initialDelayMs',
    ],
    [
      'an unknown retry field',
      { retry: { attemps: 3 } },
      'retry.attemps',
      'Invalid option `retry.attemps`: unknown option; did you mean `attempts`?',
    ],
    [
      'an unknown option (a typo)',
      { concurrrency: 2 },
      'concurrrency',
      'Invalid option `concurrrency`: unknown option; did you mean `concurrency`?',
    ],
    ['an unknown option far from any', { brokers: ['x'] }, 'brokers', 'Invalid option `brokers`: unknown option'],
    ['groupId inside consumer settings', { consumer: { groupId: 'x' } }, 'consumer', 'without groupId'],
    ['an unsupported mode', { mode: 'stream' }, 'mode', "must be 'message'"],
    ['a negative handler timeout', { handlerTimeoutMs: -1 }, 'handlerTimeoutMs', 'must be 0 (no timeout) or more'],
    ['a zero payload limit', { maxPayloadBytes: 0 }, 'maxPayloadBytes', 'must be at least 1'],
    ['an unknown exhaustion policy', { onExhausted: 'skip' }, 'onExhausted', "must be 'dead-letter' or 'pause'"],
    [
      'a dead-letter topic that is a number',
      { deadLetter: { topic: 5 } },
      'deadLetter.topic',
      'must be true (`<topic>.dlq`)',
    ],
  ])('rejects %s, naming the option and the fix', (_name, patch, option, text) => {
    const error = configErrorOf({ ...valid, ...patch });
    expect(error.message).toContain(text);
    expect(error.option).toBe(option);
  });

  it('names dead-letter topics: true gives <topic>.dlq, a string one topic, a function its own', () => {
    const name = (topic: unknown) =>
      resolveConsumerConfig({ ...valid, deadLetter: { topic } } as InboxConsumerOptions).deadLetterTopicName;
    expect(name(true)?.('payments')).toBe('payments.dlq');
    expect(name('all-dead')?.('payments')).toBe('all-dead');
    expect(name((t: string) => `dlq.${t}`)?.('payments')).toBe('dlq.payments');
    expect(name(false)).toBeUndefined();
  });

  it('rejects batchSize on a per-message consumer, where it would do nothing', () => {
    const error = configErrorOf({ ...valid, batchSize: 100 });
    expect(error.message).toContain('`batchSize`');
    expect(error.message).toContain('defineBatchHandler()');
  });

  it('rejects two handlers for one topic', () => {
    const error = configErrorOf({
      ...valid,
      handlers: [handler, defineHandler({ topic: 'payments', handle: () => undefined })],
    });
    expect(error.message).toContain('two handlers for topic "payments"');
  });

  it('rejects a pool that is not larger than concurrency, saying how large it must be', () => {
    const error = configErrorOf({ ...valid, concurrency: 5 });
    expect(error.message).toContain("concurrency 5 needs a pool with more than 5 connections, but the pool's max is 5");
    expect(error.message).toContain('new Pool({ max: 7 })');
  });

  it('rejects a db that is not a drizzle database over a pg Pool', () => {
    expect(configErrorOf({ ...valid, db: new pg.Client() }).message).toContain('over a pg Pool');
    expect(configErrorOf({ ...valid, db: pool }).message).toContain('drizzle-orm node-postgres database');
  });

  it('lists every problem on one line when there are several', () => {
    const error = configErrorOf({ ...valid, groupId: '', concurrency: 0 });
    expect(error.message).toBe('Invalid options: `groupId`: must not be empty; `concurrency`: must be at least 1');
    expect(error.option).toBe('groupId');
  });
});
