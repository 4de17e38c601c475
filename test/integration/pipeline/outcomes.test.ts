import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { defineHandler, NonRetriableError, type OncelyTransaction, payloadFingerprint } from '../../../src/index.js';
import {
  effectHandler,
  effects,
  jsonMessage,
  recordOutcomes,
  useTestEnvironment,
  waitFor,
} from '../../support/integration.js';

const env = useTestEnvironment();

interface DeadLetterRow {
  message_id: string | null;
  offset: string;
  reason: string;
  attempts: number;
  value: Buffer | null;
  key: Buffer | null;
  headers: unknown;
  error: {
    name: string;
    message: string;
    code?: string;
    issues?: unknown[];
    firstPayloadHash?: string;
    payloadHash?: string;
  };
  status: string;
}

async function deadLetters(topic: string): Promise<DeadLetterRow[]> {
  const { rows } = await env.pool.query<DeadLetterRow>(
    'SELECT message_id, "offset", reason, attempts, value, key, headers, error, status FROM oncely.dead_letters WHERE topic = $1 ORDER BY "offset"',
    [topic],
  );
  return rows;
}

const paymentSchema = z.object({ paymentId: z.string(), amountCents: z.number().int() });

describe('G2: every message read ends in exactly one recorded outcome', () => {
  it('G2: dead-letters key reuse (same id, other payload) with reason key_reuse, never a silent skip', async () => {
    const topic = await env.createTopic('g2-reuse');
    const first = JSON.stringify({ paymentId: 'p1', amountCents: 100 });
    const second = JSON.stringify({ paymentId: 'p1', amountCents: 999 });
    await env.produce(topic, [
      { value: first, headers: { 'message-id': 'reused' } },
      { value: second, headers: { 'message-id': 'reused' } },
      jsonMessage('next', { paymentId: 'p2', amountCents: 5 }),
    ]);
    const consumer = env.consumer({
      groupId: env.groupId('reuse'),
      handlers: [effectHandler(topic, undefined, paymentSchema)],
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('three outcomes', () => outcomes.total === 3);

    expect((await env.effectsOf(topic)).map((r) => [r.messageId, r.payload])).toEqual([
      ['reused', { paymentId: 'p1', amountCents: 100 }],
      ['next', { paymentId: 'p2', amountCents: 5 }],
    ]);
    expect(outcomes.duplicates).toEqual([]);
    const [letter, ...others] = await deadLetters(topic);
    expect(others).toEqual([]);
    expect(letter).toMatchObject({
      message_id: 'reused',
      offset: '1',
      reason: 'key_reuse',
      attempts: 0,
      status: 'open',
    });
    expect(letter?.value?.toString()).toBe(second);
    expect(letter?.error).toMatchObject({
      code: 'ONCELY_KEY_REUSE',
      firstPayloadHash: payloadFingerprint(Buffer.from(first)).toString('hex'),
      payloadHash: payloadFingerprint(Buffer.from(second)).toString('hex'),
    });
    expect(letter?.error.message).toContain('was first seen at');
  });

  it('G2: dead-letters invalid JSON and schema-invalid payloads with reason invalid_payload, and the partition keeps flowing', async () => {
    const topic = await env.createTopic('g2-invalid');
    await env.produce(topic, [
      jsonMessage('ok-1', { paymentId: 'a', amountCents: 1 }),
      {
        value: '{"paymentId": "b", amountCents',
        headers: { 'message-id': 'broken-json', trace: Buffer.from([0xff]) },
        key: 'k1',
      },
      jsonMessage('wrong-type', { paymentId: 'c', amountCents: 'ten' }),
      { value: Buffer.from([0x7b, 0xff, 0x7d]), headers: { 'message-id': 'not-utf8' } },
      jsonMessage('ok-2', { paymentId: 'd', amountCents: 2 }),
    ]);
    let handlerCalls = 0;
    const handler = effectHandler(topic, () => void handlerCalls++, paymentSchema);
    const consumer = env.consumer({ groupId: env.groupId('invalid'), handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('five outcomes', () => outcomes.total === 5);

    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['ok-1', 'ok-2']);
    expect(handlerCalls).toBe(2);
    const letters = await deadLetters(topic);
    expect(letters.map((l) => [l.message_id, l.reason, l.attempts])).toEqual([
      ['broken-json', 'invalid_payload', 0],
      ['wrong-type', 'invalid_payload', 0],
      ['not-utf8', 'invalid_payload', 0],
    ]);
    const [json, schema, utf8] = letters;
    expect(json?.error.message).toBe('The message value is not valid JSON (syntax error at position 19).');
    // The stored record is the original, bytes and headers included, so it can be re-driven.
    expect(json?.key?.toString()).toBe('k1');
    expect(json?.headers).toEqual([
      { key: 'message-id', value: 'broken-json', encoding: 'utf8' },
      { key: 'trace', value: '/w==', encoding: 'base64' },
    ]);
    expect(schema?.error.issues).toEqual([expect.objectContaining({ path: ['amountCents'], code: 'invalid_type' })]);
    expect(utf8?.error.message).toContain('not valid UTF-8');
    const { rows } = await env.pool.query<{ message_id: string; status: string }>(
      'SELECT message_id, status FROM oncely.inbox WHERE topic = $1 ORDER BY "offset"',
      [topic],
    );
    expect(rows.map((r) => `${r.message_id}:${r.status}`)).toEqual([
      'ok-1:processed',
      'broken-json:dead_lettered',
      'wrong-type:dead_lettered',
      'not-utf8:dead_lettered',
      'ok-2:processed',
    ]);
  });

  it('G2: dead-letters an invalid message id with reason invalid_message_id, never truncating it', async () => {
    const topic = await env.createTopic('g2-bad-id');
    await env.produce(topic, [
      { value: '{}', headers: { 'message-id': '' } },
      { value: '{}', headers: { 'message-id': 'x'.repeat(256) } },
      { value: '{}', headers: { 'message-id': Buffer.from([0xc3, 0x28]) } },
      jsonMessage('fine', {}),
    ]);
    const groupId = env.groupId('badid');
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('four outcomes', () => outcomes.total === 4);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['fine']);
    const letters = await deadLetters(topic);
    expect(letters.map((l) => [l.offset, l.message_id, l.reason])).toEqual([
      ['0', null, 'invalid_message_id'],
      ['1', null, 'invalid_message_id'],
      ['2', null, 'invalid_message_id'],
    ]);
    expect(letters.map((l) => l.error.message)).toEqual([
      expect.stringContaining('the id is empty'),
      expect.stringContaining('the id is 256 characters long; the limit is 255'),
      expect.stringContaining('not valid UTF-8'),
    ]);
    // Records with no id to claim still move the partition's resume point with their dead letter.
    expect((await env.offsetsOf(groupId, topic)).get(0)).toBe(4n);
  });

  it('G2: retries a handler that swallowed a database error (COMMIT became ROLLBACK) and dead-letters it, not marking it processed', async () => {
    const topic = await env.createTopic('g2-swallow');
    await env.produce(topic, [jsonMessage('swallow', {})]);
    const handler = defineHandler({
      topic,
      async handle(_event, ctx) {
        await ctx.tx.insert(effects).values({ messageId: ctx.messageId, topic, partition: 0, offset: 0 });
        // A failing statement whose error is swallowed: PostgreSQL aborts the transaction.
        await ctx.tx.execute('SELECT 1/0').catch(() => undefined);
      },
    });
    const consumer = env.consumer({
      groupId: env.groupId('swallow'),
      handlers: [handler],
      retry: { attempts: 2, initialDelayMs: 10, maxDelayMs: 10 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('the outcome', () => outcomes.total === 1);
    expect(outcomes.processed).toEqual([]);
    expect(await env.effectsOf(topic)).toEqual([]);
    const [letter] = await deadLetters(topic);
    expect(letter).toMatchObject({ reason: 'handler_failed', attempts: 2, error: { code: 'ONCELY_COMMIT_FAILED' } });
  });

  it('refuses ctx.tx after its transaction ended, so a late query cannot land in another message’s transaction', async () => {
    const topic = await env.createTopic('tx-closed');
    await env.produce(topic, [jsonMessage('first', {}), jsonMessage('second', {})]);
    let kept: OncelyTransaction | undefined;
    const handler = effectHandler(topic, (ctx) => {
      kept ??= ctx.tx;
    });
    const consumer = env.consumer({ groupId: env.groupId('closed'), handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2);
    // drizzle wraps the refusal in its DrizzleQueryError; the cause says what happened.
    await expect(kept?.execute('SELECT 1')).rejects.toMatchObject({ cause: { code: 'ONCELY_ATTEMPT_ENDED' } });
  });

  it('logs an expected dead letter as one concise warn line and a handler that ran out of attempts as an error, each key once', async () => {
    const topic = await env.createTopic('log-lines');
    await env.produce(topic, [
      { value: 'not json', headers: { 'message-id': 'bad-json' } },
      jsonMessage('declined', { amountCents: 1 }),
      jsonMessage('broken', { amountCents: 2 }),
    ]);
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const consumer = env.consumer({
      groupId: env.groupId('log-lines'),
      logger,
      retry: { attempts: 2, initialDelayMs: 5, maxDelayMs: 10 },
      handlers: [
        effectHandler(topic, (ctx) => {
          if (ctx.messageId === 'declined') throw new NonRetriableError('card declined');
          if (ctx.messageId === 'broken') throw new Error('ledger unavailable');
        }),
      ],
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('three dead letters', () => outcomes.deadLettered.length === 3);
    await consumer.stop();
    const deadLetterLines = lines.filter((l) => l.includes('"outcome":"dead_lettered"'));
    const byId = new Map(deadLetterLines.map((l) => [(JSON.parse(l) as { messageId: string }).messageId, l]));
    for (const id of ['bad-json', 'declined']) {
      const line = JSON.parse(byId.get(id) ?? '{}') as { level: number; msg: string; error: Record<string, unknown> };
      expect(line.level).toBe(40); // warn
      expect(line.error.stack).toBeUndefined();
      expect(byId.get(id)?.length).toBeLessThan(1_000);
    }
    expect(JSON.parse(byId.get('declined') ?? '{}')).toMatchObject({
      msg: 'dead-lettered (handler_failed): card declined',
    });
    const broken = JSON.parse(byId.get('broken') ?? '{}') as { level: number; error: Record<string, unknown> };
    expect(broken.level).toBe(50); // error, with the stack
    expect(broken.error.stack).toEqual(expect.stringContaining('ledger unavailable'));
    // The logger carries the group id; a line must not repeat it.
    for (const line of lines) expect(line.match(/"groupId"/g)?.length ?? 0).toBeLessThanOrEqual(1);
  });

  it('keeps payload values out of the logs unless logPayloads is on', async () => {
    const topic = await env.createTopic('logs');
    const secret = 'card-4111111111111111';
    await env.produce(topic, [
      jsonMessage('leaky', { paymentId: secret, amountCents: 'x' }),
      // Malformed JSON: the JSON parser's own message would quote the start of it.
      { value: `${secret} not json`, headers: { 'message-id': 'leaky-json' } },
    ]);
    const capture = (logPayloads: boolean) => {
      const lines: string[] = [];
      const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
      return {
        lines,
        consumer: env.consumer({
          groupId: env.groupId('logs'),
          logger,
          logPayloads,
          handlers: [effectHandler(topic, undefined, paymentSchema)],
        }),
      };
    };
    for (const logPayloads of [false, true]) {
      const { lines, consumer } = capture(logPayloads);
      const outcomes = recordOutcomes(consumer);
      await consumer.start();
      await waitFor('the dead letters', () => outcomes.deadLettered.length === 2);
      await consumer.stop();
      const deadLetterLine = lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l.outcome === 'dead_lettered');
      // Every outcome line carries where the message was.
      expect(deadLetterLine).toMatchObject({
        topic,
        partition: 0,
        offset: '0',
        messageId: 'leaky',
        reason: 'invalid_payload',
      });
      // Not even a prefix of the card number (a parser error message would quote ten characters).
      expect(lines.some((l) => l.includes('card-41'))).toBe(logPayloads);
    }
  });
});
