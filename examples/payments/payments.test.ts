/**
 * The payments handler under adversarial delivery: every scenario of oncely/testing must leave
 * the ledger and the balances exactly as one clean delivery does.
 */
import { randomUUID } from 'node:crypto';

import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'oncely';
import { deliverOnce, type DevServices, expectSameAsCleanDelivery, startDevServices } from 'oncely/testing';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type PaymentEvent, paymentsBatchHandler, paymentsHandler } from './handler.js';
import { REVIEW_SUFFIX, startPaymentProvider } from './provider.js';
import { PAYMENTS_DDL, schema } from './schema.js';

let services: DevServices;
let admin: pg.Client;
let pool: pg.Pool;
const database = `payments_test_${randomUUID().replaceAll('-', '').slice(0, 12)}`;

beforeAll(async () => {
  services = await startDevServices(); // KAFKA_BROKERS / DATABASE_URL when set, else local or Docker
  admin = new pg.Client({ connectionString: services.postgres.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  const url = new URL(services.postgres.url);
  url.pathname = `/${database}`;
  pool = new pg.Pool({ connectionString: url.toString(), max: 4 });
  pool.on('error', () => undefined);
  await migrate(pool);
  await pool.query(PAYMENTS_DDL);
});

afterAll(async () => {
  await pool?.end();
  await admin?.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin?.end();
  await services?.stop();
});

/** A few accounts, captures and refunds, each event with its own id. */
function paymentEvents(): { topic: string; key: string; value: PaymentEvent; headers: Record<string, string> }[] {
  const events: PaymentEvent[] = [];
  for (let n = 0; n < 40; n++) {
    const accountId = `acct-${n % 5}`;
    events.push({
      type: 'payment.captured',
      paymentId: `pay-${n}`,
      accountId,
      amountCents: 1_000 + n * 7,
      currency: 'EUR',
    });
    if (n % 4 === 0)
      events.push({ type: 'payment.refunded', paymentId: `pay-${n}`, accountId, amountCents: 250, currency: 'EUR' });
  }
  return events.map((event, i) => ({
    topic: 'payments',
    key: event.accountId,
    value: event,
    headers: { 'message-id': `evt-${i}` },
  }));
}

describe('payments handler', () => {
  it('keeps the ledger and balances exactly right under every adversarial delivery', async () => {
    const db = drizzle(pool, { schema });
    const reports = await expectSameAsCleanDelivery({
      db,
      handlers: [paymentsHandler('payments')],
      messages: paymentEvents(),
      snapshot: async () => ({
        ledger: (
          await pool.query(
            'SELECT payment_id, account_id, kind, amount_cents FROM payments.ledger_entries ORDER BY payment_id, kind',
          )
        ).rows,
        balances: (await pool.query('SELECT account_id, balance_cents FROM payments.accounts ORDER BY account_id'))
          .rows,
      }),
      reset: async () => {
        await pool.query('TRUNCATE payments.ledger_entries, payments.accounts');
      },
    });
    expect(reports.clean.processed).toBe(50);
    expect(reports.mutated?.deadLettered.key_reuse).toBe(50);
  });
});

describe('payments batch handler with a provider', () => {
  it('G9: charges each captured payment once through its own step; a held charge is split out, dead-lettered and refunded', async () => {
    const provider = await startPaymentProvider();
    try {
      await pool.query('TRUNCATE payments.ledger_entries, payments.accounts');
      const events: PaymentEvent[] = [];
      for (let n = 0; n < 12; n++)
        events.push({
          type: 'payment.captured',
          paymentId: `bpay-${n}`,
          // One payment the provider holds for review, in the middle of the chunk.
          accountId: n === 5 ? `bacct${REVIEW_SUFFIX}` : `bacct-${n % 3}`,
          amountCents: 1_000 + n,
          currency: 'EUR',
        });
      events.push({
        type: 'payment.refunded',
        paymentId: 'bpay-0',
        accountId: 'bacct-0',
        amountCents: 300,
        currency: 'EUR',
      });
      const report = await deliverOnce({
        db: drizzle(pool, { schema }),
        handlers: [paymentsBatchHandler('payments', { providerUrl: provider.url })],
        // One partition: all 13 events in one chunk, so the held charge fails the chunk and oncely splits it.
        partitions: 1,
        messages: events.map((value, i) => ({
          topic: 'payments',
          key: 'one-partition',
          value,
          headers: { 'message-id': `bevt-${i}` },
        })),
      });
      expect(report.processed).toBe(12);
      expect(report.deadLettered).toEqual({ handler_failed: 1 });

      // Every captured payment charged exactly once, although the chunk ran several times while
      // being split: the charges before the held one were recorded steps, not called again.
      const charged = [...provider.charges.values()].map((c) => c.paymentId).sort();
      expect(charged).toEqual(
        events
          .filter((e) => e.type === 'payment.captured')
          .map((e) => e.paymentId)
          .sort(),
      );
      expect([...provider.charges.values()].every((c) => c.calls === 1)).toBe(true);
      // The held one refunded once, through its step's compensation.
      const held = [...provider.charges.values()].find((c) => c.paymentId === 'bpay-5');
      expect([...provider.refunds.values()].map((r) => r.chargeId)).toEqual([held?.id]);

      const { rows } = await pool.query<{ payment_id: string }>(
        "SELECT payment_id FROM payments.ledger_entries WHERE kind = 'capture'",
      );
      expect(rows.map((r) => r.payment_id).sort()).toEqual(charged.filter((p) => p !== 'bpay-5'));
    } finally {
      await provider.close();
    }
  });
});
