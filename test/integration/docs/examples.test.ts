/**
 * The TypeScript the README and docs/ show (examples/docs, held equal to the pages' blocks by
 * test/unit/docs.test.ts), run as written against this test's database and the shared broker:
 * programs as a user runs them (`tsx file.ts`), modules by importing what they export.
 *
 * The examples name their topics and groups as a user's code would ('payments', 'ledger'); the tests
 * here run one after another, in order: the replay example rewinds the group the handler example
 * consumed with.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

import { deliverOnce } from 'oncely/testing';
import { afterEach, describe, expect, it } from 'vitest';

import { useTestEnvironment, waitFor } from '../../support/integration.js';
import { startPaymentProvider } from '../../support/payment-provider.js';

const env = useTestEnvironment();
const root = fileURLToPath(new URL('../../../', import.meta.url));
const children: ReturnType<typeof spawn>[] = [];

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

/** Runs an example as a user would (`tsx file.ts`), against this test's database and broker. */
function runExample(file: string, extraEnv: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', `examples/docs/${file}`], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_URL: env.databaseUrl,
      KAFKA_BROKERS: env.brokers.join(','),
      ONCELY_LOG_LEVEL: 'warn',
      KAFKAJS_NO_PARTITIONER_WARNING: '1',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  children.push(child);
  return Object.assign(child, { output: () => output });
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

function exitCode(child: ReturnType<typeof spawn>): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** A payment event every 'payments' example accepts. */
function payment() {
  const paymentId = `pay-${randomUUID()}`;
  const messageId = `evt-${randomUUID()}`;
  const event = { paymentId, accountId: `acct-${randomUUID().slice(0, 8)}`, amountCents: 1234, currency: 'EUR' };
  return {
    paymentId,
    messageId,
    event,
    message: { value: JSON.stringify(event), headers: { 'message-id': messageId } },
  };
}

describe('the code of the README and docs/ runs as written', () => {
  it('runs the handler, batch, metrics and publishing examples side by side, each in its own group', async () => {
    await env.admin.createTopics({
      topics: [
        { topic: 'payments', numPartitions: 1 },
        { topic: 'ledger.posted', numPartitions: 1 },
      ],
      waitForLeaders: true,
    });
    await env.pool.query(`
      CREATE TABLE IF NOT EXISTS ledger_entries (payment_id text PRIMARY KEY, amount_cents integer NOT NULL);
      CREATE TABLE IF NOT EXISTS ledger (message_id text PRIMARY KEY, account_id text NOT NULL, amount_cents bigint NOT NULL);`);
    const { paymentId, messageId, event, message } = payment();
    await env.produce('payments', [message]);

    // Four groups on one topic: each example applies the one payment its own way.
    const metricsPort = await freePort();
    const consumers = [
      runExample('handler.ts'),
      runExample('batch.ts'),
      runExample('metrics.ts', { METRICS_PORT: String(metricsPort) }),
      runExample('publishing.ts'),
    ];
    await waitFor('the handler example applied the payment', async () => {
      const { rows } = await env.pool.query('SELECT 1 FROM ledger_entries WHERE payment_id = $1', [paymentId]);
      return rows.length === 1;
    });
    await waitFor('the batch example applied the payment', async () => {
      const { rows } = await env.pool.query<{ account_id: string; amount_cents: string }>(
        'SELECT account_id, amount_cents FROM ledger WHERE message_id = $1',
        [messageId],
      );
      return rows[0]?.account_id === event.accountId && rows[0].amount_cents === '1234';
    });
    await waitFor('the metrics example to count it, served over HTTP', async () => {
      const text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then(
        (response) => response.text(),
        () => '',
      );
      return /^oncely_messages_total\{group="ledger-metrics",topic="payments",outcome="processed"[^}]*\} [1-9]\d*$/m.test(
        text,
      );
    });
    await waitFor('the publishing example’s relay to send its event', async () => {
      const { rows } = await env.pool.query(
        `SELECT 1 FROM oncely.outbox WHERE topic = 'ledger.posted' AND key = convert_to($1, 'UTF8') AND status = 'sent'`,
        [event.accountId],
      );
      return rows.length === 1;
    });
    // handleSignals: each stops gracefully and leaves its group, then ends by the signal.
    expect(await Promise.all(consumers.map(stopExample))).toEqual(['SIGTERM', 'SIGTERM', 'SIGTERM', 'SIGTERM']);
  });

  it('runs the replay example on the handler example’s stopped group: prints the plan, records the replay', async () => {
    const replay = runExample('replay.ts');
    expect(await exitCode(replay)).toBe(0);
    expect(replay.output()).toContain('Replay plan · group ledger · topic payments');
    const recorded = /^replay (\d+) recorded$/m.exec(replay.output())?.[1];
    expect(recorded, replay.output()).toBeDefined();
    const { rows } = await env.pool.query<{ consumer_group: string; forced: boolean }>(
      'SELECT consumer_group, forced FROM oncely.replays WHERE id = $1',
      [recorded],
    );
    expect(rows).toEqual([{ consumer_group: 'ledger', forced: false }]);
  });

  it('runs the HTTP example with its client: charged once, the retry replayed, payment and event committed together', async () => {
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

      // The client example, pointed at this server: one operation, one key, one payment.
      process.env.API_URL = `http://127.0.0.1:${port}`;
      const { pay: payAsTheClient } = await import('../../../examples/docs/http-client.js');
      const response = await payAsTheClient({ accountId, amountCents: 700 });
      expect(response.status).toBe(201);
      expect(provider.charges.size).toBe(2);
      expect(await stopExample(server)).toBe('SIGTERM');
    } finally {
      delete process.env.API_URL;
      await provider.close();
    }
  });

  it('runs the steps example: one charge per message, and a message dead-lettered after its charge is refunded', async () => {
    await env.pool.query('CREATE TABLE IF NOT EXISTS orders (order_id text PRIMARY KEY, charge_id text NOT NULL)');
    const provider = await startPaymentProvider();
    try {
      process.env.PROVIDER_URL = provider.url;
      const { orderPlaced } = await import('../../../examples/docs/steps.js');
      const orderId = `o-${randomUUID()}`;
      // Two messages for one order: the second's insert fails on the order's primary key after its
      // charge, so it is dead-lettered and its charge compensated.
      const report = await deliverOnce({
        db: env.db,
        handlers: [orderPlaced],
        messages: ['m-1', 'm-2'].map((id) => ({
          topic: 'orders',
          key: orderId,
          value: { orderId, amountCents: 900 },
          headers: { 'message-id': `${orderId}-${id}` },
        })),
      });
      expect(report.processed).toBe(1);
      expect(report.deadLettered).toEqual({ handler_failed: 1 });
      expect(provider.charges.size).toBe(2);
      expect(provider.refunds.size).toBe(1);
    } finally {
      delete process.env.PROVIDER_URL;
      await provider.close();
    }
  });

  it('runs the console example: the host app’s sign-in decides who may see it', async () => {
    const port = await freePort();
    const server = runExample('console.ts', { PORT: String(port) });
    const url = `http://127.0.0.1:${port}/ops/oncely/dead-letters`;
    const anonymous = await waitFor('the console to answer', () => fetch(url).catch(() => undefined), {
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    expect(anonymous.status).toBe(401);
    const signedIn = await fetch(url, { headers: { 'x-forwarded-email': 'ops@example.com' } });
    expect(signedIn.status).toBe(200);
    const page = await signedIn.text();
    expect(page).toContain('write access');
    expect(page).toContain('ops@example.com');
    server.kill('SIGTERM');
  });

  it('loads the schema registration example', async () => {
    const { schema } = await import('../../../examples/docs/register.js');
    expect(Object.keys(schema)).toEqual(['accounts']);
  });
});
