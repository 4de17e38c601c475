/**
 * The benchmark's data: payment events of about 200 bytes, the zod schema a real consumer would
 * validate them with, and the ledger table every variant writes into.
 */
import { randomUUID } from 'node:crypto';

import { bigint, pgSchema, text, timestamp } from 'drizzle-orm/pg-core';
import type { Message, Producer } from 'kafkajs';
import type pg from 'pg';
import { z } from 'zod';

import { seededRandom } from '../src/testing/seeded-random.js';

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

/** One event's JSON, padded through `reference` to exactly EVENT_BYTES (all characters are ASCII). */
function eventJson(n: number, next: () => number): { value: string; amountCents: number } {
  const amountCents = 100 + Math.floor(next() * 99_900);
  const event: PaymentCaptured = {
    type: 'payment.captured',
    paymentId: `pay_${n.toString(36).padStart(8, '0')}`,
    accountId: `acct-${Math.floor(next() * 1000)}`,
    amountCents,
    currency: 'EUR',
    capturedAt: new Date(Date.UTC(2026, 0, 1) + n * 1000).toISOString(),
    reference: '',
  };
  const bare = JSON.stringify(event).length;
  event.reference = 'r'.repeat(Math.max(0, EVENT_BYTES - bare));
  return { value: JSON.stringify(event), amountCents };
}

export interface Produced {
  readonly events: number;
  /** Sum of every event's amount: what each ledger must add up to. */
  readonly totalCents: number;
  /** Per partition, the offset after its last message (the topic is fresh: offsets start at 0). */
  readonly endOffsets: number[];
  readonly seconds: number;
}

/**
 * Produces `events` payment events once, round-robin over the partitions so each holds a quarter
 * of them. Big sends and several in flight: producing is setup, not what is measured.
 */
export async function produceEvents(producer: Producer, topic: string, events: number): Promise<Produced> {
  const next = seededRandom(20261123);
  const started = performance.now();
  const perSend = 4_000;
  const inFlight = 4;
  let totalCents = 0;
  const endOffsets = new Array<number>(PARTITIONS).fill(0);
  for (let wave = 0; wave < events; wave += perSend * inFlight) {
    const sends: Promise<unknown>[] = [];
    for (let start = wave; start < Math.min(events, wave + perSend * inFlight); start += perSend) {
      const messages: Message[] = [];
      for (let n = start; n < Math.min(events, start + perSend); n++) {
        const { value, amountCents } = eventJson(n, next);
        totalCents += amountCents;
        const partition = n % PARTITIONS;
        endOffsets[partition] = (endOffsets[partition] ?? 0) + 1;
        messages.push({ value, partition, headers: { 'message-id': randomUUID() } });
      }
      // acks -1: the broker has every message before any consumer starts; no compression, so
      // consumers pay for decoding records only, as most payment topics are configured.
      sends.push(producer.send({ topic, messages, acks: -1 }));
    }
    await Promise.all(sends);
  }
  return { events, totalCents, endOffsets, seconds: (performance.now() - started) / 1000 };
}

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
