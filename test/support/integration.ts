import { randomUUID } from 'node:crypto';

import { drizzle } from 'drizzle-orm/node-postgres';
import { type Admin, type IHeaders, Kafka, logLevel, type Producer } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, inject } from 'vitest';

import {
  createInboxConsumer,
  type InboxConsumer,
  type InboxConsumerOptions,
  type OncelyDatabase,
} from '../../src/index.js';
import { assertNoLeakedConnections } from './connection-leaks.js';
import { type effects } from './effects.js';
import { databaseUrlFor, TEST_CONSUMER_CONFIG, testPool } from './settings.js';

export { effectHandler, effects } from './effects.js';

export interface OutgoingMessage {
  readonly value: string | Buffer | null;
  readonly key?: string;
  readonly headers?: IHeaders;
  readonly partition?: number;
}

export interface TestEnvironment {
  readonly brokers: string[];
  readonly databaseUrl: string;
  readonly pool: pg.Pool;
  readonly db: OncelyDatabase;
  readonly kafka: Kafka;
  readonly admin: Admin;
  /** A fresh topic with a unique name. */
  createTopic(prefix: string, partitions?: number): Promise<string>;
  produce(topic: string, messages: readonly OutgoingMessage[]): Promise<void>;
  /** A unique consumer group id. */
  groupId(prefix: string): string;
  /** A consumer with test defaults; stopped after the test even when the test fails. */
  consumer(
    options: Omit<InboxConsumerOptions, 'kafka' | 'db'> & Partial<Pick<InboxConsumerOptions, 'kafka' | 'db'>>,
  ): InboxConsumer;
  /** Rows of `effects` for a topic, in the order they were applied. */
  effectsOf(topic: string): Promise<(typeof effects.$inferSelect)[]>;
  /** The database's recorded next offsets, per partition. */
  offsetsOf(groupId: string, topic: string): Promise<Map<number, bigint>>;
  /** Rewinds a stopped group to the start of `topic` in both stores, Kafka's and oncely's, as a replay does. */
  rewind(groupId: string, topic: string): Promise<void>;
  /** Kafka's committed offsets, per partition (-1 when none). */
  committedOffsetsOf(groupId: string, topic: string): Promise<Map<number, bigint>>;
}

/**
 * Gives a test file its own database (cloned from the migrated template), a Kafka client, an
 * admin and a producer, all closed after the file; and stops every consumer a test made.
 */
