import { sql } from 'drizzle-orm';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { defineBatchHandler, defineHandler, NonRetriableError } from '../../../src/index.js';
import {
  effectHandler,
  effects,
  jsonMessage,
  recordOutcomes,
  useTestEnvironment,
  waitFor,
} from '../../support/integration.js';
import { cards } from '../../support/cards.js';

const env = useTestEnvironment();
const quickRetry = { attempts: 2, initialDelayMs: 5, maxDelayMs: 20 };

async function deadLetters(
  topic: string,
): Promise<
  { message_id: string | null; reason: string; attempts: number; error: Record<string, unknown>; headers: unknown[] }[]
> {
  const { rows } = await env.pool.query<{
    message_id: string | null;
    reason: string;
    attempts: number;
    error: Record<string, unknown>;
    headers: unknown[];
  }>(
    'SELECT message_id, reason, attempts, error, headers FROM oncely.dead_letters WHERE topic = $1 ORDER BY "offset"',
    [topic],
  );
  return rows;
}

/** The two modes, each with a handler that writes one effect per event through the transaction. */
function bothModes(
  topic: string,
  options: {
    schema?: z.ZodType<unknown>;
    decode?: (value: Buffer | null) => unknown;
    messageId?: (event: unknown) => string | undefined;
  },
) {
  const write = (messageId: string, partition: number, offset: string) => ({
    messageId,
    topic,
    partition,
    offset: Number(offset),
  });
  return {
    message: defineHandler({
      topic,
      ...options,
      async handle(_event, ctx) {
        await ctx.tx.insert(effects).values(write(ctx.messageId, ctx.message.partition, ctx.message.offset));
      },
    }),
    batch: defineBatchHandler({
      topic,
      ...options,
      async handleBatch(events, ctx) {
        await ctx.tx
          .insert(effects)
          .values(events.map((e) => write(e.messageId, e.message.partition, e.message.offset)));
      },
    }),
  };
}

