import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import { useTestEnvironment, waitFor } from '../../support/integration.js';
import { startPaymentProvider } from '../../support/payment-provider.js';

const env = useTestEnvironment();
const root = fileURLToPath(new URL('../../../', import.meta.url));
const children: ReturnType<typeof spawn>[] = [];

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

/** Runs a README example as a user would (`tsx file.ts`), against this test's database and broker. */
function runExample(file: string, extraEnv: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', `examples/readme/${file}`], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_URL: env.databaseUrl,
      KAFKA_BROKERS: env.brokers.join(','),
      ONCELY_LOG_LEVEL: 'warn',
      ...extraEnv,
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  children.push(child);
  return child;
}

/** A TCP port free right now (the example listens on it). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

async function stopExample(child: ReturnType<typeof spawn>): Promise<NodeJS.Signals | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.signalCode;
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.once('exit', (_code, signal) => resolve(signal)),
  );
  child.kill('SIGTERM');
  return exited;
}

describe('the README’s code runs as written', () => {
  it('runs the handler example and the batch example against a real broker and database', async () => {
    await env.admin.createTopics({ topics: [{ topic: 'payments', numPartitions: 1 }], waitForLeaders: true });
    await env.pool.query(`
      CREATE TABLE IF NOT EXISTS ledger_entries (payment_id text PRIMARY KEY, amount_cents integer NOT NULL);
      CREATE TABLE IF NOT EXISTS ledger (message_id text PRIMARY KEY, account_id text NOT NULL, amount_cents bigint NOT NULL);`);
    const paymentId = `pay-${randomUUID()}`;
    const messageId = `evt-${randomUUID()}`;
    await env.produce('payments', [
      {
        value: JSON.stringify({ paymentId, accountId: 'acct-1', amountCents: 1234, currency: 'EUR' }),
        headers: { 'message-id': messageId },
      },
    ]);

    // Both at once (two groups on one topic): each applies the payment to its own table.
    const handler = runExample('handler.ts');
    const batch = runExample('batch.ts');
    await waitFor('the handler example applied the payment', async () => {
      const { rows } = await env.pool.query('SELECT 1 FROM ledger_entries WHERE payment_id = $1', [paymentId]);
      return rows.length === 1;
    });
    await waitFor('the batch example applied the payment', async () => {
      const { rows } = await env.pool.query<{ account_id: string; amount_cents: string }>(
        'SELECT account_id, amount_cents FROM ledger WHERE message_id = $1',
        [messageId],
      );
      return rows[0]?.account_id === 'acct-1' && rows[0].amount_cents === '1234';
    });
    expect(await Promise.all([stopExample(handler), stopExample(batch)])).toEqual(['SIGTERM', 'SIGTERM']);
  });

  it('runs the HTTP example: charged once, its retry replayed, its payment and event committed together', async () => {
    await env.pool.query(`
      CREATE TABLE IF NOT EXISTS card_payments (
        id bigserial PRIMARY KEY, account_id text NOT NULL, amount_cents integer NOT NULL, charge_id text NOT NULL)`);
    const provider = await startPaymentProvider();
    try {
      const port = await freePort();
      const server = runExample('http-server.ts', { PORT: String(port), PROVIDER_URL: provider.url });
      const url = `http://127.0.0.1:${port}/v1/payments`;
      await waitFor('the HTTP example listens', () =>
        fetch(url).then(
          () => true,
          () => false,
        ),
      );
      const accountId = `acct-${randomUUID()}`;
      const key = randomUUID();
      const pay = () =>
        fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-api-key': 'sk_test_1' },
          body: JSON.stringify({ accountId, amountCents: 1500 }),
        });
      const first = await pay();
      expect(first.status).toBe(201);
      const retry = await pay();
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(await retry.json()).toEqual(await first.json());
      expect(provider.charges.size).toBe(1);
      const { rows } = await env.pool.query<{ n: number; events: number }>(
        `SELECT (SELECT count(*)::int FROM card_payments WHERE account_id = $1) AS n,
                (SELECT count(*)::int FROM oncely.outbox WHERE topic = 'payments' AND key = convert_to($1, 'UTF8')) AS events`,
        [accountId],
      );
      expect(rows[0]).toEqual({ n: 1, events: 1 });
      expect(await stopExample(server)).toBe('SIGTERM');
    } finally {
      await provider.close();
    }
  });
});
