/**
 * The real side of the cross-feature model test: one topic consumed by two group slots (each with
 * `ctx.step` against a payment-provider double and `ctx.publish` to a downstream topic), a relay,
 * a plain reader of the downstream topic, and the queries the checks compare with the model.
 *
 * Crashes are in-process, chosen for speed and kept honest about what they are:
 * - a consumer crash holds one handler attempt inside its transaction (after its step, its effect
 *   row and its publish), terminates the consumer's database sessions (PostgreSQL rolls the
 *   transaction back, as it does when the process dies), then stops and restarts the consumer;
 * - a relay crash holds the relay between the broker's ack and marking the rows sent, stops it
 *   there, so the rows are sent again by the next relay (the window a SIGKILL would hit).
 */
import { randomUUID } from 'node:crypto';

import { drizzle } from 'drizzle-orm/node-postgres';
import type { Consumer, Producer } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';

import {
  createOutboxRelay,
  defineHandler,
  type InboxConsumer,
  type OutboxRelay,
  type PausedPartition,
} from '../../../src/index.js';
import { effects } from '../../support/effects.js';
import type { TestEnvironment } from '../../support/integration.js';
import { callProvider, type PaymentProvider, startPaymentProvider } from '../../support/payment-provider.js';

/** A downstream event as the reader saw it. */
export interface DownstreamEvent {
  readonly messageId: string;
  readonly scope: string;
  readonly id: string;
}

/** One outcome event of a consumer, in the topic generation it was seen in. */
interface Outcome {
  /** Order of arrival, across all consumers of the run. */
  readonly seq: number;
  readonly generation: number;
  readonly partition: number;
  readonly offset: number;
}

export interface DeadLetterEvent {
  readonly groupId: string;
  readonly partition: number;
  readonly offset: string;
  readonly messageId: string | null;
  readonly reason: string;
}

/** Holds one handler attempt (or one relay batch) until released; armed by a crash command. */
class Hold {
  private armed = false;
  private caught: ((value: true) => void) | undefined;
  private release: ((error?: Error) => void) | undefined;

  /** Arms the hold; resolves true when something is held, false after `timeoutMs`. */
  arm(timeoutMs: number): Promise<boolean> {
    this.armed = true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.armed = false;
        this.caught = undefined;
        resolve(false);
      }, timeoutMs);
      this.caught = (value) => {
        clearTimeout(timer);
        resolve(value);
      };
    });
  }

  /** Called at the hold point: waits while armed (once). */
  async point(): Promise<void> {
    if (!this.armed) return;
    this.armed = false;
    const held = new Promise<void>((resolve, reject) => {
      this.release = (error) => (error === undefined ? resolve() : reject(error));
    });
    this.caught?.(true);
    this.caught = undefined;
    await held;
  }

  /** Lets the held work go on (or fail with `error`). */
  free(error?: Error): void {
    this.armed = false;
    const release = this.release;
    this.release = undefined;
    release?.(error);
  }
}

const CONSUMER_SETTINGS = {
  retry: { attempts: 4, initialDelayMs: 20, maxDelayMs: 200 },
  handlerTimeoutMs: 15_000,
  maxMessagesPerTransaction: 10,
} as const;

/** A slot: group A, or group B that may be renamed (to a new group id with `inboxScope` = B). */
export class Slot {
  readonly groups: string[];
  consumer: InboxConsumer | undefined;
  readonly hold = new Hold();
  readonly pool: pg.Pool;
  readonly applicationName: string;

  constructor(
    readonly name: string,
    groupId: string,
    readonly scope: string,
    databaseUrl: string,
  ) {
    this.groups = [groupId];
    this.applicationName = `model-${groupId}`.slice(0, 60);
    this.pool = new pg.Pool({ connectionString: databaseUrl, max: 4, application_name: this.applicationName });
    // Sessions terminated by a crash command surface here on idle clients.
    this.pool.on('error', () => undefined);
  }

  get groupId(): string {
    return this.groups.at(-1) ?? '';
  }

  /** Whether the consumer was renamed (its group differs from its scope). */
  get renamed(): boolean {
    return this.groupId !== this.scope;
  }
}

