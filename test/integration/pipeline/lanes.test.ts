import { describe, expect, it } from 'vitest';

import { spawnFixture } from '../../support/child.js';
import {
  effectHandler,
  type OutgoingMessage,
  recordOutcomes,
  useTestEnvironment,
  waitFor,
} from '../../support/integration.js';

const env = useTestEnvironment();

/** A keyed test message: `key` decides its lane, `seq` is its place among the key's messages. */
function keyed(id: string, key: string, seq: number, partition = 0): OutgoingMessage {
  return { value: JSON.stringify({ key, seq }), key, headers: { 'message-id': id }, partition };
}

/** `count` messages over `keys` keys (key of message i: `pick(i)`), each key numbered from 0. */
function workload(prefix: string, count: number, pick: (i: number) => string, partition = 0): OutgoingMessage[] {
  const next = new Map<string, number>();
  return Array.from({ length: count }, (_, i) => {
    const key = pick(i);
    const seq = next.get(key) ?? 0;
    next.set(key, seq + 1);
    return keyed(`${prefix}-${i}`, key, seq, partition);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Every effect row's message id once, and `total` of them. */
async function expectAppliedOnce(topic: string, total: number): Promise<void> {
  const rows = await env.effectsOf(topic);
  expect(new Set(rows.map((r) => r.messageId)).size).toBe(total);
  expect(rows).toHaveLength(total);
}

describe('per-key lanes (G4’s exception): order per key, offsets at the watermark', () => {
  it('G4: with lanes, each key’s messages are handled and committed in offset order while keys run at once', async () => {
    const topic = await env.createTopic('lanes-order');
    const total = 600;
    // A generated workload: 37 keys, uneven (key i % 37, with every 5th message on key 0).
    await env.produce(
      topic,
      workload('o', total, (i) => `k${i % 5 === 0 ? 0 : i % 37}`),
    );
    const calls: { key: string; seq: number }[] = [];
    let running = 0;
    let mostAtOnce = 0;
    const handler = effectHandler(topic, async (_ctx, event) => {
      const { key, seq } = event as { key: string; seq: number };
      calls.push({ key, seq });
      running += 1;
      mostAtOnce = Math.max(mostAtOnce, running);
      // Uneven work, so lanes overtake each other and any reordering within a key would show.
      await sleep(seq % 3 === 0 ? 4 : 1);
      running -= 1;
    });
    const groupId = env.groupId('lanes-order');
    const consumer = env.consumer({ groupId, lanes: 6, handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('every message', () => outcomes.total === total);

    // Per key, handler calls and commits (effects.id order) follow the key's sequence exactly.
    const byKey = new Map<string, number[]>();
    for (const call of calls) byKey.set(call.key, [...(byKey.get(call.key) ?? []), call.seq]);
    for (const seqs of byKey.values()) expect(seqs).toEqual(seqs.map((_, i) => i));
    const committed = new Map<string, number[]>();
    for (const row of await env.effectsOf(topic)) {
      const { key, seq } = row.payload as { key: string; seq: number };
      committed.set(key, [...(committed.get(key) ?? []), seq]);
    }
    for (const seqs of committed.values()) expect(seqs).toEqual(seqs.map((_, i) => i));
    expect(mostAtOnce).toBeGreaterThan(1);
    expect(outcomes.processed).toHaveLength(total);
    // Both offsets end at the partition's end: the watermark reached it.
    await waitFor('offsets at the end', async () => (await env.offsetsOf(groupId, topic)).get(0) === BigInt(total));
    await consumer.stop();
    expect((await env.committedOffsetsOf(groupId, topic)).get(0)).toBe(BigInt(total));
  });

  it('G1 G3: the watermark never passes an unrecorded offset: SIGKILLed while a slow lane holds a low offset, every message is applied exactly once after restart', async () => {
    const topic = await env.createTopic('lanes-kill');
    const groupId = env.groupId('lanes-kill');
    const total = 200;
    const slowAt = 5;
    // Offset 5 is the only message of key "slow"; the others spread over many keys.
    await env.produce(
      topic,
      workload('w', total, (i) => (i === slowAt ? 'slow' : `k${i % 23}`)),
    );
    const child = spawnFixture('lane-consumer.ts', {
      KAFKA_BROKERS: env.brokers.join(','),
      DATABASE_URL: env.databaseUrl,
      TOPIC: topic,
      GROUP_ID: groupId,
      LANES: '4',
      SLOW_KEY: 'slow',
      SLOW_MS: '60000',
    });
    await child.waitForLine((l) => l.event === 'slow-started');
    // The other lanes commit far past the slow record while it holds the watermark.
    await waitFor('later offsets recorded', async () => (await env.effectsOf(topic)).length >= 100);
    const recordedBeyond = (await env.effectsOf(topic)).filter((r) => r.offset > slowAt).length;
    const resumePoint = (await env.offsetsOf(groupId, topic)).get(0) ?? 0n;
    const kafkaOffset = (await env.committedOffsetsOf(groupId, topic)).get(0) ?? -1n;
    await child.kill('SIGKILL');
    // Neither offset passed the record still in flight.
    expect(resumePoint).toBeLessThanOrEqual(BigInt(slowAt));
    expect(kafkaOffset).toBeLessThanOrEqual(BigInt(slowAt));
    expect(recordedBeyond).toBeGreaterThan(0);

    const restarted = env.consumer({ groupId, lanes: 4, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(restarted);
    await restarted.start();
    await waitFor(
      'the partition recorded to its end',
      async () => (await env.offsetsOf(groupId, topic)).get(0) === 200n,
    );
    await expectAppliedOnce(topic, total);
    // What the first process recorded above the watermark came again, as redeliveries.
    expect(outcomes.duplicates.length).toBeGreaterThanOrEqual(recordedBeyond);
    expect(outcomes.duplicates.every((d) => d.duplicateClass === 'redelivery')).toBe(true);
  });

  it('G4: a hot key keeps its order on one lane, the other keys flow past it, and no lane runs more than maxInFlight past the watermark', async () => {
    const topic = await env.createTopic('lanes-hot');
    const total = 300;
    const maxInFlight = 40;
    // Every other message is the hot key's.
    await env.produce(
      topic,
      workload('h', total, (i) => (i % 2 === 0 ? 'hot' : `k${i % 29}`)),
    );
    const returned = new Set<number>();
    const hotSeqs: number[] = [];
    let lastColdDone = 0;
    let lastHotDone = 0;
    let windowBroken: string | undefined;
    const handler = effectHandler(topic, async (ctx, event) => {
      const offset = Number(ctx.message.offset);
      // Handed out only once the records maxInFlight below it were recorded (their handlers returned).
      for (let o = 0; o <= offset - maxInFlight; o++) {
        if (!returned.has(o)) windowBroken ??= `offset ${offset} started while ${o} was not done`;
      }
      const { key, seq } = event as { key: string; seq: number };
      if (key === 'hot') {
        hotSeqs.push(seq);
        await sleep(3);
      }
      returned.add(offset);
      if (key === 'hot') lastHotDone = performance.now();
      else lastColdDone = performance.now();
    });
    const consumer = env.consumer({
      groupId: env.groupId('lanes-hot'),
      lanes: { count: 4, maxInFlight },
      handlers: [handler],
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('every message', () => outcomes.total === total);
    expect(windowBroken).toBeUndefined();
    expect(hotSeqs).toEqual(hotSeqs.map((_, i) => i));
    expect(lastColdDone).toBeLessThan(lastHotDone);
    await expectAppliedOnce(topic, total);
  });

  it('G1 G2: a poison message on one lane is dead-lettered while the other lanes keep going, and its key’s next message waits for it', async () => {
    const topic = await env.createTopic('lanes-poison');
    const total = 120;
    await env.produce(
      topic,
      workload('p', total, (i) => `k${i % 11}`),
    );
    const poisonId = 'p-3';
    const appliedWhilePoisoned: number[] = [];
    let poisonDone = false;
    const poisonKeyAfter: string[] = [];
    const handler = effectHandler(topic, (ctx, event) => {
      if (ctx.messageId === poisonId) throw new Error('the card network rejected this payment');
      const { key } = event as { key: string };
      if (!poisonDone) appliedWhilePoisoned.push(Number(ctx.message.offset));
      if (key === 'k3') poisonKeyAfter.push(`${ctx.messageId}:${poisonDone}`);
    });
    const consumer = env.consumer({
      groupId: env.groupId('lanes-poison'),
      lanes: 4,
      retry: { attempts: 3, initialDelayMs: 300, maxDelayMs: 300, jitter: 0 },
      handlers: [handler],
    });
    const outcomes = recordOutcomes(consumer);
    consumer.on('message:dead-lettered', () => {
      poisonDone = true;
    });
    await consumer.start();
    await waitFor('every outcome', () => outcomes.total === total);
    expect(outcomes.deadLettered).toEqual([
      expect.objectContaining({ messageId: poisonId, reason: 'handler_failed', attempts: 3 }),
    ]);
    // While its retries waited (~600 ms), most of the other keys’ messages were applied.
    expect(appliedWhilePoisoned.filter((o) => o > 3).length).toBeGreaterThan(total / 2);
    // Its own key's later messages ran only after it was dead-lettered.
    expect(poisonKeyAfter.length).toBeGreaterThan(0);
    expect(poisonKeyAfter.every((entry) => entry.endsWith(':true'))).toBe(true);
    await expectAppliedOnce(topic, total - 1);
  });

  it('G1 G3: a rebalance with lanes in flight applies every message once', async () => {
    const topic = await env.createTopic('lanes-rebalance', 2);
    const groupId = env.groupId('lanes-rebalance');
    const perPartition = 150;
    for (let p = 0; p < 2; p++) {
      await env.produce(
        topic,
        workload(`r${p}`, perPartition, (i) => `k${i % 13}`, p),
      );
    }
    const slow = effectHandler(topic, () => sleep(15));
    const first = env.consumer({ groupId, lanes: 4, concurrency: 2, handlers: [slow] });
    const firstOutcomes = recordOutcomes(first);
    await first.start();
    await waitFor('some progress', () => firstOutcomes.total >= 40);
    // A second member joins mid-stream: partitions move while lanes hold transactions.
    const second = env.consumer({ groupId, lanes: 4, concurrency: 2, handlers: [slow] });
    await second.start();
    await waitFor(
      'both partitions recorded to their end',
      async () => {
        const offsets = await env.offsetsOf(groupId, topic);
        return offsets.get(0) === BigInt(perPartition) && offsets.get(1) === BigInt(perPartition);
      },
      { timeoutMs: 90_000 },
    );
    await expectAppliedOnce(topic, 2 * perPartition);
  });

  it('G3: stop() mid-flight lets the lanes finish, leaves both offsets at the watermark, and the next consumer applies the rest once', async () => {
    const topic = await env.createTopic('lanes-stop');
    const groupId = env.groupId('lanes-stop');
    const total = 300;
    await env.produce(
      topic,
      workload('s', total, (i) => `k${i % 17}`),
    );
    const first = env.consumer({ groupId, lanes: 4, handlers: [effectHandler(topic, () => sleep(10))] });
    const outcomes = recordOutcomes(first);
    await first.start();
    await waitFor('some progress', () => outcomes.total >= 50);
    await first.stop();
    const resumePoint = (await env.offsetsOf(groupId, topic)).get(0) ?? 0n;
    const kafkaOffset = (await env.committedOffsetsOf(groupId, topic)).get(0) ?? -1n;
    const rows = await env.effectsOf(topic);
    // Stopped at the watermark: both offsets agree, nothing below it is missing, nothing applied twice.
    expect(kafkaOffset).toBe(resumePoint);
    expect(resumePoint).toBeLessThan(BigInt(total));
    const applied = new Set(rows.map((r) => r.offset));
    for (let o = 0; o < Number(resumePoint); o++) expect(applied.has(o)).toBe(true);
    expect(new Set(rows.map((r) => r.messageId)).size).toBe(rows.length);

    const next = env.consumer({ groupId, lanes: 4, handlers: [effectHandler(topic)] });
    await next.start();
    await waitFor('the end', async () => (await env.offsetsOf(groupId, topic)).get(0) === BigInt(total));
    await expectAppliedOnce(topic, total);
  });
});
