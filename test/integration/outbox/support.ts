import { randomUUID } from 'node:crypto';

import type { Kafka } from 'kafkajs';
import { pino } from 'pino';
import { afterEach } from 'vitest';

import { createOutboxRelay, type OutboxRelay, type OutboxRelayOptions } from '../../../src/index.js';

export interface Received {
  readonly partition: number;
  readonly offset: string;
  readonly key: string | null;
  readonly value: string | null;
  readonly headers: Record<string, string>;
}

/** Reads a topic from the beginning with a plain kafkajs consumer until `done(received)` holds. */
export async function readTopic(
  kafka: Kafka,
  topic: string,
  done: (received: readonly Received[]) => boolean,
  timeoutMs = 30_000,
): Promise<Received[]> {
  const received: Received[] = [];
  const reader = kafka.consumer({ groupId: `reader-${randomUUID().slice(0, 8)}`, maxWaitTimeInMs: 100 });
  await reader.connect();
  try {
    await reader.subscribe({ topic, fromBeginning: true });
    let resolve!: () => void;
    const finished = new Promise<void>((r) => (resolve = r));
    await reader.run({
      eachMessage: async ({ partition, message }) => {
        received.push({
          partition,
          offset: message.offset,
          key: message.key?.toString() ?? null,
          value: message.value?.toString() ?? null,
          headers: Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)])),
        });
        if (done(received)) resolve();
      },
    });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      finished,
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new Error(`read ${received.length} messages from ${topic}; condition not met in ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    return received;
  } finally {
    await reader.disconnect();
  }
}

const relays: OutboxRelay[] = [];
afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()));
});

/** A relay with quick test settings, stopped after the test. */
export function testRelay(options: OutboxRelayOptions): OutboxRelay {
  const relay = createOutboxRelay({
    logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'silent' }),
    pollIntervalMs: 200,
    standbyPollMs: 200,
    initialBackoffMs: 100,
    maxBackoffMs: 1000,
    ...options,
  });
  relays.push(relay);
  return relay;
}
