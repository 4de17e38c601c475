/**
 * startDevServices() on a machine without a Docker engine and without KAFKA_BROKERS / DATABASE_URL:
 * a local Apache Kafka from Maven Central jars and a throwaway PostgreSQL cluster. The first run on
 * a machine downloads the Kafka jars with Maven (hence the long hook timeout).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { devServicesInternals } from '../../../src/dev/dev-services.js';
import { startDevServices, type DevServices } from '../../../src/dev/index.js';
import { probeDocker } from '../../../src/dev/probe.js';
import { isProcessAlive } from '../../../src/dev/processes.js';

// These tests are about the local processes; where a Docker engine answers, startDevServices()
// uses containers instead (and testcontainers' reaper does the cleaning up), so they are skipped.
const { dockerAvailable } = await probeDocker();

const logger = pino({ level: process.env['ONCELY_LOG_LEVEL'] ?? 'warn' }, pino.destination(2));

/** Polls `condition` until it holds or `timeoutMs` passes; never a fixed sleep. */
async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function kafkaClient(brokers: string[]): Kafka {
  return new Kafka({ clientId: 'dev-services-test', brokers, logLevel: logLevel.NOTHING });
}

async function createTopic(kafka: Kafka, topic: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    // Subscribing to a topic that does not exist yet throws under KRaft (kafkajs #1563).
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

async function produce(kafka: Kafka, topic: string, value: string): Promise<void> {
  const producer = kafka.producer();
  await producer.connect();
  try {
    await producer.send({ topic, acks: -1, messages: [{ key: 'k', value }] });
  } finally {
    await producer.disconnect();
  }
}

/** Reads the topic from the beginning with a fresh group until one message arrives. */
async function consumeOne(kafka: Kafka, topic: string): Promise<string> {
  const consumer = kafka.consumer({
    groupId: `dev-services-${randomUUID()}`,
    sessionTimeout: 6_000,
    heartbeatInterval: 2_000,
    maxWaitTimeInMs: 100,
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no message on ${topic} within 30 s`)), 30_000);
      void consumer
        .run({
          eachMessage: async ({ message }) => {
            clearTimeout(timer);
            resolve(message.value?.toString() ?? '');
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
}

describe.skipIf(dockerAvailable)('startDevServices without configured servers or Docker', () => {
  let services: DevServices;

  beforeAll(async () => {
    services = await startDevServices({ env: {}, logger });
  }, 300_000);

  afterAll(async () => {
    await services?.stop();
  });

  it('falls back to a local broker and a local PostgreSQL when no Docker engine answers', () => {
    expect(services.kafka.source).toBe('local');
    expect(services.kafka.brokers).toEqual([expect.stringMatching(/^127\.0\.0\.1:\d+$/)]);
    expect(services.postgres.source).toBe('local');
    expect(services.postgres.url).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);
  });

  it('serves a message produced and consumed with kafkajs', async () => {
    const kafka = kafkaClient(services.kafka.brokers);
    const topic = `dev-services-${randomUUID()}`;
    await createTopic(kafka, topic);
    await produce(kafka, topic, 'hello');
    expect(await consumeOne(kafka, topic)).toBe('hello');
  });

  it('answers select 1 on the local PostgreSQL, with fsync on', async () => {
    const client = new pg.Client({ connectionString: services.postgres.url });
    await client.connect();
    try {
      expect((await client.query<{ one: number }>('select 1 as one')).rows).toEqual([{ one: 1 }]);
      expect((await client.query<{ fsync: string }>('show fsync')).rows[0]?.fsync).toBe('on');
    } finally {
      await client.end();
    }
  });

  it('keeps a produced message readable across kafka.restart(), on the same address', async () => {
    const internals = devServicesInternals(services);
    const pidBefore = internals?.kafkaPid();
    const kafka = kafkaClient(services.kafka.brokers);
    const topic = `dev-services-restart-${randomUUID()}`;
    await createTopic(kafka, topic);
    await produce(kafka, topic, 'survives a restart');

    await services.kafka.restart();

    expect(pidBefore).toBeDefined();
    expect(isProcessAlive(pidBefore ?? 0)).toBe(false);
    expect(internals?.kafkaPid()).not.toBe(pidBefore);
    expect(await consumeOne(kafkaClient(services.kafka.brokers), topic)).toBe('survives a restart');
  });

  it('stops every process it started, removes its temporary directories, and shares one stop among callers', async () => {
    const internals = devServicesInternals(services);
    const pids = [internals?.kafkaPid(), internals?.postgresPid(), internals?.watchdogPid()];
    const dirs = internals?.tempDirs ?? [];
    expect(pids.every((pid) => pid !== undefined && isProcessAlive(pid))).toBe(true);
    expect(dirs).toHaveLength(2);

    const first = services.stop();
    const second = services.stop();
    expect(second).toBe(first);
    await first;

    for (const pid of pids) expect(isProcessAlive(pid ?? 0), `pid ${pid}`).toBe(false);
    for (const dir of dirs) expect(existsSync(dir), dir).toBe(false);
    await services.stop(); // idempotent
    await expect(services.kafka.restart()).rejects.toMatchObject({ code: 'ONCELY_DEV_SERVICES_FAILED' });
  });
});

describe.skipIf(dockerAvailable)('startDevServices when the process that started them is SIGKILLed', () => {
  it('stops the broker and PostgreSQL and removes their directories within seconds', async () => {
    const script = fileURLToPath(new URL('./fixtures/start-and-hang.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: fileURLToPath(new URL('../../../', import.meta.url)),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the fixture printed nothing within 120 s')), 120_000);
        createInterface({ input: child.stdout }).once('line', (text) => {
          clearTimeout(timer);
          resolve(text);
        });
        child.once('exit', (code, signal) => reject(new Error(`the fixture exited early (${code ?? signal})`)));
      });
      const started = JSON.parse(line) as {
        kafkaPid: number;
        postgresPid: number;
        watchdogPid: number;
        tempDirs: string[];
      };
      const pids = [started.kafkaPid, started.postgresPid, started.watchdogPid];
      expect(pids.every((pid) => Number.isInteger(pid) && isProcessAlive(pid))).toBe(true);

      const killedAt = Date.now();
      child.kill('SIGKILL');

      const serversGone = await waitFor(
        () => !isProcessAlive(started.kafkaPid) && !isProcessAlive(started.postgresPid),
        10_000,
      );
      expect(serversGone, 'broker and postgres gone within 10 s').toBe(true);
      const cleanedUp = await waitFor(
        () => !isProcessAlive(started.watchdogPid) && started.tempDirs.every((dir) => !existsSync(dir)),
        5_000,
      );
      expect(cleanedUp, 'watchdog exited and directories removed').toBe(true);
      logger.info({ ms: Date.now() - killedAt }, 'cleaned up after SIGKILL');
    } finally {
      child.kill('SIGKILL');
    }
  }, 150_000);
});
