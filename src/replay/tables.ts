import { bigint, boolean, index, integer, jsonb, primaryKey, text, timestamp } from 'drizzle-orm/pg-core';

import { oncelySchema } from '../inbox/tables.js';

/**
 * `oncely.inbox_horizons`: per inbox scope (column `consumer_group`) and partition, the inbox is
 * complete for offsets ≥ `horizonOffset`; `purgedAt` is when a purge last deleted rows there.
 */
export const inboxHorizonsTable = oncelySchema.table(
  'inbox_horizons',
  {
    consumerGroup: text('consumer_group').notNull(),
    topic: text('topic').notNull(),
    partition: integer('partition').notNull(),
    horizonOffset: bigint('horizon_offset', { mode: 'bigint' }).notNull(),
    purgedAt: timestamp('purged_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.consumerGroup, t.topic, t.partition] })],
);

/** `oncely.replays`: the audit row of every replay run. */
export const replaysTable = oncelySchema.table(
  'replays',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    consumerGroup: text('consumer_group').notNull(),
    topic: text('topic').notNull(),
    partitions: integer('partitions').array().notNull(),
    rangeFrom: text('range_from').notNull(),
    rangeTo: text('range_to').notNull(),
    ranges: jsonb('ranges').$type<{ partition: number; start: string; end: string }[]>().notNull(),
    report: jsonb('report').notNull(),
    forced: boolean('forced').notNull().default(false),
    requestedBy: text('requested_by').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    completedAt: timestamp('completed_at', { withTimezone: true }),
    /** The inbox scope the replay looked its messages up in; null on rows written before 0009 (the group). */
    inboxScope: text('inbox_scope'),
  },
  (t) => [index('replays_group_idx').on(t.consumerGroup, t.topic, t.createdAt)],
);