/**
 * Waits until the broker answers for every partition of a new topic: right after createTopics a
 * fetch or a join can still meet "This server does not host this topic-partition".
 */
async function waitForTopic(env: TestEnvironment, topic: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const offsets = await env.admin.fetchTopicOffsets(topic);
      if (offsets.length > 0) return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    if (Date.now() > deadline) throw new Error(`topic ${topic} has no partitions`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export class ModelSystem {
  readonly slots: Slot[];
  generation = 0;
  private relay: OutboxRelay | undefined;
  private readonly relayHold = new Hold();
  private readonly outcomes = new Map<string, Outcome[]>();
  private outcomeSeq = 0;
  readonly deadLetters: DeadLetterEvent[] = [];
  readonly downstream: DownstreamEvent[] = [];
  private producer: Producer;

  private constructor(
    private readonly env: TestEnvironment,
    readonly topic: string,
    readonly downstreamTopic: string,
    readonly provider: PaymentProvider,
    private readonly reader: Consumer,
    producer: Producer,
    readonly tag: string,
  ) {
    this.producer = producer;
    const a = `billing-${tag}`;
    const b = `shipping-${tag}`;
    this.slots = [new Slot('A', a, a, env.databaseUrl), new Slot('B', b, b, env.databaseUrl)];
  }

  static async create(env: TestEnvironment, partitions: number): Promise<ModelSystem> {
    const tag = randomUUID().slice(0, 8);
    const topic = `model-${tag}`;
    const downstreamTopic = `model-out-${tag}`;
    await env.admin.createTopics({
      topics: [
        { topic, numPartitions: partitions },
        { topic: downstreamTopic, numPartitions: 1 },
      ],
      waitForLeaders: true,
    });
    await waitForTopic(env, topic);
    await waitForTopic(env, downstreamTopic);
    const provider = await startPaymentProvider();
    const producer = env.kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
    const reader = env.kafka.consumer({ groupId: `model-reader-${tag}`, maxWaitTimeInMs: 100 });
    const system = new ModelSystem(env, topic, downstreamTopic, provider, reader, producer, tag);
    await reader.connect();
    await reader.subscribe({ topic: downstreamTopic, fromBeginning: true });
    await reader.run({
      eachMessage: async ({ message }) => {
        const header = message.headers?.['message-id'];
        const value = JSON.parse(message.value?.toString('utf8') ?? '{}') as { scope?: string; id?: string };
        system.downstream.push({
          messageId: header === undefined ? '' : String(header),
          scope: String(value.scope),
          id: String(value.id),
        });
        return Promise.resolve();
      },
    });
    return system;
  }

  // ----- producing ---------------------------------------------------------------------------

  async produce(records: readonly { partition: number; id: string; value: string }[]): Promise<void> {
    if (records.length === 0) return;
    await this.producer.send({
      topic: this.topic,
      messages: records.map((r) => ({ partition: r.partition, value: r.value, headers: { 'message-id': r.id } })),
    });
  }

  // ----- consumers ---------------------------------------------------------------------------

  private handlerFor(slot: Slot) {
    const { scope } = slot;
    const providerUrl = this.provider.url;
    const downstreamTopic = this.downstreamTopic;
    return defineHandler({
      topic: this.topic,
      async handle(_event, ctx) {
        const id = ctx.messageId;
        const charge = await ctx.step('charge', ({ idempotencyKey, signal }) =>
          callProvider<{ id: string }>(
            providerUrl,
            '/charges',
            { amountCents: 100, scope, id },
            { idempotencyKey, signal },
          ),
        );
        await ctx.tx.insert(effects).values({
          messageId: id,
          topic: ctx.message.topic,
          partition: ctx.message.partition,
          offset: Number(ctx.message.offset),
          consumer: scope,
          payload: { charge: charge.id },
        });
        await ctx.publish({ topic: downstreamTopic, key: id, value: { scope, id } });
        // A crash command holds the attempt here: everything is done but the commit.
        await slot.hold.point();
      },
    });
  }

  async start(slot: Slot): Promise<void> {
    const groupId = slot.groupId;
    const consumer = this.env.consumer({
      groupId,
      ...(slot.renamed ? { inboxScope: slot.scope } : {}),
      db: drizzle(slot.pool),
      handlers: [this.handlerFor(slot)],
      ...CONSUMER_SETTINGS,
    });
    const seen = (partition: number, offset: string): void => {
      const list = this.outcomes.get(groupId) ?? [];
      list.push({ seq: this.outcomeSeq++, generation: this.generation, partition, offset: Number(offset) });
      this.outcomes.set(groupId, list);
    };
    consumer.on('message:processed', (e) => seen(e.partition, e.offset));
    consumer.on('message:duplicate', (e) => seen(e.partition, e.offset));
    consumer.on('message:dead-lettered', (e) => {
      seen(e.partition, e.offset);
      this.deadLetters.push({
        groupId,
        partition: e.partition,
        offset: e.offset,
        messageId: e.messageId,
        reason: e.reason,
      });
    });
    slot.consumer = consumer;
    await consumer.start();
  }

  async stop(slot: Slot): Promise<void> {
    const consumer = slot.consumer;
    slot.consumer = undefined;
    await consumer?.stop();
  }

  /** A mark: outcomes that arrive from now on come after it. */
  outcomeMark(): number {
    return this.outcomeSeq;
  }

  /** Offsets of the current generation that have an outcome for `groupId` (after `since`), per partition. */
  outcomeOffsets(groupId: string, since = 0): Map<number, Set<number>> {
    const result = new Map<number, Set<number>>();
    for (const o of this.outcomes.get(groupId) ?? []) {
      if (o.generation !== this.generation || o.seq < since) continue;
      const set = result.get(o.partition) ?? new Set<number>();
      set.add(o.offset);
      result.set(o.partition, set);
    }
    return result;
  }

  paused(slot: Slot): readonly PausedPartition[] {
    return slot.consumer?.paused() ?? [];
  }

  /**
   * The consumer crash: holds the next attempt before its commit, runs `work` (which gives it
   * something to do), terminates the slot's database sessions while the attempt is held, then
   * stops and restarts the consumer. Returns whether an attempt was caught in the window.
   */
  async crashConsumer(slot: Slot, work: () => Promise<void>): Promise<boolean> {
    const caught = slot.hold.arm(10_000);
    await work();
    const held = await caught;
    if (held) {
      await this.env.pool.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
        [slot.applicationName],
      );
    }
    slot.hold.free();
    await this.stop(slot);
    await this.start(slot);
    return held;
  }

  // ----- relay -------------------------------------------------------------------------------

  get relayRunning(): boolean {
    return this.relay !== undefined;
  }

  async startRelay(): Promise<void> {
    const relay = createOutboxRelay({
      db: this.env.pool,
      kafka: this.env.kafka,
      logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'silent' }),
      pollIntervalMs: 200,
      standbyPollMs: 200,
      initialBackoffMs: 50,
      maxBackoffMs: 500,
      afterSend: () => this.relayHold.point(),
    });
    this.relay = relay;
    await relay.start();
  }

  async stopRelay(): Promise<void> {
    const relay = this.relay;
    this.relay = undefined;
    await relay?.stop();
  }

  /**
   * The relay crash: holds the relay after the broker acknowledged a batch and before the rows are
   * marked sent (while `work` gives it something to send), then stops it there.
   */
  async crashRelay(work: () => Promise<void>, expectSend: boolean): Promise<boolean> {
    const caught = this.relayHold.arm(expectSend ? 8_000 : 500);
    await work();
    const held = await caught;
    const relay = this.relay;
    this.relay = undefined;
    // Stopped first, then the held batch fails: nothing marks it sent.
    const stopping = relay?.stop();
    this.relayHold.free(new Error('the relay crashed between the ack and the mark'));
    await stopping;
    return held;
  }

  async waitForOutboxDrained(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { rows } = await this.env.pool.query<{ n: string }>(
        "SELECT count(*) AS n FROM oncely.outbox WHERE status = 'pending' AND topic = $1",
        [this.downstreamTopic],
      );
      const pending = Number(rows[0]?.n ?? 0);
      if (pending === 0 || Date.now() > deadline) return pending;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  // ----- the topic ---------------------------------------------------------------------------

  async recreateTopic(partitions: number): Promise<void> {
    await this.env.admin.deleteTopics({ topics: [this.topic], timeout: 15_000 });
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const created = await this.env.admin.createTopics({
          topics: [{ topic: this.topic, numPartitions: partitions }],
          waitForLeaders: true,
        });
        if (created) break;
      } catch (error) {
        // The deletion is still going on: the broker refuses the name for a moment.
        if (Date.now() > deadline) throw error;
      }
      if (Date.now() > deadline) throw new Error(`topic ${this.topic} could not be re-created`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await waitForTopic(this.env, this.topic);
    this.generation++;
    // A fresh producer: the old one's metadata describes the deleted topic.
    await this.producer.disconnect();
    this.producer = this.env.kafka.producer({ allowAutoTopicCreation: false });
    await this.producer.connect();
  }

  // ----- what the database holds -------------------------------------------------------------

  /** Effect rows per scope and message id. */
  async ledger(): Promise<Map<string, number>> {
    const { rows } = await this.env.pool.query<{ consumer: string; message_id: string; n: string }>(
      'SELECT consumer, message_id, count(*) AS n FROM effects WHERE topic = $1 GROUP BY 1, 2',
      [this.topic],
    );
    return new Map(rows.map((r) => [`${r.consumer}|${r.message_id}`, Number(r.n)]));
  }

  /** Inbox rows of a scope: id → status. */
  async inbox(scope: string): Promise<Map<string, string>> {
    const { rows } = await this.env.pool.query<{ message_id: string; status: string }>(
      'SELECT message_id, status FROM oncely.inbox WHERE consumer_group = $1',
      [scope],
    );
    return new Map(rows.map((r) => [r.message_id, r.status]));
  }

  /** Dead letters stored for any group or scope of this run. */
  async storedDeadLetters(): Promise<string[]> {
    const names = [...new Set(this.slots.flatMap((s) => [...s.groups, s.scope]))];
    const { rows } = await this.env.pool.query<{
      consumer_group: string;
      message_id: string | null;
      partition: number;
      offset: string;
      reason: string;
      message: string | null;
    }>(
      `SELECT consumer_group, message_id, partition, "offset", reason, coalesce(error->'causes'->>0, error->>'message') AS message
         FROM oncely.dead_letters WHERE consumer_group = ANY($1) ORDER BY id`,
      [names],
    );
    const ledger = await this.ledger();
    return rows.map(
      (r) =>
        `${r.consumer_group} ${r.partition}/${r.offset} id ${r.message_id}: ${r.reason} ` +
        `(${(r.message ?? '').slice(0, 160)}); effect rows of ${r.message_id} in this scope: ` +
        `${ledger.get(`${r.consumer_group}|${r.message_id ?? ''}`) ?? 0}`,
    );
  }

  /** A group's purge bound per partition: the lower of Kafka's committed offset and the database resume point. */
  async purgeBounds(groupId: string): Promise<Map<number, number>> {
    const { rows } = await this.env.pool.query<{ partition: number; next_offset: string }>(
      'SELECT partition, next_offset FROM oncely.offsets WHERE consumer_group = $1 AND topic = $2',
      [groupId, this.topic],
    );
    const [committed] = await this.env.admin.fetchOffsets({ groupId, topics: [this.topic] });
    const kafka = new Map((committed?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
    return new Map(
      rows.map((r) => [r.partition, Math.max(0, Math.min(kafka.get(r.partition) ?? 0, Number(r.next_offset)))]),
    );
  }

  async close(): Promise<void> {
    for (const slot of this.slots) slot.hold.free();
    this.relayHold.free(new Error('closing'));
    const errors: unknown[] = [];
    const attempt = async (work: () => Promise<unknown>): Promise<void> => {
      try {
        await work();
      } catch (error) {
        errors.push(error);
      }
    };
    await Promise.all(this.slots.map((slot) => attempt(() => this.stop(slot))));
    await attempt(() => this.stopRelay());
    await attempt(() => this.reader.disconnect());
    await attempt(() => this.producer.disconnect());
    await attempt(() => this.provider.close());
    await Promise.all(this.slots.map((slot) => attempt(() => slot.pool.end())));
    await attempt(() => this.env.admin.deleteTopics({ topics: [this.topic, this.downstreamTopic] }));
    if (errors.length > 0) throw errors[0];
  }
}
