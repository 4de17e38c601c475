import { describe, expect, it } from 'vitest';

import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

describe('G6: replaying a range still covered by the inbox changes nothing', () => {
  it('G6: re-consuming a rewound range (Kafka and database offsets both reset) skips every message as a redelivery', async () => {
    const topic = await env.createTopic('g6-replay', 2);
    const groupId = env.groupId('g6');
    await env.produce(
      topic,
      Array.from({ length: 10 }, (_, i) => jsonMessage(`r-${i}`, { i }, 0)),
    );
    await env.produce(
      topic,
      Array.from({ length: 10 }, (_, i) => jsonMessage(`s-${i}`, { i }, 1)),
    );
    const first = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const firstOutcomes = recordOutcomes(first);
    await first.start();
    await waitFor('20 outcomes', () => firstOutcomes.total === 20);
    await first.stop();
    const before = await env.effectsOf(topic);

    // Rewind the group to the start of the topic in both stores, as a replay does.
    await env.rewind(groupId, topic);

    const replay = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const replayed = recordOutcomes(replay);
    await replay.start();
    await waitFor('20 replayed outcomes', () => replayed.total === 20);

    expect(replayed.processed).toEqual([]);
    expect(replayed.deadLettered).toEqual([]);
    expect(new Set(replayed.duplicates.map((d) => d.duplicateClass))).toEqual(new Set(['redelivery']));
    expect(await env.effectsOf(topic)).toEqual(before);
  });
});
