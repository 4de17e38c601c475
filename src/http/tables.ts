import { customType, index, integer, jsonb, primaryKey, text, timestamp } from 'drizzle-orm/pg-core';

import { oncelySchema } from '../inbox/tables.js';

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

/** One stored response header: `[name, value]`, name in lower case. */
export type StoredResponseHeader = readonly [name: string, value: string];

/**
 * `oncely.idempotency_keys`: one row per (scope, `Idempotency-Key`) whose response committed with
 * the request's effects (migration 0004). Exported so applications can query and join it.
 */
export const idempotencyKeysTable = oncelySchema.table(
  'idempotency_keys',
  {
    scope: text('scope').notNull(),
    key: text('key').notNull(),
    requestFingerprint: bytea('request_fingerprint').notNull(),
    method: text('method').notNull(),
    path: text('path').notNull(),
    responseStatus: integer('response_status').notNull(),
    responseHeaders: jsonb('response_headers').$type<StoredResponseHeader[]>().notNull().default([]),
    responseBody: bytea('response_body').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.scope, t.key] }), index('idempotency_keys_expires_at_idx').on(t.expiresAt)],
);