export function useTestEnvironment(
  options: {
    /** The brokers to use, read when the file's tests start; default the run's single broker. */
    brokers?: () => string[];
  } = {},
): TestEnvironment {
  const state: Partial<Mutable<TestEnvironment>> & { producer?: Producer; database?: string; admin?: Admin } = {};
  const consumers: InboxConsumer[] = [];
  let adminClient: pg.Client | undefined;

  beforeAll(async () => {
    const brokers = options.brokers?.() ?? inject('kafkaBrokers');
    const serverUrl = inject('databaseUrl');
    const database = `oncely_test_${randomUUID().replaceAll('-', '').slice(0, 16)}`;
    adminClient = new pg.Client({ connectionString: serverUrl });
    await adminClient.connect();
    await adminClient.query(`CREATE DATABASE ${database} TEMPLATE ${inject('templateDatabase')}`);
    // Recorded at once, so afterAll drops it even when the rest of this setup fails.
    state.database = database;
    const databaseUrl = databaseUrlFor(serverUrl, database);
    const pool = testPool(databaseUrl, 12);
    const kafka = new Kafka({
      clientId: 'oncely-tests',
      brokers,
      logLevel: process.env.KAFKAJS_LOG_LEVEL === 'debug' ? logLevel.DEBUG : logLevel.NOTHING,
    });
    const admin = kafka.admin();
    await admin.connect();
    const producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
    Object.assign(state, { brokers, databaseUrl, pool, db: drizzle(pool), kafka, admin, producer });
  });

  afterEach(async () => {
    await Promise.all(consumers.splice(0).map((c) => c.stop()));
  });

  afterAll(async () => {
    await state.producer?.disconnect();
    await state.admin?.disconnect();
    await state.pool?.end();
    await adminClient?.end();
    try {
      // Before the drop: DROP DATABASE … WITH (FORCE) would close a leaked pool's connections
      // from the server side, and the leak would go unnoticed.
      await assertNoLeakedConnections();
    } finally {
      if (state.database !== undefined) {
        const dropper = new pg.Client({ connectionString: inject('databaseUrl') });
        await dropper.connect();
        try {
          await dropper.query(`DROP DATABASE IF EXISTS ${state.database} WITH (FORCE)`);
        } finally {
          await dropper.end();
        }
      }
    }
  });

  const need = <K extends keyof typeof state>(key: K): NonNullable<(typeof state)[K]> => {
    const value = state[key];
    if (value === undefined || value === null)
      throw new Error(`test environment not ready: ${String(key)} (used outside a test?)`);
    return value;
  };

  return {
    get brokers() {
      return need('brokers');
    },
    get databaseUrl() {
      return need('databaseUrl');
    },
    get pool() {
      return need('pool');
    },
    get db() {
      return need('db');
    },
    get kafka() {
      return need('kafka');
    },
    get admin() {
      return need('admin');
    },
    async createTopic(prefix, partitions = 1) {
      const topic = `${prefix}-${randomUUID().slice(0, 8)}`;
      await createTopicsAndWait(need('admin'), [{ topic, numPartitions: partitions }]);
      return topic;
    },
    async produce(topic, messages) {
      // One send per call keeps the order of `messages` within each partition.
      await need('producer').send({
        topic,
        messages: messages.map((m) => ({
          value: m.value,
          key: m.key ?? null,
          headers: m.headers,
          partition: m.partition ?? 0,
        })),
      });
    },
    groupId: (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`,
    consumer(options) {
      const consumer = createInboxConsumer({
        kafka: need('kafka'),
        db: need('db'),
        logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'silent' }),
        ...options,
        consumer: { ...TEST_CONSUMER_CONFIG, ...options.consumer },
      });
      consumers.push(consumer);
      return consumer;
    },
    async rewind(groupId, topic) {
      await need('admin').resetOffsets({ groupId, topic, earliest: true });
      await need('pool').query('UPDATE oncely.offsets SET next_offset = 0 WHERE consumer_group = $1 AND topic = $2', [
        groupId,
        topic,
      ]);
    },
    async effectsOf(topic) {
      const { rows } = await need('pool').query<{
        id: string;
        message_id: string;
        topic: string;
        partition: number;
        offset: string;
        consumer: string | null;
        payload: unknown;
        applied_at: Date;
      }>('SELECT * FROM effects WHERE topic = $1 ORDER BY id', [topic]);
      return rows.map((r) => ({
        id: Number(r.id),
        messageId: r.message_id,
        topic: r.topic,
        partition: r.partition,
        offset: Number(r.offset),
        consumer: r.consumer,
        payload: r.payload,
        appliedAt: r.applied_at,
      }));
    },
    async offsetsOf(groupId, topic) {
      const { rows } = await need('pool').query<{ partition: number; next_offset: string }>(
        'SELECT partition, next_offset FROM oncely.offsets WHERE consumer_group = $1 AND topic = $2',
        [groupId, topic],
      );
      return new Map(rows.map((r) => [r.partition, BigInt(r.next_offset)]));
    },
    async committedOffsetsOf(groupId, topic) {
      const [entry] = await need('admin').fetchOffsets({ groupId, topics: [topic] });
      return new Map((entry?.partitions ?? []).map((p) => [p.partition, BigInt(p.offset)]));
    },
  };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * Creates topics and waits until their leaders are known. On a cluster, the broker asked for
 * metadata right after the controller created a topic may not know it yet
 * (UNKNOWN_TOPIC_OR_PARTITION): that is waited out too.
 */
export async function createTopicsAndWait(
  admin: Admin,
  topics: { topic: string; numPartitions: number }[],
): Promise<void> {
  try {
    await admin.createTopics({ topics, waitForLeaders: true });
  } catch (error) {
    if ((error as { type?: unknown }).type !== 'UNKNOWN_TOPIC_OR_PARTITION') throw error;
  }
  await waitFor('the new topics to have leaders', async () => {
    const { topics: known } = await admin.fetchTopicMetadata({ topics: topics.map((t) => t.topic) });
    return known.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0));
  });
}

/**
 * Polls `check` until it returns a value other than `undefined`/`false`, or fails after
 * `timeoutMs` with `what` in the message. Never a fixed sleep: fast when the system is fast,
 * patient when the shared machine is slow.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 60_000, intervalMs = 100 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const result = await check();
      if (result !== undefined && result !== false) return result;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Counts of each outcome event, per kind; attach before start(). */
export function recordOutcomes(consumer: InboxConsumer) {
  const outcomes = {
    processed: [] as { offset: string; partition: number; messageId: string | null; attempts: number }[],
    duplicates: [] as { offset: string; partition: number; messageId: string | null; duplicateClass: string }[],
    deadLettered: [] as {
      offset: string;
      partition: number;
      messageId: string | null;
      reason: string;
      attempts: number;
    }[],
    get total() {
      return this.processed.length + this.duplicates.length + this.deadLettered.length;
    },
  };
  consumer.on('message:processed', (e) => {
    outcomes.processed.push({ offset: e.offset, partition: e.partition, messageId: e.messageId, attempts: e.attempts });
  });
  consumer.on('message:duplicate', (e) => {
    outcomes.duplicates.push({
      offset: e.offset,
      partition: e.partition,
      messageId: e.messageId,
      duplicateClass: e.duplicateClass,
    });
  });
  consumer.on('message:dead-lettered', (e) => {
    outcomes.deadLettered.push({
      offset: e.offset,
      partition: e.partition,
      messageId: e.messageId,
      reason: e.reason,
      attempts: e.attempts,
    });
  });
  return outcomes;
}

/** JSON value + `message-id` header, the common shape of test messages. */
export function jsonMessage(id: string, body: unknown, partition = 0): OutgoingMessage {
  return { value: JSON.stringify(body), headers: { 'message-id': id }, partition };
}