describe('G2 G5: a message’s own fault is never an outage: it gets an outcome at once and the partition moves on', () => {
  const faultsEndInOutcomes = async (mode: 'message' | 'batch'): Promise<void> => {
    const transformTopic = await env.createTopic(`transform-${mode}`);
    const decodeTopic = await env.createTopic(`decode-${mode}`);
    const idTopic = await env.createTopic(`msgid-${mode}`);
    // z.string().transform(BigInt) throws a SyntaxError on "abc": not a zod issue, a thrown error.
    const transform = bothModes(transformTopic, { schema: z.object({ amount: z.string().transform(BigInt) }) });
    const decode = bothModes(decodeTopic, {
      decode: (value) => {
        const text = value?.toString() ?? '';
        if (text.startsWith('!')) throw new TypeError('bad frame');
        return JSON.parse(text) as unknown;
      },
    });
    const id = bothModes(idTopic, {
      messageId: (event) => {
        const { id } = event as { id?: string };
        if (id === 'boom') throw new RangeError('no id for you');
        return id;
      },
    });
    await env.produce(transformTopic, [
      jsonMessage('t-bad', { amount: 'abc' }),
      jsonMessage('t-good', { amount: '12' }),
    ]);
    await env.produce(decodeTopic, [
      { value: '!garbage', headers: { 'message-id': 'd-bad' } },
      jsonMessage('d-good', {}),
    ]);
    await env.produce(idTopic, [
      { value: JSON.stringify({ id: 'boom' }) },
      { value: JSON.stringify({ id: 'i-good' }) },
    ]);
    const consumer = env.consumer({
      groupId: env.groupId(`fault-${mode}`),
      handlers:
        mode === 'batch' ? [transform.batch, decode.batch, id.batch] : [transform.message, decode.message, id.message],
      retry: quickRetry,
    });
    const outcomes = recordOutcomes(consumer);
    const retries: unknown[] = [];
    consumer.on('message:retrying', (e) => retries.push(e));
    consumer.on('chunk:retrying', (e) => retries.push(e));
    await consumer.start();
    await waitFor('six outcomes', () => outcomes.total === 6, { timeoutMs: 30_000 });

    expect((await env.effectsOf(transformTopic)).map((r) => r.messageId)).toEqual(['t-good']);
    expect((await env.effectsOf(decodeTopic)).map((r) => r.messageId)).toEqual(['d-good']);
    expect((await env.effectsOf(idTopic)).map((r) => r.messageId)).toEqual(['i-good']);
    const transformLetters = await deadLetters(transformTopic);
    expect(transformLetters.map((l) => [l.message_id, l.reason, l.attempts])).toEqual([
      ['t-bad', 'invalid_payload', 0],
    ]);
    expect(transformLetters[0]?.error.message).toContain("The handler's schema threw while validating the message");
    expect((await deadLetters(decodeTopic)).map((l) => [l.message_id, l.reason, l.error.name])).toEqual([
      ['d-bad', 'invalid_payload', 'TypeError'],
    ]);
    const idLetters = await deadLetters(idTopic);
    expect(idLetters.map((l) => [l.message_id, l.reason])).toEqual([[null, 'invalid_message_id']]);
    expect(idLetters[0]?.error.message).toContain('messageId() threw');
    // Deterministic failures are never retried.
    expect(retries).toEqual([]);
  };

  it('G2 G5: a schema transform that throws, a decoder that throws and a messageId() that throws dead-letter at once (message mode)', () =>
    faultsEndInOutcomes('message'));

  it('G2 G5: a schema transform that throws, a decoder that throws and a messageId() that throws dead-letter at once (batch mode)', () =>
    faultsEndInOutcomes('batch'));

  it('G5: a deferred constraint that fails at COMMIT is the handler’s failure: retried per policy, then handler_failed', async () => {
    const topic = await env.createTopic('deferred');
    await env.pool.query(`CREATE TABLE IF NOT EXISTS deferred_parent (id text PRIMARY KEY)`);
    await env.pool.query(`CREATE TABLE IF NOT EXISTS deferred_child (
      id text PRIMARY KEY,
      parent text REFERENCES deferred_parent (id) DEFERRABLE INITIALLY DEFERRED)`);
    const handler = defineHandler({
      topic,
      schema: z.object({ parent: z.string() }),
      async handle(event, ctx) {
        // Accepted now, checked at COMMIT: the failure surfaces outside the handler.
        await ctx.tx.execute(sql`INSERT INTO deferred_child (id, parent) VALUES (${ctx.messageId}, ${event.parent})`);
      },
    });
    await env.pool.query(`INSERT INTO deferred_parent (id) VALUES ('exists') ON CONFLICT DO NOTHING`);
    await env.produce(topic, [
      jsonMessage('orphan', { parent: 'missing' }),
      jsonMessage('child', { parent: 'exists' }),
    ]);
    const consumer = env.consumer({ groupId: env.groupId('deferred'), handlers: [handler], retry: quickRetry });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2, { timeoutMs: 30_000 });
    const letters = await deadLetters(topic);
    expect(letters.map((l) => [l.message_id, l.reason, l.attempts, l.error.code])).toEqual([
      ['orphan', 'handler_failed', 2, '23503'],
    ]);
    expect(outcomes.processed.map((p) => p.messageId)).toEqual(['child']);
  });
});

