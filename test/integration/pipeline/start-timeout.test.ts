import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';

import { effectHandler, useTestEnvironment } from '../../support/integration.js';

const env = useTestEnvironment();

describe('start() against a broker that cannot be reached', () => {
  it('rejects within startTimeoutMs with ONCELY_KAFKA_UNREACHABLE, whatever kafkajs’s own retries are', async () => {
    // Nothing listens on port 1; kafkajs's own retry settings stay at their defaults (about 10 s a call).
    const kafka = new Kafka({ clientId: 'oncely-dead-port', brokers: ['127.0.0.1:1'], logLevel: logLevel.NOTHING });
    const consumer = env.consumer({
      kafka,
      groupId: env.groupId('dead-port'),
      handlers: [effectHandler('never-created')],
      startTimeoutMs: 1_500,
    });
    const started = Date.now();
    const failure = await consumer.start().catch((error: unknown) => error);
    const elapsed = Date.now() - started;
    expect(failure).toMatchObject({ name: 'OncelyError', code: 'ONCELY_KAFKA_UNREACHABLE', retriable: true });
    expect((failure as Error).message).toMatch(/within 1500 ms \(startTimeoutMs\)/);
    expect(elapsed).toBeGreaterThanOrEqual(1_400);
    expect(elapsed).toBeLessThan(5_000);
  });

  it('keeps the last kafkajs error as the cause', async () => {
    const kafka = new Kafka({
      clientId: 'oncely-dead-port',
      brokers: ['127.0.0.1:1'],
      logLevel: logLevel.NOTHING,
      retry: { retries: 1, initialRetryTime: 50 },
    });
    const consumer = env.consumer({
      kafka,
      groupId: env.groupId('dead-port'),
      handlers: [effectHandler('never-created')],
      startTimeoutMs: 2_000,
    });
    const failure = await consumer.start().catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'ONCELY_KAFKA_UNREACHABLE' });
    expect(((failure as Error).cause as Error | undefined)?.name).toMatch(/^KafkaJS/);
    expect((failure as Error).message).toMatch(/Check that the brokers/);
  });
});
