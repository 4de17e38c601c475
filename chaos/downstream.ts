/**
 * The second hop of the chaos run: a downstream consumer group that builds account balances from
 * the `ledger.posted` events the ledger handler publishes through the outbox, and its checker.
 */
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { bigint, pgSchema, text } from 'drizzle-orm/pg-core';
import type { Kafka } from 'kafkajs';
import type pg from 'pg';
import type { Logger } from 'pino';

import { ledgerPosted } from '../examples/payments/handler.js';
import { createInboxConsumer, defineHandler, type InboxConsumer } from '../src/index.js';
import { derivedMessageId } from '../src/outbox/message-id.js';
import type { Expectation } from './checker.js';

const downstream = pgSchema('downstream');

/** One row per applied `ledger.posted` event; no unique constraint, so a double apply shows. */
const postings = downstream.table('postings', {
  messageId: text('message_id').notNull(),
  sourceMessageId: text('source_message_id').notNull(),
  accountId: text('account_id').notNull(),
  amountCents: bigint('amount_cents', { mode: 'number' }).notNull(),
});

const balances = downstream.table('balances', {
  accountId: text('account_id').primaryKey(),
  balanceCents: bigint('balance_cents', { mode: 'number' }).notNull(),
});

export const DOWNSTREAM_DDL = `
CREATE SCHEMA IF NOT EXISTS downstream;
CREATE TABLE IF NOT EXISTS downstream.postings (
  message_id        text NOT NULL,
  source_message_id text NOT NULL,
  account_id        text NOT NULL,
  amount_cents      bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS downstream.balances (
  account_id    text PRIMARY KEY,
  balance_cents bigint NOT NULL
);
`;

/** The downstream group: applies each `ledger.posted` event to its own balances, once. */
export function createDownstreamConsumer(options: {
  readonly kafka: Kafka;
  readonly pool: pg.Pool;
  readonly topic: string;
  readonly groupId: string;
  readonly logger: Logger;
}): InboxConsumer {
  const handler = defineHandler({
    topic: options.topic,
    schema: ledgerPosted,
    async handle(event, ctx) {
      await ctx.tx.insert(postings).values({
        messageId: ctx.messageId,
        sourceMessageId: event.sourceMessageId,
        accountId: event.accountId,
        amountCents: event.amountCents,
      });
      await ctx.tx
        .insert(balances)
        .values({ accountId: event.accountId, balanceCents: event.amountCents })
        .onConflictDoUpdate({
          target: balances.accountId,
          set: { balanceCents: sql`${balances.balanceCents} + ${event.amountCents}` },
        });
    },
  });
  return createInboxConsumer({
    kafka: options.kafka,
    db: drizzle(options.pool),
    groupId: options.groupId,
    handlers: [handler],
    concurrency: 3,
    logger: options.logger,
    consumer: { sessionTimeout: 6_000, heartbeatInterval: 1_000 },
  });
}

export interface DownstreamVerdict {
  readonly applied: number;
  /** Applied upstream payments whose `ledger.posted` never got applied downstream. */
  readonly lost: string[];
  /** Upstream payments whose event was applied downstream more than once. */
  readonly doubled: string[];
  /** Downstream postings for payments not applied upstream (e.g. dead-lettered ones). */
  readonly unexpected: string[];
  readonly violations: string[];
}

/** Every applied payment's event applied downstream exactly once, none for others, balances equal. */
export async function checkDownstream(
  pool: pg.Pool,
  upstreamGroupId: string,
  expected: Expectation,
): Promise<DownstreamVerdict> {
  const violations: string[] = [];
  const { rows } = await pool.query<{ source_message_id: string; n: string; amount: string; ids: string[] }>(
    `SELECT source_message_id, count(*) AS n, sum(amount_cents) AS amount, array_agg(message_id) AS ids
       FROM downstream.postings GROUP BY source_message_id`,
  );
  const applied = new Map(rows.map((r) => [r.source_message_id, r]));
  const lost = [...expected.ledger.keys()].filter((id) => !applied.has(id));
  const doubled = rows.filter((r) => Number(r.n) > 1).map((r) => r.source_message_id);
  const unexpected = rows
    .filter(
      (r) =>
        Number(r.n) === 1 &&
        (expected.ledger.get(r.source_message_id) !== Number(r.amount) ||
          r.ids[0] !== derivedMessageId(upstreamGroupId, r.source_message_id, 0)),
    )
    .map((r) => r.source_message_id);
  if (lost.length > 0) violations.push(`downstream: ${lost.length} events lost (e.g. ${lost.slice(0, 5).join(', ')})`);
  if (doubled.length > 0)
    violations.push(`downstream: ${doubled.length} events applied twice (e.g. ${doubled.slice(0, 5).join(', ')})`);
  if (unexpected.length > 0)
    violations.push(`downstream: ${unexpected.length} unexpected postings (e.g. ${unexpected.slice(0, 5).join(', ')})`);
  const { rows: stored } = await pool.query<{ account_id: string; balance_cents: string }>(
    'SELECT account_id, balance_cents FROM downstream.balances',
  );
  const have = new Map(stored.map((b) => [b.account_id, Number(b.balance_cents)]));
  const wrong = [...expected.balances].filter(([account, cents]) => (have.get(account) ?? 0) !== cents);
  if (wrong.length > 0)
    violations.push(
      `downstream: ${wrong.length} account balances differ from upstream (e.g. ${wrong
        .slice(0, 3)
        .map(([a]) => a)
        .join(', ')})`,
    );
  return { applied: rows.length, lost, doubled, unexpected, violations };
}