describe('G2: a dead letter can always be stored, whatever its content', () => {
  it('G2: stores dead letters whose error holds a lone surrogate, whose header name holds NUL and whose zod issue path holds NUL', async () => {
    const topic = await env.createTopic('unstorable');
    const handler = defineHandler({
      topic,
      schema: z.union([
        z.object({ account: z.string().length(3) }),
        z.object({ limits: z.record(z.string(), z.number()) }),
      ]),
      handle(event) {
        // "\ud800AB" passes length(3); the example's own error message then quotes it.
        if ('account' in event) throw new NonRetriableError(`account "${event.account}" not found`);
      },
    });
    await env.produce(topic, [
      { value: '{"account":"\\ud800AB"}', headers: { 'message-id': 'lone' } },
      { value: '{"limits":{"a\\u0000b":"x"}}', headers: { 'message-id': 'nul-path' } },
      { value: '{"account":"abc"}', headers: { 'message-id': 'nul-header', 'x-trace\u0000id': 'v' } },
      jsonMessage('next', { limits: {} }),
    ]);
    const consumer = env.consumer({ groupId: env.groupId('unstorable'), handlers: [handler], retry: quickRetry });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('four outcomes', () => outcomes.total === 4, { timeoutMs: 30_000 });
    const letters = await deadLetters(topic);
    expect(letters.map((l) => [l.message_id, l.reason])).toEqual([
      ['lone', 'handler_failed'],
      ['nul-path', 'invalid_payload'],
      ['nul-header', 'handler_failed'],
    ]);
    expect(letters[0]?.error.message).toBe('account "\ufffdAB" not found');
    expect(letters[2]?.headers).toContainEqual(expect.objectContaining({ keyEncoding: 'base64', value: 'v' }));
    expect(outcomes.processed.map((p) => p.messageId)).toEqual(['next']);
  });

  it('G2: stores the dead letter without headers when the database refuses the full one, and pauses the partition with an alert when it refuses even that', async () => {
    const shortened = await env.createTopic('refuse-headers');
    const refused = await env.createTopic('refuse-all');
    // Stand-ins for a database that will not take a row: a trigger that rejects by content.
    await env.pool.query(`
      CREATE OR REPLACE FUNCTION refuse_dead_letters() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.topic = '${shortened}' AND jsonb_array_length(NEW.headers) > 0 THEN
          RAISE EXCEPTION 'no headers here' USING ERRCODE = '23514';
        END IF;
        IF NEW.topic = '${refused}' THEN
          RAISE EXCEPTION 'no dead letters here' USING ERRCODE = '23514';
        END IF;
        RETURN NEW;
      END $$;
      DROP TRIGGER IF EXISTS refuse_dead_letters ON oncely.dead_letters;
      CREATE TRIGGER refuse_dead_letters BEFORE INSERT ON oncely.dead_letters
        FOR EACH ROW EXECUTE FUNCTION refuse_dead_letters();`);
    await env.produce(shortened, [
      { value: 'not json', headers: { 'message-id': 's-1', 'x-h': 'v' } },
      jsonMessage('s-2', {}),
    ]);
    await env.produce(refused, [{ value: 'not json', headers: { 'message-id': 'r-1' } }, jsonMessage('r-2', {})]);
    const groupId = env.groupId('refuse');
    const consumer = env.consumer({
      groupId,
      handlers: [effectHandler(shortened), effectHandler(refused)],
      retry: quickRetry,
    });
    const outcomes = recordOutcomes(consumer);
    const pauses: { topic: string; offset: string; reason: string }[] = [];
    consumer.on('partition:paused', (e) => pauses.push({ topic: e.topic, offset: e.offset, reason: e.reason }));
    await consumer.start();
    await waitFor('the refused partition paused', () => pauses.length === 1 && outcomes.total === 2, {
      timeoutMs: 30_000,
    });

    const stored = await deadLetters(shortened);
    expect(stored.map((l) => [l.message_id, l.headers])).toEqual([['s-1', []]]);
    expect(stored[0]?.error.stored).toContain('shortened');
    expect((await env.effectsOf(shortened)).map((r) => r.messageId)).toEqual(['s-2']);

    // Stopped at the message, not past it: nothing skipped, nothing committed beyond it.
    expect(pauses).toEqual([{ topic: refused, offset: '0', reason: 'unrecordable' }]);
    expect(consumer.paused()).toEqual([expect.objectContaining({ topic: refused, reason: 'unrecordable' })]);
    expect(await env.effectsOf(refused)).toEqual([]);
    expect((await env.offsetsOf(groupId, refused)).get(0) ?? 0n).toBe(0n);
    await env.pool.query('DROP TRIGGER refuse_dead_letters ON oncely.dead_letters');
  });
});

