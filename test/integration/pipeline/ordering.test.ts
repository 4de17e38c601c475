import { describe, expect, it } from 'vitest';

import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

describe('G4: messages of one partition are handled in offset order', () => {
  it('G4: handles each partition’s messages in offset order while partitions run concurrently', async () => {
    const partitions = 3;
    const perPartition = 200;
    const topic = await env.createTopic('g4-order', partitions);
    for (let p = 0; p < partitions; p++) {
      await env.produce(
        topic,
        Array.from({ length: perPartition }, (_, i) => jsonMessage(`p${p}-${i}`, { i }, p)),
      );
    }
    const calls: { partition: number; offset: number }[] = [];
    // Uneven work per message so partitions interleave and any reordering would show.
    const handler = effectHandler(topic, async (ctx) => {
      calls.push({ partition: ctx.message.partition, offset: Number(ctx.message.offset) });
      if (Number(ctx.message.offset) % 7 === ctx.message.partition)
        await new Promise((resolve) => setTimeout(resolve, 3));
    });
    const consumer = env.consumer({ groupId: env.groupId('g4'), concurrency: partitions, handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('every message', () => outcomes.total === partitions * perPartition);

    const rows = await env.effectsOf(topic);
    for (let p = 0; p < partitions; p++) {
      const expected = Array.from({ length: perPartition }, (_, i) => i);
      expect(calls.filter((c) => c.partition === p).map((c) => c.offset)).toEqual(expected);
      // Commit order (effects.id) follows offset order too.
      expect(rows.filter((r) => r.partition === p).map((r) => r.offset)).toEqual(expected);
    }
    // The partitions really were processed concurrently: their handler calls interleave.
    const firstOfLast = calls.findIndex((c) => c.partition === calls.at(-1)?.partition);
    expect(calls.slice(firstOfLast).some((c) => c.partition !== calls.at(-1)?.partition)).toBe(true);
  });
});
