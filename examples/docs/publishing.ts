import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka } from 'kafkajs';
import { createInboxConsumer, defineHandler, publish } from 'oncely';
import pg from 'pg';
import { z } from 'zod';

const db = drizzle(new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 }));
const kafka = new Kafka({ clientId: 'ledger', brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',') });

const payments = defineHandler({
  topic: 'payments',
  schema: z.object({ paymentId: z.string(), accountId: z.string(), amountCents: z.int() }),
  async handle(event, ctx) {
    // … the ledger writes through ctx.tx, then, in the same transaction:
    await ctx.publish({ topic: 'ledger.posted', key: event.accountId, value: event });
  },
});

// Outside a consumer (an HTTP handler, a job): any drizzle node-postgres transaction.
export async function schedulePayout(accountId: string, payoutId: string): Promise<void> {
  await db.transaction(async (tx) => {
    await publish(tx, { topic: 'payouts', key: accountId, value: { payoutId } }, { messageId: `payout:${payoutId}` });
  });
}

// relay: true runs the relay in this process; run one in every replica (one sends at a time).
const consumer = createInboxConsumer({
  kafka,
  db,
  groupId: 'ledger-events',
  handlers: [payments],
  relay: true,
  handleSignals: true,
});
await consumer.start();
