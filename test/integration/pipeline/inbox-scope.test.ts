import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** A pino logger whose lines the test can read. */
function capturedLogger() {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino(
    { level: 'warn' },
    { write: (line: string) => lines.push(JSON.parse(line) as { level: number; msg: string }) },
  );
  return { logger, lines };
}

describe('payment footguns: renamed groups and messages without ids', () => {
  it('G1: a renamed group with inboxScope set to the old group applies nothing the old group applied, and warns without it', async () => {
    const topic = await env.createTopic('renamed');
    const oldGroup = env.groupId('ledger');
    await env.produce(topic, [jsonMessage('r-0', {}), jsonMessage('r-1', {}), jsonMessage('r-2', {})]);
    const old = env.consumer({ groupId: oldGroup, handlers: [effectHandler(topic)] });
    const oldOutcomes = recordOutcomes(old);
    await old.start();
    await waitFor('three processed', () => oldOutcomes.processed.length === 3);
    await old.stop();

    const renamed = env.consumer({ groupId: `${oldGroup}-v2`, inboxScope: oldGroup, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(renamed);
    await renamed.start();
    await waitFor('three outcomes', () => outcomes.total === 3);
    expect(outcomes.duplicates.map((d) => d.duplicateClass)).toEqual(['redelivery', 'redelivery', 'redelivery']);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['r-0', 'r-1', 'r-2']);
    await renamed.stop();

    // Without inboxScope, the new group is told at start what is about to happen.
    const { logger, lines } = capturedLogger();
    const careless = env.consumer({ groupId: `${oldGroup}-v3`, handlers: [effectHandler(topic)], logger });
    await careless.start();
    expect(lines.find((l) => l.msg.includes('set inboxScope'))?.msg).toContain(`${oldGroup}`);
  });

  it('G1: warns once per partition that messages without an id are deduplicated by coordinates only', async () => {
    const topic = await env.createTopic('no-ids', 2);
    await env.produce(topic, [
      { value: '{}', partition: 0 },
      { value: '{}', partition: 0 },
      { value: '{}', partition: 1 },
      { value: '{}', partition: 1 },
    ]);
    const { logger, lines } = capturedLogger();
    const consumer = env.consumer({ groupId: env.groupId('no-ids'), handlers: [effectHandler(topic)], logger });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('four processed', () => outcomes.processed.length === 4);
    expect(lines.filter((l) => l.msg.includes('deduplicated by Kafka coordinates only'))).toHaveLength(2);
  });
});
