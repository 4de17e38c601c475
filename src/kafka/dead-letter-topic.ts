import type { Kafka } from 'kafkajs';

import { OncelyError } from '../errors.js';
import { MESSAGE_ID_HEADER } from './message-identity.js';
import type { ConsumedRecord } from './runner.js';

/** A dead letter as published to the dead-letter topic. */
export interface DeadLetterMessage {
  readonly record: ConsumedRecord;
  readonly groupId: string;
  readonly messageId: string | null;
  readonly reason: string;
  /** Stored error (JSON-safe, stack already cut to 8 KB). */
  readonly error: object;
  readonly attempts: number;
}

/** A dead letter as a Kafka record of the dead-letter topic (sent through the outbox). */
export interface DeadLetterTopicRecord {
  readonly topic: string;
  readonly partition: number;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: Record<string, string | Buffer | (string | Buffer)[]>;
}

export interface DeadLetterTopic {
  /** The dead-letter topic of a source topic. */
  topicFor(sourceTopic: string): string;
  /** Checks that the dead-letter topics exist with enough partitions. */
  start(): Promise<void>;
  /** The record to publish for a dead letter (the outbox relay sends it after the outcome commits). */
  toRecord(message: DeadLetterMessage): DeadLetterTopicRecord;
  stop(): Promise<void>;
}

/** Headers oncely adds to a dead-lettered record; the record's own headers are kept. */
export const DEAD_LETTER_HEADERS = {
  topic: 'oncely-original-topic',
  partition: 'oncely-original-partition',
  offset: 'oncely-original-offset',
  group: 'oncely-group',
  reason: 'oncely-reason',
  error: 'oncely-error',
  attempts: 'oncely-attempts',
} as const;

/**
 * Dead letters as records of `<topic>.dlq` (or the configured name), on the same partition as the
 * source record, with the original key, value and headers plus where it came from and why. The
 * `message-id` header carries the message's id, so a consumer of the dead-letter topic built with
 * oncely deduplicates re-sends. They are sent by the outbox relay (idempotent producer, acks all).
 */
export function createDeadLetterTopic(
  kafka: Kafka,
  sourceTopics: readonly string[],
  name: (sourceTopic: string) => string,
): DeadLetterTopic {
  return {
    topicFor: name,
    async start() {
      await assertDeadLetterTopics(kafka, sourceTopics, name);
    },
    toRecord({ record, groupId, messageId, reason, error, attempts }) {
      const headers: Record<string, string | Buffer | (string | Buffer)[]> = {};
      for (const [key, value] of Object.entries(record.headers)) {
        if (value !== undefined)
          headers[key] = Array.isArray(value) ? [...(value as (string | Buffer)[])] : (value as string | Buffer);
      }
      if (messageId !== null) headers[MESSAGE_ID_HEADER] = messageId;
      headers[DEAD_LETTER_HEADERS.topic] = record.topic;
      headers[DEAD_LETTER_HEADERS.partition] = String(record.partition);
      headers[DEAD_LETTER_HEADERS.offset] = record.offset;
      headers[DEAD_LETTER_HEADERS.group] = groupId;
      headers[DEAD_LETTER_HEADERS.reason] = reason;
      headers[DEAD_LETTER_HEADERS.error] = JSON.stringify(error);
      headers[DEAD_LETTER_HEADERS.attempts] = String(attempts);
      return { topic: name(record.topic), partition: record.partition, key: record.key, value: record.value, headers };
    },
    async stop() {
      // Nothing held: dead letters are sent by the outbox relay.
    },
  };
}

async function assertDeadLetterTopics(
  kafka: Kafka,
  sourceTopics: readonly string[],
  name: (sourceTopic: string) => string,
): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const wanted = sourceTopics.map((source) => ({ source, target: name(source) }));
    const existing = new Set(await admin.listTopics());
    const missing = wanted.filter((w) => !existing.has(w.target));
    const { topics } = await admin.fetchTopicMetadata({
      topics: [...new Set([...sourceTopics, ...wanted.filter((w) => existing.has(w.target)).map((w) => w.target)])],
    });
    const partitions = new Map(topics.map((t) => [t.name, t.partitions.length]));
    const tooSmall = wanted.filter(
      (w) => existing.has(w.target) && (partitions.get(w.target) ?? 0) < (partitions.get(w.source) ?? 0),
    );
    const problems = [
      ...missing.map(
        (w) =>
          `"${w.target}" does not exist: create it with ${partitions.get(w.source) ?? 'as many'} partitions (as many as "${w.source}")`,
      ),
      ...tooSmall.map(
        (w) =>
          `"${w.target}" has ${partitions.get(w.target)} partitions, fewer than "${w.source}" (${partitions.get(w.source)}): dead letters keep their source partition`,
      ),
    ];
    if (problems.length > 0) {
      throw new OncelyError('ONCELY_TOPIC_NOT_FOUND', `Dead-letter topic problem: ${problems.join('; ')}.`, {
        context: { topics: [...missing, ...tooSmall].map((w) => w.target) },
      });
    }
  } finally {
    await admin.disconnect();
  }
}
