import { setTimeout as sleep } from 'node:timers/promises';

import { describe, expect, it } from 'vitest';

import { defineHandler, type HandlerContext } from '../../../src/index.js';
import { effects, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** The oncely error code of a refusal (drizzle wraps a refused query; its cause has the code). */
function codeOf(error: unknown): string | undefined {
  const e = error as { code?: unknown; cause?: { code?: unknown } } | undefined;
  const code = typeof e?.code === 'string' ? e.code : e?.cause?.code;
  return typeof code === 'string' ? code : undefined;
}

/** What each member of an ended attempt's ctx answered when used late. */
interface LateUse {
  publish?: string;
  step?: string;
  tx?: string;
}

async function tryLate(use: () => Promise<unknown>): Promise<string> {
  try {
    await use();
    return 'accepted';
  } catch (error) {
    return codeOf(error) ?? String(error);
  }
}

describe('an ended attempt owns nothing', () => {
  it('G8: a timed-out attempt that publishes, steps and writes afterwards is refused with ONCELY_ATTEMPT_ENDED, and nothing of it commits in the next message’s transaction', async () => {
    const topic = await env.createTopic('late-use');
    const downstream = await env.createTopic('late-use-out');
    const groupId = env.groupId('late-use');
    await env.produce(topic, [jsonMessage('slow', { n: 0 }), jsonMessage('next', { n: 1 })]);

    const late: LateUse = {};
    let lateDone!: () => void;
    const lateFinished = new Promise<void>((resolve) => (lateDone = resolve));
    let stepCalls = 0;

    // Message `slow` times out; work it started keeps running and uses its ctx once the attempt
    // is over — while message `next` holds its transaction open on the same connection.
    const lateWork = async (ctx: HandlerContext): Promise<void> => {
      await sleep(300);
      late.publish = await tryLate(() => ctx.publish({ topic: downstream, value: { from: 'slow' } }));
      late.step = await tryLate(() => ctx.step('charge', () => (stepCalls += 1)));
      late.tx = await tryLate(() =>
        ctx.tx.insert(effects).values({ messageId: 'slow-late', topic, partition: 0, offset: 0 }),
      );
      lateDone();
    };
    let started: Promise<void> | undefined;
    const handler = defineHandler({
      topic,
      async handle(_event, ctx) {
        if (ctx.messageId === 'slow') {
          started ??= lateWork(ctx);
          // Honours the signal, so the attempt ends at the timeout; the work above does not.
          await new Promise((_, reject) =>
            ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)),
          );
          return;
        }
        // Holds this message's transaction open until the late work has tried everything.
        await Promise.race([lateFinished, sleep(15_000)]);
        await ctx.tx
          .insert(effects)
          .values({ messageId: ctx.messageId, topic, partition: 0, offset: Number(ctx.message.offset) });
      },
    });
    const consumer = env.consumer({
      groupId,
      handlers: [handler],
      handlerTimeoutMs: 150,
      maxMessagesPerTransaction: 1,
      retry: { attempts: 1, initialDelayMs: 5, maxDelayMs: 5 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2);
    await started;

    expect(late).toEqual({
      publish: 'ONCELY_ATTEMPT_ENDED',
      step: 'ONCELY_ATTEMPT_ENDED',
      tx: 'ONCELY_ATTEMPT_ENDED',
    });
    expect(stepCalls).toBe(0);
    expect(outcomes.deadLettered.map((d) => d.messageId)).toEqual(['slow']);
    expect(outcomes.processed.map((p) => p.messageId)).toEqual(['next']);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['next']);
    const outbox = await env.pool.query('SELECT message_id FROM oncely.outbox WHERE topic = $1', [downstream]);
    expect(outbox.rows).toEqual([]);
    const steps = await env.pool.query("SELECT name FROM oncely.steps WHERE owner_id = 'slow'");
    expect(steps.rows).toEqual([]);
  });

  it('G8: a ctx kept past its attempt in a commit group cannot publish into a later member’s transaction', async () => {
    const topic = await env.createTopic('late-kept');
    const downstream = await env.createTopic('late-kept-out');
    await env.produce(
      topic,
      ['a', 'b', 'c'].map((id) => jsonMessage(id, {})),
    );
    let kept: HandlerContext | undefined;
    let refused: string | undefined;
    const handler = defineHandler({
      topic,
      async handle(_event, ctx) {
        if (ctx.messageId === 'a') kept = ctx;
        // Message b's handler uses a's ctx: a's attempt ended when a's handler returned.
        if (ctx.messageId === 'b' && kept !== undefined) {
          refused = await tryLate(() => kept!.publish({ topic: downstream, value: { from: 'a' } }));
        }
        await ctx.tx
          .insert(effects)
          .values({ messageId: ctx.messageId, topic, partition: 0, offset: Number(ctx.message.offset) });
      },
    });
    const consumer = env.consumer({
      groupId: env.groupId('late-kept'),
      handlers: [handler],
      maxMessagesPerTransaction: 3,
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('three outcomes', () => outcomes.total === 3);

    expect(refused).toBe('ONCELY_ATTEMPT_ENDED');
    expect(outcomes.processed.map((p) => p.messageId)).toEqual(['a', 'b', 'c']);
    const outbox = await env.pool.query('SELECT message_id FROM oncely.outbox WHERE topic = $1', [downstream]);
    expect(outbox.rows).toEqual([]);
  });
});
