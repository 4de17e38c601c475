import { describe, expect, it } from 'vitest';

import { startDevServices } from '../../../src/dev/index.js';
import { hasErrorCode } from '../../../src/errors.js';

async function configErrorOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!hasErrorCode(error, 'ONCELY_CONFIG')) throw new Error(`expected ONCELY_CONFIG, got ${String(error)}`);
  return error.message;
}

// These options are checked before anything is probed or started.
describe('startDevServices options', () => {
  it('refuses a Kafka version that is not x.y.z, naming the option', async () => {
    expect(await configErrorOf(startDevServices({ kafka: { version: '3.9.1</version>' } }))).toContain(
      'Invalid option `kafka.version`',
    );
  });

  it('refuses a PostgreSQL image tag Docker would not accept, naming the option', async () => {
    expect(await configErrorOf(startDevServices({ postgres: { version: '15 alpine' } }))).toContain(
      'Invalid option `postgres.version`',
    );
  });

  it('refuses broker properties that oncely manages itself', async () => {
    expect(
      await configErrorOf(startDevServices({ kafka: { brokerProperties: { listeners: 'PLAINTEXT://:9092' } } })),
    ).toContain('"listeners" is managed by startDevServices()');
  });

  it('refuses a broker count other than 1 or 3, naming the option', async () => {
    expect(await configErrorOf(startDevServices({ brokers: 2 as 3 }))).toContain('Invalid option `brokers`');
  });

  it('refuses a cluster when KAFKA_BROKERS names a broker to use as it is', async () => {
    expect(await configErrorOf(startDevServices({ brokers: 3, env: { KAFKA_BROKERS: '127.0.0.1:9092' } }))).toContain(
      'KAFKA_BROKERS is set',
    );
  });

  it('refuses a fixed Kafka port for a cluster (each node picks its own)', async () => {
    expect(await configErrorOf(startDevServices({ brokers: 3, env: {}, kafka: { port: 29092 } }))).toContain(
      'Invalid option `kafka.port`',
    );
  });
});
