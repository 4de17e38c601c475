import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import { useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();
const root = fileURLToPath(new URL('../../../', import.meta.url));
const children: ReturnType<typeof spawn>[] = [];

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

/** Runs a README example as a user would (`tsx file.ts`), against this test's database and broker. */
function runExample(file: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', `examples/readme/${file}`], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_URL: env.databaseUrl,
      KAFKA_BROKERS: env.brokers.join(','),
      ONCELY_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  children.push(child);
  return child;
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
});
