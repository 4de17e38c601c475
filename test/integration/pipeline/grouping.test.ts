import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';

import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

interface Call {
  readonly messageId: string;
  readonly attempt: number;
  /** The PostgreSQL transaction the handler ran in: calls that share it were one commit group. */
  readonly txid: string;
}

/** A handler that notes each call's transaction, writes an effect, and fails for `failing`. */
function notingHandler(topic: string, calls: Call[], failing?: string) {
  return effectHandler(topic, async (ctx) => {
    const result = await ctx.tx.execute<{ txid: string }>(sql`SELECT txid_current()::text AS txid`);
    calls.push({ messageId: ctx.messageId, attempt: ctx.attempt, txid: result.rows[0]?.txid ?? '' });
    if (ctx.messageId === failing) throw new Error('card declined');
  });
}

describe('commit grouping (maxMessagesPerTransaction)', () => {
  it('G1 G2: a group whose handler fails rolls back, runs the messages before it again and the failing one alone: every effect once, the failing message gets exactly its attempts', async () => {
    const topic = await env.createTopic('group-fail');
    const ids = Array.from({ length: 12 }, (_, i) => `m${i}`);
    await env.produce(
      topic,
      ids.map((id, i) => jsonMessage(id, { i })),
    );
    const calls: Call[] = [];
    const consumer = env.consumer({
      groupId: env.groupId('group-fail'),
      handlers: [notingHandler(topic, calls, 'm3')],
      retry: { attempts: 3, initialDelayMs: 5, maxDelayMs: 10 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('every outcome', () => outcomes.total === ids.length);

    // G1: the rolled-back group left nothing behind; its messages committed once each on the re-run.
    const applied = (await env.effectsOf(topic)).map((r) => r.messageId);
    expect(applied).toEqual(ids.filter((id) => id !== 'm3'));
    // G2: the failing message was called exactly `attempts` times in all (its call in the group is
    // its first attempt), then dead-lettered; the rest were processed.
    expect(calls.filter((c) => c.messageId === 'm3').map((c) => c.attempt)).toEqual([1, 2, 3]);
    expect(outcomes.deadLettered).toEqual([expect.objectContaining({ messageId: 'm3', attempts: 3 })]);
    expect(outcomes.processed.map((p) => p.messageId)).toEqual(ids.filter((id) => id !== 'm3'));

    // The messages that shared m3's first transaction were called again, in another transaction.
    const failedGroup = calls.find((c) => c.messageId === 'm3')?.txid;
    const neighbours = calls.filter((c) => c.txid === failedGroup && c.messageId !== 'm3').map((c) => c.messageId);
    expect(neighbours.length).toBeGreaterThan(0);
    for (const id of neighbours) {
      const txids = calls.filter((c) => c.messageId === id).map((c) => c.txid);
      expect(txids).toHaveLength(2);
      expect(txids[1]).not.toBe(failedGroup);
    }
    await consumer.stop();
  });

  it('G1: a group cut short by its time bound gives back the claims of the messages it did not reach: each is processed once, later, and an id twice in the group is one republish', async () => {
    const topic = await env.createTopic('group-cut');
    // One fetch: the group claims all five ids at once, then s0's handler outlasts the group's
    // time bound, so the group commits s0 alone and must release s1, s2 and s3.
    const ids = ['s0', 's1', 's2', 's1', 's3'];
    await env.produce(
      topic,
      ids.map((id) => jsonMessage(id, { id })),
    );
    const calls: Call[] = [];
    const consumer = env.consumer({
      groupId: env.groupId('group-cut'),
      handlers: [
        effectHandler(topic, async (ctx) => {
          const result = await ctx.tx.execute<{ txid: string }>(sql`SELECT txid_current()::text AS txid`);
          calls.push({ messageId: ctx.messageId, attempt: ctx.attempt, txid: result.rows[0]?.txid ?? '' });
          if (ctx.messageId === 's0') await new Promise((resolve) => setTimeout(resolve, 250));
        }),
      ],
    });
    const sizes: number[] = [];
    consumer.on('transaction:committed', (e) => sizes.push(e.messages));
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('every outcome', () => outcomes.total === ids.length);

    expect(sizes[0]).toBe(1);
    // Released, not left claimed: the messages the first group did not reach were processed,
    // each exactly once, in a later transaction; only the repeated id is a duplicate.
    expect(outcomes.processed.map((p) => p.messageId)).toEqual(['s0', 's1', 's2', 's3']);
    expect(outcomes.duplicates).toEqual([expect.objectContaining({ messageId: 's1', duplicateClass: 'republish' })]);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['s0', 's1', 's2', 's3']);
    expect(calls.map((c) => c.messageId)).toEqual(['s0', 's1', 's2', 's3']);
    expect(calls[1]?.txid).not.toBe(calls[0]?.txid);
    await consumer.stop();
  });

  it('G3: a group is one transaction whose offsets move after its commit; maxMessagesPerTransaction bounds it, and 1 gives one transaction per message', async () => {
    const commits = async (max: number): Promise<{ sizes: number[]; txids: Map<string, number> }> => {
      const topic = await env.createTopic(`group-size-${max}`);
      await env.produce(
        topic,
        Array.from({ length: 20 }, (_, i) => jsonMessage(`s${i}`, { i })),
      );
      const calls: Call[] = [];
      const groupId = env.groupId(`group-size-${max}`);
      const consumer = env.consumer({
        groupId,
        handlers: [notingHandler(topic, calls)],
        maxMessagesPerTransaction: max,
      });
      const sizes: number[] = [];
      consumer.on('transaction:committed', (e) => sizes.push(e.messages));
      const outcomes = recordOutcomes(consumer);
      await consumer.start();
      await waitFor('every outcome', () => outcomes.total === 20);
      await waitFor(
        'Kafka to commit the end',
        async () => (await env.committedOffsetsOf(groupId, topic)).get(0) === 20n,
      );
      expect((await env.offsetsOf(groupId, topic)).get(0)).toBe(20n);
      await consumer.stop();
      const txids = new Map<string, number>();
      for (const c of calls) txids.set(c.txid, (txids.get(c.txid) ?? 0) + 1);
      return { sizes, txids };
    };

    const grouped = await commits(5);
    expect(grouped.sizes.reduce((a, b) => a + b, 0)).toBe(20);
    expect(Math.max(...grouped.sizes)).toBeLessThanOrEqual(5);
    // Grouped for real: handlers of several messages ran in one PostgreSQL transaction.
    expect(Math.max(...grouped.txids.values())).toBeGreaterThan(1);
    expect([...grouped.txids.values()].every((n) => n <= 5)).toBe(true);

    const single = await commits(1);
    expect(single.sizes).toEqual(Array.from({ length: 20 }, () => 1));
    expect(single.txids.size).toBe(20);
  });
});
