import { z } from 'zod';
import { describe, expect, it } from 'vitest';

import {
  discardDeadLetter,
  getDeadLetter,
  listDeadLetters,
  retryDeadLetter,
  retryDeadLetters,
} from '../../../src/index.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** Consumes `messages` with a handler that fails for ids in `failing`, and returns the group. */
async function deadLetterSome(
  topic: string,
  failing: Set<string>,
  schema?: z.ZodType<unknown>,
  count = 0,
): Promise<string> {
  const groupId = env.groupId('dla');
  const handler = effectHandler(
    topic,
    (ctx) => {
      if (failing.has(ctx.messageId)) throw new Error(`ledger rejected ${ctx.messageId}`);
    },
    schema,
  );
  const consumer = env.consumer({ groupId, handlers: [handler], retry: { attempts: 1 } });
  const outcomes = recordOutcomes(consumer);
  await consumer.start();
  await waitFor('every outcome', () => outcomes.total === count);
  await consumer.stop();
  return groupId;
}

describe('dead-letter operations', () => {
  it('retries a dead letter once: the handler’s writes, the inbox row and the dead letter commit together', async () => {
    const topic = await env.createTopic('dla-retry');
    await env.produce(topic, [jsonMessage('ok', { amountCents: 1 }), jsonMessage('rejected', { amountCents: 2 })]);
    const groupId = await deadLetterSome(topic, new Set(['rejected']), undefined, 2);
    const [letter] = await listDeadLetters(env.db, { groupId });
    expect(letter).toMatchObject({ messageId: 'rejected', reason: 'handler_failed', status: 'open', attempts: 1 });
    const id = letter?.id ?? '';

    const retry = { db: env.db, handlers: [effectHandler(topic)] };
    const first = await retryDeadLetter(retry, id);
    expect(first).toMatchObject({ outcome: 'processed', message: expect.stringContaining('processed on attempt 2') });
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['ok', 'rejected']);
    expect(await getDeadLetter(env.db, id)).toMatchObject({
      status: 'retried',
      resolution: 'retried successfully on attempt 2',
    });
    const { rows } = await env.pool.query("SELECT status, attempts FROM oncely.inbox WHERE message_id = 'rejected'");
    expect(rows).toEqual([{ status: 'processed', attempts: 2 }]);

    // Retrying what already succeeded changes nothing and says so.
    const second = await retryDeadLetter(retry, id);
    expect(second).toMatchObject({ outcome: 'already_processed', message: expect.stringContaining('already retried') });
    expect(await env.effectsOf(topic)).toHaveLength(2);
  });

  it('keeps a dead letter open with the new error when its retry fails, and rolls the retry’s writes back', async () => {
    const topic = await env.createTopic('dla-retry-fails');
    await env.produce(topic, [jsonMessage('rejected', {})]);
    const groupId = await deadLetterSome(topic, new Set(['rejected']), undefined, 1);
    const [letter] = await listDeadLetters(env.db, { groupId });
    const stillFailing = effectHandler(topic, () => {
      throw new Error('still down');
    });
    const result = await retryDeadLetter({ db: env.db, handlers: [stillFailing] }, letter?.id ?? '');
    expect(result).toMatchObject({ outcome: 'failed', message: expect.stringContaining('still down') });
    expect(await env.effectsOf(topic)).toEqual([]);
    expect(await getDeadLetter(env.db, letter?.id ?? '')).toMatchObject({
      status: 'open',
      attempts: 2,
      error: { message: 'still down' },
    });
  });

  it('applies an invalid payload once the schema accepts it, and refuses key reuse', async () => {
    const topic = await env.createTopic('dla-invalid');
    await env.produce(topic, [
      jsonMessage('amount-as-string', { amountCents: '250' }),
      { value: JSON.stringify({ amountCents: 1 }), headers: { 'message-id': 'reused' } },
      { value: JSON.stringify({ amountCents: 999 }), headers: { 'message-id': 'reused' } },
    ]);
    const strict = z.object({ amountCents: z.number() });
    const groupId = await deadLetterSome(topic, new Set(), strict, 3);
    const letters = await listDeadLetters(env.db, { groupId });
    expect(letters.map((l) => [l.messageId, l.reason])).toEqual([
      ['amount-as-string', 'invalid_payload'],
      ['reused', 'key_reuse'],
    ]);
    // The schema now coerces the string amount: the stored payload becomes valid.
    const lenient = effectHandler(topic, undefined, z.object({ amountCents: z.coerce.number() }));
    const results = await retryDeadLetters({ db: env.db, handlers: [lenient] }, { groupId });
    expect(results.map((r) => r.outcome)).toEqual(['processed', 'not_retriable']);
    expect(results[1]?.message).toContain('reuses the id of another message');
    expect((await env.effectsOf(topic)).map((r) => [r.messageId, r.payload])).toEqual([
      ['reused', { amountCents: 1 }],
      ['amount-as-string', { amountCents: 250 }],
    ]);
  });

  it('discards a dead letter, keeping why, and lists by status', async () => {
    const topic = await env.createTopic('dla-discard');
    await env.produce(topic, [jsonMessage('junk', {})]);
    const groupId = await deadLetterSome(topic, new Set(['junk']), undefined, 1);
    const [letter] = await listDeadLetters(env.db, { groupId });
    const id = letter?.id ?? '';
    expect(await discardDeadLetter(env.db, id, 'test data from staging')).toMatchObject({ outcome: 'discarded' });
    expect(await discardDeadLetter(env.db, id, 'again')).toMatchObject({ outcome: 'not_open' });
    expect(await listDeadLetters(env.db, { groupId })).toEqual([]);
    expect(await listDeadLetters(env.db, { groupId, status: 'discarded' })).toEqual([expect.objectContaining({ id })]);
    expect(await getDeadLetter(env.db, id)).toMatchObject({ resolution: 'discarded: test data from staging' });
    expect(await retryDeadLetter({ db: env.db, handlers: [effectHandler(topic)] }, id)).toMatchObject({
      outcome: 'not_open',
    });
  });
});
