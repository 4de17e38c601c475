import { sql } from 'drizzle-orm';
import { bigint, customType, index, integer, jsonb, primaryKey, text, timestamp } from 'drizzle-orm/pg-core';

import { oncelySchema } from '../inbox/tables.js';

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

/** One stored response header: `[name, value]`, name in lower case. */
export type StoredResponseHeader = readonly [name: string, value: string];

/**
 * `oncely.idempotency_keys`: one row per (scope, `Idempotency-Key`), written at the key's first use
 * (`in_progress`, with the request's fingerprint) and completed with the response in the request's
 * transaction (migrations 0004 and 0008). Exported so applications can query and join it.
 */
export const idempotencyKeysTable = oncelySchema.table(
  'idempotency_keys',
  {
    scope: text('scope').notNull(),
    key: text('key').notNull(),
    /** The key's current generation: a key reused after it expired starts a new one (one sequence for all keys). */
    generation: bigint('generation', { mode: 'bigint' })
      .notNull()
      .default(sql`nextval('oncely.idempotency_generation_seq')`),
    /** `in_progress` from first use until the response is stored with the effects, then `completed`. */
    status: text('status').$type<'in_progress' | 'completed'>().notNull().default('completed'),
    requestFingerprint: bytea('request_fingerprint').notNull(),
    method: text('method').notNull(),
    path: text('path').notNull(),
    /** Null while the generation is in progress. */
    responseStatus: integer('response_status'),
    responseHeaders: jsonb('response_headers').$type<StoredResponseHeader[]>().notNull().default([]),
    /** Null while the generation is in progress. */
    responseBody: bytea('response_body'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.scope, t.key] }), index('idempotency_keys_expires_at_idx').on(t.expiresAt)],
);
