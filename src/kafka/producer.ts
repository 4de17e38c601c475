import {
  Partitioners,
  type Admin,
  type ICustomPartitioner,
  type Message,
  type PartitionMetadata,
  type Producer,
  type RecordMetadata,
  type TopicMessages,
} from 'kafkajs';

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
/** How long a topic's partition list is trusted before it is read again (to place keyed records). */
const PARTITIONS_TTL_MS = 10_000;

export class RecordProducer {
  readonly #partitions = new Map<string, { list: PartitionMetadata[]; at: number }>();

  private constructor(
    private readonly producer: Producer,
    private readonly admin: Admin,
    private readonly partitioner: ReturnType<ICustomPartitioner>,
  ) {}

  /** Connects both clients; on failure neither is left connected. */
  static async connect(
    kafka: KafkaClient,
    settings: KafkaProducerSettings,
    race: <T>(work: Promise<T>) => Promise<T>,
  ): Promise<RecordProducer> {
    // The murmur2 partitioner Java clients use, named explicitly: the same partition for a key as
    // the library default, without its "switched default partitioner" warning on every start.
    const createPartitioner = settings.createPartitioner ?? Partitioners.DefaultPartitioner;
    const producer = kafka.producer({
      // A typo in a topic name must not create a topic: the row waits and is parked instead.
      allowAutoTopicCreation: false,
      ...settings,
      createPartitioner,
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
    return new RecordProducer(producer, admin, createPartitioner());
  }

  /**
   * Sends records and tells, per record, whether every in-sync replica has it (acks -1, at least
   * `min.insync.replicas` of them): only such a record may the caller count as sent. Records of
   * one partition keep their order and are acknowledged or not together. Rejects when the send
   * failed as a whole (nothing counts as acknowledged then, though some partitions may have it).
   *
   * Each record's partition is chosen here, before the send, because the client can resolve a
   * send that spans several leaders without writing every partition: when a leader moves to a
   * broker that already answered for other partitions, its retry skips that broker (kafkajs issue
   * #1303). Only a partition named without error in the answer counts as acknowledged.
   */
  async send(records: readonly OutgoingRecord[]): Promise<boolean[]> {
    const pinned = await this.pinPartitions(records);
    const answers = await this.producer.sendBatch({ acks: -1, topicMessages: byTopic(pinned) });
    const acknowledged = acknowledgedPartitions(answers);
    return pinned.map((record) => acknowledged.has(partitionKey(record.topic, record.partition ?? -1)));
  }

  /** Every record with its partition: the one given, or the partitioner's choice for its key. */
  private async pinPartitions(records: readonly OutgoingRecord[]): Promise<OutgoingRecord[]> {
    const pinned: OutgoingRecord[] = [];
    for (const record of records) {
      if (record.partition !== null) {
        pinned.push(record);
        continue;
      }
      const partitionMetadata = await this.partitionsOf(record.topic);
      // A topic without partitions is refused by the send itself (the caller checks topics first).
      if (partitionMetadata.length === 0) {
        pinned.push(record);
        continue;
      }
      const partition = this.partitioner({
        topic: record.topic,
        partitionMetadata,
        message: { key: record.key, value: record.value },
      });
      pinned.push({ ...record, partition });
    }
    return pinned;
  }

  private async partitionsOf(topic: string): Promise<PartitionMetadata[]> {
    const known = this.#partitions.get(topic);
    if (known !== undefined && Date.now() - known.at < PARTITIONS_TTL_MS) return known.list;
    const { topics } = await this.admin.fetchTopicMetadata({ topics: [topic] });
    const list = topics[0]?.partitions ?? [];
    this.#partitions.set(topic, { list, at: Date.now() });
    return list;
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

function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}

/** The partitions the answer names without an error: their records are on every in-sync replica. */
function acknowledgedPartitions(answers: readonly RecordMetadata[]): Set<string> {
  const acknowledged = new Set<string>();
  for (const answer of answers) {
    if (answer.errorCode === 0) acknowledged.add(partitionKey(answer.topicName, answer.partition));
  }
  return acknowledged;
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
