import { bigint, customType, index, integer, jsonb, text, timestamp } from 'drizzle-orm/pg-core';
import { sql } from 'drizzle-orm';

import type { StoredHeader } from '../inbox/dead-letters.js';
import { oncelySchema } from '../inbox/tables.js';
import type { OutboxStatus } from './store.js';

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

/** `oncely.outbox` (migrations/0003_outbox.sql), for applications that query or join it. */
export const outboxTable = oncelySchema.table(
  'outbox',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    messageId: text('message_id').notNull().unique('outbox_message_id_key'),
    topic: text('topic').notNull(),
    partition: integer('partition'),
    key: bytea('key'),
    value: bytea('value'),
    headers: jsonb('headers').$type<StoredHeader[]>().notNull().default([]),
    causationId: text('causation_id'),
    status: text('status').$type<OutboxStatus>().notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    lastError: jsonb('last_error').$type<Record<string, unknown>>(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    sentAt: timestamp('sent_at', { withTimezone: true }),
  },
  (t) => [
    index('outbox_pending_idx')
      .on(t.id)
      .where(sql`status = 'pending'`),
    index('outbox_parked_idx')
      .on(t.topic, t.key, t.id)
      .where(sql`status = 'parked'`),
    index('outbox_sent_at_idx')
      .on(t.sentAt)
      .where(sql`status = 'sent'`),
  ],
);
