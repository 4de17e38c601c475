import type pg from 'pg';

export const DEAD_LETTER_REASONS = ['invalid_payload', 'invalid_message_id', 'key_reuse', 'handler_failed'] as const;
export type DeadLetterReason = (typeof DEAD_LETTER_REASONS)[number];

/** A header as stored in `dead_letters.headers`: lossless, in record order. */
export interface StoredHeader {
  readonly key: string;
  readonly value: string;
  readonly encoding: 'utf8' | 'base64';
  /** Present when the key itself could not be stored as text (it held NUL). */
  readonly keyEncoding?: 'base64';
}

/** The error stored in `dead_letters.error`. */
export interface StoredError {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
  /** Cut to 8 KB. */
  readonly stack?: string;
  /** Validation issues, when the payload did not match the handler's schema. */
  readonly issues?: readonly unknown[];
  readonly [detail: string]: unknown;
}

export interface DeadLetterRecord {
  readonly groupId: string;
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly messageId: string | null;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: readonly StoredHeader[];
  readonly reason: DeadLetterReason;
  readonly error: StoredError;
  readonly attempts: number;
  /** The record's Kafka timestamp. */
  readonly recordTimestamp: Date;
}

/**
 * Stores a dead letter. One row per record read: when the same record (same group and
 * coordinates) was dead-lettered before — its outcome committed, then the record redelivered
 * because the offset commit was lost — nothing is inserted and `undefined` is returned.
 */
export async function insertDeadLetter(client: pg.ClientBase, record: DeadLetterRecord): Promise<string | undefined> {
  const { rows } = await client.query<{ id: string }>({
    name: 'oncely_insert_dead_letter_v2',
    text: `
INSERT INTO oncely.dead_letters
  (consumer_group, topic, partition, "offset", message_id, key, value, headers, reason, error, attempts, record_timestamp)
VALUES ($1, $2, $3, $4::bigint, $5, $6, $7, $8::jsonb, $9, $10::jsonb, $11, $12)
ON CONFLICT (consumer_group, topic, partition, "offset") DO NOTHING
RETURNING id`,
    values: [
      record.groupId,
      record.topic,
      record.partition,
      record.offset,
      record.messageId,
      record.key,
      record.value,
      storableJson(record.headers),
      record.reason,
      storableJson(record.error),
      record.attempts,
      record.recordTimestamp,
    ],
  });
  return rows[0]?.id;
}

/**
 * JSON text that jsonb accepts whatever the input: jsonb rejects the NUL character and lone UTF-16
 * surrogates (both reach us in header names, zod issue paths and error messages quoting bad input).
 * In keys and strings alike, lone surrogates become U+FFFD and NUL is dropped, so that storing a
 * dead letter can never fail on its content.
 */
export function storableJson(value: unknown): string {
  return JSON.stringify(value, function (this: unknown, _key, item: unknown) {
    if (typeof item === 'string') return storableText(item);
    if (typeof item === 'bigint') return item.toString();
    if (item !== null && typeof item === 'object' && !Array.isArray(item) && !(item instanceof Date)) {
      const entries = Object.entries(item);
      if (entries.some(([key]) => storableText(key) !== key)) {
        return Object.fromEntries(entries.map(([key, inner]) => [storableText(key), inner]));
      }
    }
    return item;
  });
}

function storableText(text: string): string {
  const wellFormed = text.isWellFormed() ? text : text.toWellFormed();
  return wellFormed.includes('\u0000') ? wellFormed.replaceAll('\u0000', '') : wellFormed;
}
