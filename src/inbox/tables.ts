import {
  bigint,
  customType,
  index,
  integer,
  jsonb,
  pgSchema,
  primaryKey,
  text,
  timestamp,
  unique,
} from 'drizzle-orm/pg-core';

import type { DeadLetterReason, StoredError, StoredHeader } from './dead-letters.js';
import type { InboxStatus } from './claims.js';

/**
 * drizzle table objects for oncely's own tables, so applications can query and join them
 * (`db.select().from(inboxTable)`). They mirror `migrations/`; the migrations are the source of
 * truth and a test checks the two agree.
 */
export const oncelySchema = pgSchema('oncely');

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

export const inboxTable = oncelySchema.table(
  'inbox',
  {
    consumerGroup: text('consumer_group').notNull(),
    messageId: text('message_id').notNull(),
    topic: text('topic').notNull(),
    partition: integer('partition').notNull(),
    offset: bigint('offset', { mode: 'bigint' }).notNull(),
    payloadHash: bytea('payload_hash').notNull(),
    status: text('status').$type<InboxStatus>().notNull(),
    attempts: integer('attempts').notNull(),
    firstSeenAt: timestamp('first_seen_at', { withTimezone: true }).notNull(),
    processedAt: timestamp('processed_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.consumerGroup, t.messageId] }), index('inbox_processed_at_idx').on(t.processedAt)],
);

export const offsetsTable = oncelySchema.table(
  'offsets',
  {
    consumerGroup: text('consumer_group').notNull(),
    topic: text('topic').notNull(),
    partition: integer('partition').notNull(),
    nextOffset: bigint('next_offset', { mode: 'bigint' }).notNull(),
    /** The payload fingerprint of the record at `next_offset − 1` (migration 0007); null in older rows. */
    previousPayloadHash: bytea('previous_payload_hash'),
    /** That record's Kafka timestamp, ms since the epoch (migration 0007); null in older rows. */
    previousTimestamp: bigint('previous_timestamp', { mode: 'bigint' }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.consumerGroup, t.topic, t.partition] })],
);

export const deadLettersTable = oncelySchema.table(
  'dead_letters',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    consumerGroup: text('consumer_group').notNull(),
    topic: text('topic').notNull(),
    partition: integer('partition').notNull(),
    offset: bigint('offset', { mode: 'bigint' }).notNull(),
    messageId: text('message_id'),
    key: bytea('key'),
    value: bytea('value'),
    headers: jsonb('headers').$type<StoredHeader[]>().notNull().default([]),
    reason: text('reason').$type<DeadLetterReason>().notNull(),
    error: jsonb('error').$type<StoredError>().notNull(),
    attempts: integer('attempts').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    status: text('status').$type<'open' | 'retried' | 'discarded'>().notNull().default('open'),
    resolvedAt: timestamp('resolved_at', { withTimezone: true }),
    resolution: text('resolution'),
    recordTimestamp: timestamp('record_timestamp', { withTimezone: true }),
  },
  (t) => [
    unique('dead_letters_consumer_group_topic_partition_offset_key').on(
      t.consumerGroup,
      t.topic,
      t.partition,
      t.offset,
    ),
    index('dead_letters_open_idx').on(t.consumerGroup, t.status, t.createdAt),
    index('dead_letters_topic_idx').on(t.consumerGroup, t.topic, t.reason, t.createdAt),
  ],
);

/**
 * `oncely.group_scopes`: the inbox scope each consumer group claims in and the topics it consumes,
 * recorded by the consumer at every start (migration 0009). Replay, purge and retention are asked
 * about a group and key everything by the scope found here.
 */
export const groupScopesTable = oncelySchema.table(
  'group_scopes',
  {
    consumerGroup: text('consumer_group').primaryKey(),
    inboxScope: text('inbox_scope').notNull(),
    topics: text('topics').array().notNull().default([]),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('group_scopes_scope_idx').on(t.inboxScope)],
);
