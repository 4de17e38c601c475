import { drizzle } from 'drizzle-orm/node-postgres';
import { integer, pgTable, text } from 'drizzle-orm/pg-core';
import { Kafka } from 'kafkajs';
import { createInboxConsumer, defineHandler, migrate, NonRetriableError } from 'oncely';
import pg from 'pg';
import { z } from 'zod';

// Your own table, created by your own migrations.
const ledgerEntries = pgTable('ledger_entries', {
  paymentId: text('payment_id').primaryKey(),
  amountCents: integer('amount_cents').notNull(),
});

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
const db = drizzle(pool);
await migrate(db);

const paymentCaptured = defineHandler({
  topic: 'payments',
  schema: z.object({
    paymentId: z.string(),
    accountId: z.string(),
    amountCents: z.int().positive(),
    currency: z.string(),
  }),
  async handle(event, ctx) {
    if (event.currency !== 'EUR') throw new NonRetriableError(`unsupported currency ${event.currency}`);
    // ctx.tx is a drizzle transaction: these writes commit with the inbox row, or not at all.
    await ctx.tx.insert(ledgerEntries).values({ paymentId: event.paymentId, amountCents: event.amountCents });
  },
});

const consumer = createInboxConsumer({
  kafka: new Kafka({ clientId: 'ledger', brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',') }),
  db,
  groupId: 'ledger',
  handlers: [paymentCaptured],
  concurrency: 4,
  handleSignals: true, // SIGTERM/SIGINT: finish in-flight messages, commit, leave the group
});
consumer.on('message:dead-lettered', (e) => console.error(`dead-lettered ${e.messageId ?? '(no id)'}: ${e.reason}`));
await consumer.start();
