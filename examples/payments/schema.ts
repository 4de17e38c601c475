import { bigint, bigserial, pgSchema, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * The ledger a payments team keeps next to the inbox. There is deliberately no unique constraint
 * on message_id: the demo shows the inbox alone keeps every event from being applied twice.
 */
export const payments = pgSchema('payments');

export const accounts = payments.table('accounts', {
  accountId: text('account_id').primaryKey(),
  balanceCents: bigint('balance_cents', { mode: 'number' }).notNull().default(0),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

export const ledgerEntries = payments.table('ledger_entries', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  paymentId: text('payment_id').notNull(),
  accountId: text('account_id').notNull(),
  kind: text('kind').$type<'capture' | 'refund'>().notNull(),
  /** Signed: captures add to the balance, refunds subtract. */
  amountCents: bigint('amount_cents', { mode: 'number' }).notNull(),
  messageId: text('message_id').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

export const schema = { accounts, ledgerEntries };

/** The DDL for the tables above (a real service would use its migration tool). */
export const PAYMENTS_DDL = `
CREATE SCHEMA IF NOT EXISTS payments;
CREATE TABLE IF NOT EXISTS payments.accounts (
  account_id    text PRIMARY KEY,
  balance_cents bigint NOT NULL DEFAULT 0,
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS payments.ledger_entries (
  id           bigserial PRIMARY KEY,
  payment_id   text NOT NULL,
  account_id   text NOT NULL,
  kind         text NOT NULL CHECK (kind IN ('capture', 'refund')),
  amount_cents bigint NOT NULL,
  message_id   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_entries_account_idx ON payments.ledger_entries (account_id);
`;
