/**
 * The benchmark's data as the variants see it: the zod schema a real consumer would validate the
 * payment events with, and the ledger and inbox tables the variants write into. (Producing the
 * events is in produce.ts: the variant processes import this file and nothing of oncely's source.)
 */
import { bigint, pgSchema, text, timestamp } from 'drizzle-orm/pg-core';
import type pg from 'pg';
import { z } from 'zod';

export const PARTITIONS = 4;
/** Target size of one event's JSON value, in bytes. */
export const EVENT_BYTES = 200;

/** How a consumer of these events validates them: what the oncely variants pay for on every message. */
export const paymentCaptured = z.object({
  type: z.literal('payment.captured'),
  paymentId: z.string().min(1),
  accountId: z.string().min(1),
  amountCents: z.int().positive(),
  currency: z.string().length(3),
  capturedAt: z.iso.datetime(),
  reference: z.string(),
});

export type PaymentCaptured = z.infer<typeof paymentCaptured>;

/** Where each variant's ledger lives: `bench.ledger_<variant>`. */
export const BENCH_SCHEMA = 'bench';
const bench = pgSchema(BENCH_SCHEMA);

/**
 * A ledger table as drizzle sees it. No unique constraint on message_id, as in the payments
 * example: a message applied twice must show up as two rows, which the checks count.
 */
export function ledgerTable(name: string) {
  return bench.table(name, {
    messageId: text('message_id').notNull(),
    accountId: text('account_id').notNull(),
    amountCents: bigint('amount_cents', { mode: 'number' }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  });
}

export type LedgerTable = ReturnType<typeof ledgerTable>;

/** Table names are built from variant names only; this keeps them safe to splice into SQL. */
export function ledgerName(variant: string): string {
  const name = `ledger_${variant.toLowerCase().replace(/[^a-z0-9]+/g, '_')}`;
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad ledger name ${name}`);
  return name;
}

/** Drops and creates a ledger, so every variant starts from an empty table of the same shape. */
export async function resetLedger(pool: pg.Pool, name: string): Promise<void> {
  await pool.query(`
    CREATE SCHEMA IF NOT EXISTS ${BENCH_SCHEMA};
    DROP TABLE IF EXISTS ${BENCH_SCHEMA}.${name};
    CREATE TABLE ${BENCH_SCHEMA}.${name} (
      message_id   text NOT NULL,
      account_id   text NOT NULL,
      amount_cents bigint NOT NULL,
      created_at   timestamptz NOT NULL DEFAULT now()
    );`);
}

export interface LedgerSummary {
  readonly rows: number;
  readonly distinctIds: number;
  readonly totalCents: number;
}

export async function summarizeLedger(pool: pg.Pool, name: string): Promise<LedgerSummary> {
  const { rows } = await pool.query<{ rows: string; distinct_ids: string; total: string | null }>(
    `SELECT count(*) AS rows, count(DISTINCT message_id) AS distinct_ids, sum(amount_cents) AS total
       FROM ${BENCH_SCHEMA}.${name}`,
  );
  const row = rows[0];
  return {
    rows: Number(row?.rows ?? 0),
    distinctIds: Number(row?.distinct_ids ?? 0),
    totalCents: Number(row?.total ?? 0),
  };
}

/** Where the hand-written inbox variants (B1, P1) keep their inbox: `bench.inbox_<variant>`. */
export function inboxName(variant: string): string {
  return ledgerName(variant).replace(/^ledger_/, 'inbox_');
}

/**
 * Drops and creates a hand-written inbox, as the blog posts about the inbox pattern make it: the
 * message ids a group has processed, keyed by (group, id), so a second insert of one conflicts.
 */
export async function resetInbox(pool: pg.Pool, name: string): Promise<void> {
  await pool.query(`
    CREATE SCHEMA IF NOT EXISTS ${BENCH_SCHEMA};
    DROP TABLE IF EXISTS ${BENCH_SCHEMA}.${name};
    CREATE TABLE ${BENCH_SCHEMA}.${name} (
      consumer_group text NOT NULL,
      message_id     text NOT NULL,
      processed_at   timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (consumer_group, message_id)
    );`);
}
