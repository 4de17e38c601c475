import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'oncely';
import { expectSameAsCleanDelivery, startDevServices } from 'oncely/testing';
import pg from 'pg';
import { expect, it } from 'vitest';

import { paymentsHandler } from '../payments/handler.js';
import { PAYMENTS_DDL } from '../payments/schema.js';

it('keeps the ledger right under every adversarial delivery', async () => {
  await using services = await startDevServices(); // or KAFKA_BROKERS / DATABASE_URL
  const pool = new pg.Pool({ connectionString: services.postgres.url });
  await migrate(pool);
  await pool.query(PAYMENTS_DDL);

  const reports = await expectSameAsCleanDelivery({
    db: drizzle(pool),
    handlers: [paymentsHandler('payments')],
    messages: ['acct-1', 'acct-2', 'acct-1'].map((accountId, i) => ({
      topic: 'payments',
      key: accountId,
      value: { type: 'payment.captured', paymentId: `pay-${i}`, accountId, amountCents: 1_000 + i, currency: 'EUR' },
      headers: { 'message-id': `evt-${i}` },
    })),
    snapshot: async () =>
      (
        await pool.query<Record<string, unknown>>(
          'SELECT payment_id, kind, amount_cents FROM payments.ledger_entries ORDER BY payment_id',
        )
      ).rows,
    reset: async () => void (await pool.query('TRUNCATE payments.ledger_entries, payments.accounts')),
  });
  expect(reports.mutated?.deadLettered.key_reuse).toBe(3);
  await pool.end();
});
