import { bigint, bigserial, pgSchema, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * The payments the HTTP API creates. There is deliberately no unique constraint on
 * `idempotency_key`: the demo shows the idempotent route alone keeps a retried request from
 * charging twice, and counts double charges from this table.
 */
export const paymentsApi = pgSchema('payments_api');

export const apiPayments = paymentsApi.table('payments', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  /** The caller's key for the operation (the scope is the API key): for the demo's audit only. */
  idempotencyKey: text('idempotency_key'),
  apiKey: text('api_key').notNull(),
  accountId: text('account_id').notNull(),
  amountCents: bigint('amount_cents', { mode: 'number' }).notNull(),
  currency: text('currency').notNull(),
  status: text('status').$type<'captured'>().notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

/** The DDL for the table above (a real service would use its migration tool). */
export const PAYMENTS_API_DDL = `
CREATE SCHEMA IF NOT EXISTS payments_api;
CREATE TABLE IF NOT EXISTS payments_api.payments (
  id              bigserial PRIMARY KEY,
  idempotency_key text,
  api_key         text NOT NULL,
  account_id      text NOT NULL,
  amount_cents    bigint NOT NULL,
  currency        text NOT NULL,
  status          text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now()
);
`;
