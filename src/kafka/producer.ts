import { Partitioners, type Admin, type Message, type Producer, type TopicMessages } from 'kafkajs';

import type { KafkaClient, KafkaProducerSettings } from './client.js';

/** One record to publish, as the outbox stores it. */
export interface OutgoingRecord {
  readonly topic: string;
  /** Pinned partition; null lets the partitioner choose by key. */
  readonly partition: number | null;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: Record<string, Buffer | Buffer[]>;
}

/**
 * A connected producer and admin client for the outbox relay. Only this class talks to the client
 * library; the relay decides what is sent, when and what a failure means.
 */
export class RecordProducer {
  private constructor(
    private readonly producer: Producer,
    private readonly admin: Admin,
  ) {}

  /** Connects both clients; on failure neither is left connected. */
  static async connect(
    kafka: KafkaClient,
    settings: KafkaProducerSettings,
    race: <T>(work: Promise<T>) => Promise<T>,
  ): Promise<RecordProducer> {
    const producer = kafka.producer({
      // A typo in a topic name must not create a topic: the row waits and is parked instead.
      allowAutoTopicCreation: false,
      // The murmur2 partitioner Java clients use, named explicitly: the same partition for a key as
      // the library default, without its "switched default partitioner" warning on every start.
      createPartitioner: Partitioners.DefaultPartitioner,
      ...settings,
      // The broker dedupes the producer's own retries and keeps their order: per (topic, key)
      // order holds even when a request is retried.
      idempotent: true,
      maxInFlightRequests: 1,
    });
    const admin = kafka.admin();
    try {
      await race(Promise.all([producer.connect(), admin.connect()]));
    } catch (error) {
      await Promise.all([producer.disconnect().catch(() => undefined), admin.disconnect().catch(() => undefined)]);
      throw error;
    }
    return new RecordProducer(producer, admin);
  }

  /**
   * Sends records and resolves once every in-sync replica has them (acks -1): only then may the
   * caller count them as sent. Records of one topic keep their order.
   */
  async send(records: readonly OutgoingRecord[]): Promise<void> {
    await this.producer.sendBatch({ acks: -1, topicMessages: byTopic(records) });
  }

  /** The topics the cluster has now. */
  listTopics(): Promise<string[]> {
    return this.admin.listTopics();
  }

  async disconnect(): Promise<void> {
    await Promise.all([
      this.producer.disconnect().catch(() => undefined),
      this.admin.disconnect().catch(() => undefined),
    ]);
  }
}

/** Records grouped per topic, in the order given within each topic. */
function byTopic(records: readonly OutgoingRecord[]): TopicMessages[] {
  const grouped = new Map<string, Message[]>();
  for (const record of records) {
    let messages = grouped.get(record.topic);
    if (messages === undefined) {
      messages = [];
      grouped.set(record.topic, messages);
    }
    messages.push({
      key: record.key,
      value: record.value,
      headers: record.headers,
      ...(record.partition === null ? {} : { partition: record.partition }),
    });
  }
  return [...grouped].map(([topic, messages]) => ({ topic, messages }));
}

/** The Kafka protocol error type (`MESSAGE_TOO_LARGE`, …) somewhere in an error's cause chain. */
export function protocolErrorType(error: unknown): string | undefined {
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 8; depth++) {
    const type = (e as { type?: unknown }).type;
    if (typeof type === 'string') return type;
    e = (e as { cause?: unknown; originalError?: unknown }).cause ?? (e as { originalError?: unknown }).originalError;
  }
  return undefined;
}
