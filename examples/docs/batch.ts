import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka } from 'kafkajs';
import { createInboxConsumer, defineBatchHandler } from 'oncely';
import pg from 'pg';
import { z } from 'zod';

const paymentEvent = z.object({ accountId: z.string(), amountCents: z.int() });

const ledger = defineBatchHandler({
  topic: 'payments',
  schema: paymentEvent,
  async handleBatch(events, ctx) {
    // events: only the messages claimed in this transaction (duplicates and invalid ones are
    // already recorded and left out), in offset order. sql.param() sends each array as one
    // parameter; a bare array would be expanded into a list of parameters.
    await ctx.tx.execute(sql`
      INSERT INTO ledger (message_id, account_id, amount_cents)
      SELECT * FROM unnest(${sql.param(events.map((e) => e.messageId))}::text[],
                           ${sql.param(events.map((e) => e.event.accountId))}::text[],
                           ${sql.param(events.map((e) => e.event.amountCents))}::bigint[])`);
  },
});

const kafka = new Kafka({ clientId: 'ledger', brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',') });
const db = drizzle(new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 }));
const consumer = createInboxConsumer({
  kafka,
  db,
  groupId: 'ledger-batch',
  handlers: [ledger],
  batchSize: 500,
  concurrency: 4,
  handleSignals: true,
});
await consumer.start();
