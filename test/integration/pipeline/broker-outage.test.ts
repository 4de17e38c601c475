import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { Kafka, logLevel } from 'kafkajs';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { type DevServices, startDevServices } from '../../../src/dev/index.js';
import { PAYMENTS_DDL } from '../../../examples/payments/schema.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

describe('a broker that restarts', () => {
  let services: DevServices;
  beforeAll(async () => {
    // A broker of this file's own (local, so it can be restarted and taken away); the suite's database.
    services = await startDevServices({
      env: { DATABASE_URL: inject('databaseUrl') },
      logger: pino({ level: 'silent' }),
    });
  });
  afterAll(() => services.stop());

  async function createTopic(kafka: Kafka, topic: string): Promise<void> {
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
    await admin.disconnect();
  }

  it('G5: start() rides out a broker restart even when the Kafka client itself does not retry', async () => {
    // No retries inside kafkajs: getting through the outage is up to oncely's start().
    const kafka = new Kafka({ brokers: services.kafka.brokers, logLevel: logLevel.NOTHING, retry: { retries: 0 } });
    await createTopic(kafka, 'restart-start');
    const consumer = env.consumer({
      kafka,
      groupId: env.groupId('restart'),
      handlers: [effectHandler('restart-start')],
    });
    const restarting = services.kafka.restart();
    await new Promise((resolve) => setTimeout(resolve, 300)); // the broker is going down
    await consumer.start();
    await restarting;
    await consumer.stop();
  }, 120_000);

  it('G5: restarts the Kafka consumer itself when kafkajs crashes and will not restart it', async () => {
    const kafka = new Kafka({ brokers: services.kafka.brokers, logLevel: logLevel.NOTHING, retry: { retries: 0 } });
    const topic = 'restart-recover';
    await createTopic(kafka, topic);
    const consumer = env.consumer({
      kafka,
      groupId: env.groupId('recover'),
      handlers: [effectHandler(topic)],
      // kafkajs gives up at the first broker error and does not restart: the crash oncely must survive.
      consumer: { retry: { retries: 0, restartOnFailure: () => Promise.resolve(false) } },
    });
    const crashes: boolean[] = [];
    consumer.on('consumer:crash', (e) => void crashes.push(e.restart));
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await services.kafka.restart();
    await waitFor('kafkajs to crash without restarting', () => crashes.includes(false));

    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, messages: [jsonMessage('after-crash', {})] });
    await producer.disconnect();
    await waitFor('the message, consumed by the restarted consumer', () => outcomes.total === 1);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['after-crash']);
    // A broker restart, kafkajs's crash, oncely's backoff and a new join, each waited for up to 60 s:
    // on a loaded machine their sum passed 120 s.
  }, 240_000);

  it('G5: consumes once the broker is back when started during its restart', async () => {
    const kafka = new Kafka({ brokers: services.kafka.brokers, logLevel: logLevel.NOTHING });
    const topic = 'restart-consume';
    await createTopic(kafka, topic);
    const consumer = env.consumer({ kafka, groupId: env.groupId('restart2'), handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    const restarting = services.kafka.restart();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await consumer.start();
    await restarting;
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, messages: [jsonMessage('after-restart', {})] });
    await producer.disconnect();
    await waitFor('the message', () => outcomes.total === 1);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['after-restart']);
  }, 120_000);
});

describe('a broker that goes away', () => {
  it('G5: stops gracefully when the broker is gone, and a handleSignals process ends by its signal, not a crash', async () => {
    // A broker of this test's own (local, so it can be taken away); the suite's database.
    const services = await startDevServices({
      env: { DATABASE_URL: inject('databaseUrl') },
      logger: pino({ level: 'silent' }),
    });
    const topic = 'outage';
    // Few retries: the broker will not come back, and the test need not wait for kafkajs to give up.
    const kafka = new Kafka({
      brokers: services.kafka.brokers,
      logLevel: logLevel.NOTHING,
      retry: { retries: 1, initialRetryTime: 100 },
    });
    let child: ReturnType<typeof spawn> | undefined;
    try {
      const admin = kafka.admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
      await admin.disconnect();
      const producer = kafka.producer();
      await producer.connect();
      await producer.send({ topic, messages: [jsonMessage('before', {})] });
      await producer.disconnect();

      const consumer = env.consumer({ kafka, groupId: env.groupId('outage'), handlers: [effectHandler(topic)] });
      const outcomes = recordOutcomes(consumer);
      await consumer.start();
      await waitFor('the first outcome', () => outcomes.total === 1);

      await env.pool.query(PAYMENTS_DDL);
      child = spawn(
        process.execPath,
        ['--import', 'tsx', fileURLToPath(new URL('../../../examples/payments/consumer.ts', import.meta.url))],
        {
          env: {
            ...process.env,
            KAFKA_BROKERS: services.kafka.brokers.join(','),
            DATABASE_URL: env.databaseUrl,
            TOPIC: topic,
            GROUP_ID: env.groupId('outage-signals'),
            ONCELY_LOG_LEVEL: 'silent',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      const started = new Promise<void>((resolve) =>
        child?.stdout?.on('data', (d: Buffer) => d.toString().includes('started') && resolve()),
      );
      await started;

      await services.stop(); // the broker goes away

      const stopped = Date.now();
      await consumer.stop(); // must not throw
      expect(Date.now() - stopped).toBeLessThan(60_000);
      const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child?.once('exit', (code, signal) => resolve({ code, signal })),
      );
      child.kill('SIGTERM');
      expect(await exit).toEqual({ code: null, signal: 'SIGTERM' });
    } finally {
      child?.kill('SIGKILL');
      await services.stop();
    }
  }, 150_000);
});