describe('G2: payload values stay out of logs and dead letters', () => {
  it('G2: strips the query parameters drizzle puts in its error, and PostgreSQL’s detail, from logs and dead letters', async () => {
    const topic = await env.createTopic('card-leak');
    await env.pool.query('CREATE TABLE IF NOT EXISTS cards (number text PRIMARY KEY)');
    const card = '4111111111111111';
    const handler = defineHandler({
      topic,
      schema: z.object({ card: z.string() }),
      async handle(event, ctx) {
        await ctx.tx.insert(cards).values({ number: event.card });
        await ctx.tx.insert(cards).values({ number: event.card }); // a unique violation quoting the card
      },
    });
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => lines.push(line) });
    await env.produce(topic, [jsonMessage('leak', { card })]);
    const consumer = env.consumer({ groupId: env.groupId('leak'), handlers: [handler], retry: quickRetry, logger });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('an outcome', () => outcomes.total === 1, { timeoutMs: 30_000 });
    const letters = await deadLetters(topic);
    expect(letters.map((l) => [l.reason, l.error.code])).toEqual([['handler_failed', '23505']]);
    expect(JSON.stringify(letters)).not.toContain(card);
    expect(lines.some((line) => line.includes('handler failed; retrying'))).toBe(true);
    expect(lines.filter((line) => line.includes(card))).toEqual([]);
  });
});

describe('G5: a handler timeout frees the partition', () => {
  it('G5: cancels the statement of a handler stuck in the database and moves on', async () => {
    const topic = await env.createTopic('stuck');
    const handler = defineHandler({
      topic,
      async handle(_event, ctx) {
        if (ctx.messageId === 'stuck') await ctx.tx.execute(sql`SELECT pg_sleep(60)`);
        await ctx.tx.insert(effects).values({ messageId: ctx.messageId, topic, partition: 0, offset: 0 });
      },
    });
    await env.produce(topic, [jsonMessage('stuck', {}), jsonMessage('after', {})]);
    const consumer = env.consumer({
      groupId: env.groupId('stuck'),
      handlers: [handler],
      handlerTimeoutMs: 1_000,
      retry: { attempts: 1 },
    });
    const outcomes = recordOutcomes(consumer);
    const started = Date.now();
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2, { timeoutMs: 30_000 });
    expect(Date.now() - started).toBeLessThan(20_000);
    expect((await deadLetters(topic)).map((l) => [l.message_id, l.error.code])).toEqual([
      ['stuck', 'ONCELY_HANDLER_TIMEOUT'],
    ]);
    const { rows } = await env.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
    );
    expect(rows[0]?.n).toBe(0);
  });
});

describe('events say what happened once', () => {
  it('G2: a replayed record whose dead letter is already stored (key reuse, invalid id) is a duplicate, not a new dead-letter alert', async () => {
    const topic = await env.createTopic('replay-dead');
    const groupId = env.groupId('replay-dead');
    await env.produce(topic, [
      jsonMessage('same', { amount: 1 }),
      jsonMessage('same', { amount: 2 }), // key reuse
      { value: '{}', headers: { 'message-id': '' } }, // invalid id
    ]);
    const first = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const firstOutcomes = recordOutcomes(first);
    await first.start();
    await waitFor('three outcomes', () => firstOutcomes.total === 3);
    expect(firstOutcomes.deadLettered.map((d) => d.reason)).toEqual(['key_reuse', 'invalid_message_id']);
    await first.stop();

    await env.rewind(groupId, topic);
    const again = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(again);
    await again.start();
    await waitFor('three outcomes again', () => outcomes.total === 3);
    expect(outcomes.deadLettered).toEqual([]);
    expect(outcomes.duplicates.map((d) => d.duplicateClass)).toEqual(['redelivery', 'redelivery', 'redelivery']);
    expect(await deadLetters(topic)).toHaveLength(2);
  });

  it('G5: batch mode announces each failed chunk attempt with chunk:retrying', async () => {
    const topic = await env.createTopic('chunk-retry');
    let failures = 0;
    const handler = defineBatchHandler({
      topic,
      handleBatch: () => {
        if (failures++ < 2) throw new Error('ledger service down');
      },
    });
    await env.produce(topic, [jsonMessage('c-1', {}), jsonMessage('c-2', {})]);
    const consumer = env.consumer({ groupId: env.groupId('chunk-retry'), handlers: [handler], retry: quickRetry });
    const retries: { size: number; attempt: number; firstOffset: string }[] = [];
    consumer.on('chunk:retrying', (e) =>
      retries.push({ size: e.size, attempt: e.attempt, firstOffset: e.firstOffset }),
    );
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2, { timeoutMs: 30_000 });
    expect(retries.length).toBeGreaterThan(0);
    expect(retries[0]).toMatchObject({ attempt: 1, firstOffset: '0' });
  });
});
