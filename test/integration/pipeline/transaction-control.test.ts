import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';

import { defineHandler, type HandlerContext } from '../../../src/index.js';
import { effects, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** A handler applying `{ n }` events; for `n === 2` it runs `offend` on ctx.tx after writing. */
function ledger(topic: string, offend: (ctx: HandlerContext) => Promise<void>) {
  return defineHandler({
    topic,
    async handle(event, ctx) {
      await ctx.tx
        .insert(effects)
        .values({ messageId: ctx.messageId, topic, partition: 0, offset: Number(ctx.message.offset), payload: event });
      if ((event as { n: number }).n === 2) await offend(ctx);
      // A statement after the offence: in autocommit it would commit on its own.
      await ctx.tx.execute(sql`SELECT 1`);
    },
  });
}

async function inbox(topic: string): Promise<[string, string][]> {
  const { rows } = await env.pool.query<{ message_id: string; status: string }>(
    'SELECT message_id, status FROM oncely.inbox WHERE topic = $1 ORDER BY "offset"',
    [topic],
  );
  return rows.map((r) => [r.message_id, r.status]);
}

async function deadLetter(topic: string): Promise<{ messageId: string; code: string; message: string }[]> {
  const { rows } = await env.pool.query<{ message_id: string; error: { code: string; message: string } }>(
    'SELECT message_id, error FROM oncely.dead_letters WHERE topic = $1',
    [topic],
  );
  return rows.map((r) => ({ messageId: r.message_id, code: r.error.code, message: r.error.message }));
}

/**
 * Five messages in one commit group, the third one's handler ending the transaction: its four
 * neighbours are applied exactly once, the offender is dead-lettered with ONCELY_TX_CONTROL, and
 * Kafka's offset moves past all five only once their outcomes are recorded.
 */
async function runGroupOfFive(prefix: string, offend: (ctx: HandlerContext) => Promise<void>) {
  const topic = await env.createTopic(prefix);
  const groupId = env.groupId(prefix);
  await env.produce(
    topic,
    Array.from({ length: 5 }, (_, n) => jsonMessage(`${prefix}-${n}`, { n })),
  );
  const consumer = env.consumer({
    groupId,
    handlers: [ledger(topic, offend)],
    maxMessagesPerTransaction: 5,
    retry: { attempts: 3, initialDelayMs: 5, maxDelayMs: 10 },
  });
  const outcomes = recordOutcomes(consumer);
  await consumer.start();
  await waitFor('five outcomes', () => outcomes.total === 5);
  await waitFor('Kafka offset past the five', async () => (await env.committedOffsetsOf(groupId, topic)).get(0) === 5n);

  const ids = (n: number) => `${prefix}-${n}`;
  expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual([ids(0), ids(1), ids(3), ids(4)]);
  expect(outcomes.processed.map((p) => p.messageId)).toEqual([ids(0), ids(1), ids(3), ids(4)]);
  expect(outcomes.deadLettered.map((d) => [d.messageId, d.reason])).toEqual([[ids(2), 'handler_failed']]);
  expect(await inbox(topic)).toEqual([
    [ids(0), 'processed'],
    [ids(1), 'processed'],
    [ids(2), 'dead_lettered'],
    [ids(3), 'processed'],
    [ids(4), 'processed'],
  ]);
  const [letter, ...more] = await deadLetter(topic);
  expect(more).toEqual([]);
  expect(letter).toMatchObject({ messageId: ids(2), code: 'ONCELY_TX_CONTROL' });
  return letter?.message ?? '';
}

describe('transaction control in a handler is refused', () => {
  it('G1: in a commit group of five, a handler that catches a failed statement and sends ROLLBACK is dead-lettered ONCELY_TX_CONTROL and its neighbours are applied exactly once', async () => {
    const message = await runGroupOfFive('txc-rollback', async (ctx) => {
      try {
        await ctx.tx.execute(sql`SELECT 1/0`);
      } catch {
        // The pg idiom: undo the failed statement by hand and carry on.
        await ctx.tx.execute(sql`ROLLBACK`);
      }
    });
    expect(message).toContain('sent ROLLBACK');
  });

  it('G1: in a commit group of five, a handler that sends COMMIT is dead-lettered ONCELY_TX_CONTROL and nothing of the group commits apart from its outcomes', async () => {
    const message = await runGroupOfFive('txc-commit', async (ctx) => {
      await ctx.tx.execute(sql`commit`).catch(() => undefined);
    });
    expect(message).toContain('sent COMMIT');
  });

  it('G1: a ROLLBACK hidden in a multi-statement text is caught by the transaction status the driver reports: the offender is dead-lettered ONCELY_TX_CONTROL, its neighbours applied exactly once', async () => {
    const message = await runGroupOfFive('txc-hidden', async (ctx) => {
      await ctx.tx.execute(sql.raw('SELECT 1; ROLLBACK'));
    });
    expect(message).toContain('ended the transaction');
  });

  it('G1: a COMMIT hidden after a semicolon is refused before it is sent: the offender is dead-lettered ONCELY_TX_CONTROL, its neighbours applied exactly once', async () => {
    const message = await runGroupOfFive('txc-hidden-commit', async (ctx) => {
      await ctx.tx.execute(sql.raw("UPDATE effects SET consumer = ';' WHERE false; COMMIT"));
    });
    expect(message).toContain('sent COMMIT');
  });

  it('lets a handler roll back a savepoint of its own (ctx.tx.transaction()) and commits the rest of its work', async () => {
    const topic = await env.createTopic('txc-savepoint');
    await env.produce(topic, [jsonMessage('sp-0', { n: 0 }), jsonMessage('sp-1', { n: 1 })]);
    const handler = defineHandler({
      topic,
      async handle(_event, ctx) {
        await ctx.tx
          .transaction(async (savepoint) => {
            await savepoint
              .insert(effects)
              .values({ messageId: `${ctx.messageId}-undone`, topic, partition: 0, offset: 0 });
            await savepoint.execute(sql`SELECT 1/0`);
          })
          .catch(() => undefined);
        await ctx.tx
          .insert(effects)
          .values({ messageId: ctx.messageId, topic, partition: 0, offset: Number(ctx.message.offset) });
      },
    });
    const consumer = env.consumer({ groupId: env.groupId('txc-savepoint'), handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2);

    expect(outcomes.processed.map((p) => p.messageId)).toEqual(['sp-0', 'sp-1']);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['sp-0', 'sp-1']);
  });
});
