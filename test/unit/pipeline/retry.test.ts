import {
  KafkaJSConnectionError,
  KafkaJSNonRetriableError,
  KafkaJSNumberOfRetriesExceeded,
  KafkaJSProtocolError,
} from 'kafkajs';
import { describe, expect, it } from 'vitest';

import { NonRetriableError, OncelyError } from '../../../src/errors.js';
import { backoffDelay, classifyFailure, DEFAULT_RETRY, type RetryPolicy } from '../../../src/pipeline/retry.js';

const policy: RetryPolicy = { attempts: 5, initialDelayMs: 100, maxDelayMs: 1_000, multiplier: 2, jitter: 0.2 };

describe('backoffDelay', () => {
  it('doubles from the initial delay without jitter', () => {
    const noJitter = { ...policy, jitter: 0 };
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(noJitter, n))).toEqual([100, 200, 400, 800, 1_000]);
  });

  it('spreads by ±jitter around the base delay', () => {
    expect(backoffDelay(policy, 2, () => 0)).toBe(160); // 200 × 0.8
    expect(backoffDelay(policy, 2, () => 0.5)).toBe(200);
    expect(backoffDelay(policy, 2, () => 1)).toBe(240); // 200 × 1.2
  });

  it('never exceeds maxDelayMs, jitter included', () => {
    for (let n = 1; n < 60; n++) expect(backoffDelay(policy, n, () => 1)).toBeLessThanOrEqual(1_000);
  });

  it('has documented defaults', () => {
    expect(DEFAULT_RETRY).toEqual({ attempts: 5, initialDelayMs: 200, maxDelayMs: 10_000, multiplier: 2, jitter: 0.2 });
  });
});

describe('classifyFailure', () => {
  const pgError = (code: string) => Object.assign(new Error(`pg ${code}`), { code, severity: 'ERROR' });

  it('retries a lost connection without using up attempts, wherever it surfaced', () => {
    expect(classifyFailure({ error: new Error('boom'), inHandler: true, connectionLost: true })).toBe('transient');
  });

  it.each(['57P01', '08006', '53300', '53100', '58030'])('treats SQLSTATE %s (an outage) as transient', (code) => {
    expect(classifyFailure({ error: pgError(code), inHandler: true, connectionLost: false })).toBe('transient');
  });

  it.each(['40001', '40P01', '55P03'])('treats SQLSTATE %s as contention, retried within a bound', (code) => {
    expect(classifyFailure({ error: pgError(code), inHandler: true, connectionLost: false })).toBe('contention');
  });

  it.each(['23505', '23503', '22P02', '22021', '54000', '42P01'])(
    'treats SQLSTATE %s as the message’s fault, in the handler or in oncely’s own statements',
    (code) => {
      expect(classifyFailure({ error: pgError(code), inHandler: true, connectionLost: false })).toBe('retriable');
      expect(classifyFailure({ error: pgError(code), inHandler: false, connectionLost: false })).toBe('retriable');
    },
  );

  it('finds the SQLSTATE behind a query error that drizzle wrapped', () => {
    const wrapped = Object.assign(new Error('Failed query: update accounts …'), {
      name: 'DrizzleQueryError',
      cause: pgError('40P01'),
    });
    expect(classifyFailure({ error: wrapped, inHandler: true, connectionLost: false })).toBe('contention');
    const nonRetriable = new Error('wrapper', { cause: new NonRetriableError('account closed') });
    expect(classifyFailure({ error: nonRetriable, inHandler: true, connectionLost: false })).toBe('non_retriable');
  });

  it('treats a connection that could not be made for oncely’s own statements as transient', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    expect(classifyFailure({ error: refused, inHandler: false, connectionLost: false })).toBe('transient');
    const timeout = new Error('timeout exceeded when trying to connect');
    expect(classifyFailure({ error: timeout, inHandler: false, connectionLost: false })).toBe('transient');
  });

  it('never treats an unknown failure of oncely’s own statements as an outage', () => {
    expect(classifyFailure({ error: new TypeError('x is undefined'), inHandler: false, connectionLost: false })).toBe(
      'retriable',
    );
  });

  it('dead-letters NonRetriableError and validation errors at once', () => {
    expect(
      classifyFailure({ error: new NonRetriableError('card declined'), inHandler: true, connectionLost: false }),
    ).toBe('non_retriable');
    const zodLike = Object.assign(new Error('invalid'), { name: 'ZodError', issues: [] });
    expect(classifyFailure({ error: zodLike, inHandler: true, connectionLost: false })).toBe('non_retriable');
  });

  it('counts a COMMIT turned into ROLLBACK against the handler', () => {
    const error = new OncelyError('ONCELY_COMMIT_FAILED', 'rolled back', { retriable: true });
    expect(classifyFailure({ error, inHandler: false, connectionLost: false })).toBe('retriable');
  });

  it('reads retriability from the OncelyError itself, not from a list of codes', () => {
    const classify = (error: unknown) => classifyFailure({ error, inHandler: true, connectionLost: false });
    expect(classify(new OncelyError('ONCELY_HANDLER_TIMEOUT', 'slow', { retriable: true }))).toBe('retriable');
    // An event ctx.publish cannot write fails the same way on every attempt.
    expect(classify(new OncelyError('ONCELY_INVALID_EVENT', 'cannot be JSON-encoded'))).toBe('non_retriable');
    // The outermost error that states its retriability decides.
    const wrapped = new OncelyError('ONCELY_HANDLER_TIMEOUT', 'slow', {
      retriable: true,
      cause: new NonRetriableError('inner'),
    });
    expect(classify(wrapped)).toBe('retriable');
  });

  it('reads kafkajs’s retriable flag of Kafka protocol errors, and looks through its own retries running out', () => {
    const classify = (error: unknown) => classifyFailure({ error, inHandler: true, connectionLost: false });
    const tooLarge = new KafkaJSProtocolError({
      type: 'MESSAGE_TOO_LARGE',
      code: 10,
      retriable: false,
      message: 'The request included a message larger than the max message size the server will accept',
    } as unknown as string);
    const noLeader = new KafkaJSProtocolError({
      type: 'LEADER_NOT_AVAILABLE',
      code: 5,
      retriable: true,
      message: 'There is no leader for this topic-partition as we are in the middle of a leadership election',
    } as unknown as string);
    expect(tooLarge.retriable).toBe(false);
    expect(classify(tooLarge)).toBe('non_retriable');
    expect(classify(noLeader)).toBe('retriable');
    // kafkajs gave up retrying a leader election: a later attempt may well succeed.
    const exhausted = new KafkaJSNumberOfRetriesExceeded(noLeader, { retryCount: 5, retryTime: 1000 });
    expect(exhausted.retriable).toBe(false);
    expect(classify(exhausted)).toBe('retriable');
    expect(classify(new KafkaJSConnectionError('Connection error: connect ECONNREFUSED'))).toBe('retriable');
    // Not a protocol verdict: kafkajs's generic "do not retry" is about its own retrier only.
    expect(classify(new KafkaJSNonRetriableError('Broker does not support the API'))).toBe('retriable');
  });

  it('retries anything else the handler throws per the policy', () => {
    expect(classifyFailure({ error: new Error('http 503'), inHandler: true, connectionLost: false })).toBe('retriable');
    expect(classifyFailure({ error: pgError('23505'), inHandler: true, connectionLost: false })).toBe('retriable');
    // A handler's own HTTP call refused is the handler's failure, not the database's.
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(classifyFailure({ error: refused, inHandler: true, connectionLost: false })).toBe('retriable');
  });
});
