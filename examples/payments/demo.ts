/**
 * `npm run demo`: the payments ledger end to end, with duplicates and a crash.
 *
 * 1. Starts Kafka and PostgreSQL (KAFKA_BROKERS / DATABASE_URL if set), migrates.
 * 2. Produces 3,000 payment events, re-sends 10 % of them (same message-id header, as a producer
 *    retry would), plus 5 malformed events and 5 that reuse an id with a changed amount.
 * 3. Runs the consumer as a separate process, SIGKILLs it a third of the way through, restarts it.
 * 4. Before the consumer starts, the HTTP act: clients of the idempotent payments API (examples/payments-api)
 *    time out, retry, race and reuse keys; each payment's `payment.captured` goes through the outbox
 *    (a relay runs here) to the same topic, and the ledger consumer applies it.
 * 5. The consumer charges every captured payment at a small real HTTP payment provider through
 *    `ctx.step` (the SIGKILL lands among those calls); 3 payments the provider holds for review are
 *    dead-lettered after their charge, and the step's compensation refunds them.
 * 6. Prints what happened and checks the ledger, the HTTP payments and the provider's records
 *    against what they should be; exits 1 if anything is wrong.
 *
 * `npm run demo -- --json` prints the summary as one JSON document on stdout instead (progress goes
 * to stderr): every figure once, each expected one beside it under `expected`, and `ok`/`problems`.
 * `--events <n>` changes the number of unique payment events (default 3,000), `--seed <n>` the
 * workload (default `DEMO_SEED` or 20261123).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { Kafka, logLevel, type Message } from 'kafkajs';
import { createOutboxRelay, migrate } from 'oncely';
import { startDevServices } from 'oncely/dev';
import { seededRandom } from 'oncely/testing';
import pg from 'pg';
import { pino } from 'pino';

import { type HttpDemoReport, runHttpDemo } from '../payments-api/demo-http.js';
import type { PaymentEvent } from './handler.js';
import { type PaymentProvider, REVIEW_SUFFIX, startPaymentProvider } from './provider.js';
import { PAYMENTS_DDL } from './schema.js';

const DUPLICATE_SHARE = 0.1;
const POISON = 5;
const KEY_REUSE = 5;
const PARTITIONS = 4;
const ACCOUNTS = 40;
/** Captured payments the provider holds for review: charged, dead-lettered, refunded. */
const REVIEW = 3;

interface Workload {
  readonly messages: Message[];
  readonly duplicatesSent: number;
  /** Expected balance per account from the unique, valid events. */
  readonly expectedBalances: Map<string, number>;
  readonly expectedEntries: number;
  /** Provider charges the consumer act should make: its unique captures plus the held ones. */
  readonly expectedCharges: number;
}

function buildWorkload(run: string, seed: number, uniqueEvents: number): Workload {
  const next = seededRandom(seed);
  const account = (): string => `${run}-acct-${Math.floor(next() * ACCOUNTS)}`;
  const originals: { id: string; event: PaymentEvent }[] = [];
  const captured: Extract<PaymentEvent, { type: 'payment.captured' }>[] = [];
  for (let n = 0; n < uniqueEvents; n++) {
    const refundable = captured.length > 0 && next() < 0.2;
    let event: PaymentEvent;
    if (refundable) {
      const capture = captured[Math.floor(next() * captured.length)]!;
      event = { ...capture, type: 'payment.refunded', amountCents: 1 + Math.floor(next() * capture.amountCents) };
    } else {
      event = {
        type: 'payment.captured',
        paymentId: `${run}-pay-${n}`,
        accountId: account(),
        amountCents: 100 + Math.floor(next() * 99_900),
        currency: 'EUR',
      };
      captured.push(event);
    }
    originals.push({ id: `${run}-evt-${n}`, event });
  }

  const expectedBalances = new Map<string, number>();
  for (const { event } of originals) {
    const signed = event.type === 'payment.captured' ? event.amountCents : -event.amountCents;
    expectedBalances.set(event.accountId, (expectedBalances.get(event.accountId) ?? 0) + signed);
  }

  // The record key is the account, so an account's events stay in order on one partition.
  const toMessage = (id: string, value: string, key: string): Message => ({
    key,
    value,
    headers: { 'message-id': id },
  });
  const messages = originals.map(({ id, event }) => toMessage(id, JSON.stringify(event), event.accountId));
  const duplicatesSent = Math.round(uniqueEvents * DUPLICATE_SHARE);
  for (let i = 0; i < duplicatesSent; i++) {
    // A producer retry: an event already sent goes out again, same id and bytes, later in the stream.
    const original = originals[Math.floor(next() * originals.length)]!;
    const at = messages.length - Math.floor(next() * (messages.length / 2));
    messages.splice(at, 0, toMessage(original.id, JSON.stringify(original.event), original.event.accountId));
  }
  for (let i = 0; i < KEY_REUSE; i++) {
    // A producer bug: an id reused for a different amount. Must be dead-lettered, never applied.
    const original = originals[i * 7]!;
    messages.push(
      toMessage(
        original.id,
        JSON.stringify({ ...original.event, amountCents: original.event.amountCents + 1 }),
        original.event.accountId,
      ),
    );
  }
  for (let i = 0; i < REVIEW; i++) {
    // Valid payments the provider charges and then holds for review: the ledger refuses them.
    const event: PaymentEvent = {
      type: 'payment.captured',
      paymentId: `${run}-held-${i}`,
      accountId: `${run}${REVIEW_SUFFIX}`,
      amountCents: 5_000 + i,
      currency: 'EUR',
    };
    messages.splice(
      Math.floor(next() * messages.length),
      0,
      toMessage(`${run}-held-${i}`, JSON.stringify(event), event.accountId),
    );
  }
  for (let i = 0; i < POISON; i++) {
    messages.splice(
      Math.floor(next() * messages.length),
      0,
      toMessage(`${run}-poison-${i}`, '{"type":"payment.captured","amountCents":', `${run}-poison`),
    );
  }
  const expectedCharges = originals.filter(({ event }) => event.type === 'payment.captured').length + REVIEW;
  return { messages, duplicatesSent, expectedBalances, expectedEntries: uniqueEvents, expectedCharges };
}

interface Tally {
  processed: number;
  redelivery: number;
  republish: number;
  deadLettered: number;
}

function startConsumer(
  env: Record<string, string>,
  tally: Tally,
): { child: ChildProcess; started: Promise<void>; exited: Promise<number | null> } {
  const script = fileURLToPath(new URL('./consumer.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let markStarted!: () => void;
  const started = new Promise<void>((resolve) => (markStarted = resolve));
  createInterface({ input: child.stdout }).on('line', (line) => {
    const event = JSON.parse(line) as { outcome: string; class?: 'redelivery' | 'republish' };
    if (event.outcome === 'started') markStarted();
    else if (event.outcome === 'processed') tally.processed++;
    else if (event.outcome === 'duplicate' && event.class !== undefined) tally[event.class]++;
    else if (event.outcome === 'dead_lettered') tally.deadLettered++;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    started: Promise.race([
      started,
      exited.then(() => Promise.reject(new Error('the consumer exited before starting'))),
    ]),
    exited,
  };
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

interface DemoOptions {
  readonly json: boolean;
  readonly events: number;
  readonly seed: number;
}

function demoOptions(): DemoOptions {
  const { values } = parseArgs({
    options: { json: { type: 'boolean', default: false }, events: { type: 'string' }, seed: { type: 'string' } },
  });
  const integer = (name: string, text: string | undefined, fallback: number, min: number): number => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < min)
      throw new Error(`--${name} must be an integer of at least ${min}, not ${text}`);
    return n;
  };
  return {
    json: values.json,
    // At least 100: the key-reuse events reuse the ids of events 0, 7, …, 28.
    events: integer('events', values.events, 3_000, 100),
    seed: integer('seed', values.seed ?? process.env.DEMO_SEED, 20261123, 0),
  };
}

async function main(options: DemoOptions): Promise<number> {
  const { seed } = options;
  // With --json, stdout carries the summary document alone; what happens meanwhile goes to stderr.
  const say = options.json ? (line: string) => void process.stderr.write(`${line}\n`) : console.log;
  const run = `r${randomBytes(3).toString('hex')}`;
  const topic = `payments-${run}`;
  const groupId = `ledger-${run}`;
  say(`oncely payments demo · run ${run} · seed ${seed}`);

  say('Starting Kafka and PostgreSQL (a first run downloads Kafka from Maven Central)…');
  const services = await startDevServices({ logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'warn' }) });
  const pool = new pg.Pool({ connectionString: services.postgres.url, max: 8 });
  const kafka = new Kafka({ clientId: 'payments-demo', brokers: services.kafka.brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  let consumer: ReturnType<typeof startConsumer> | undefined;
  let provider: PaymentProvider | undefined;
  const relay = createOutboxRelay({ db: pool, kafka, logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'warn' }) });
  try {
    provider = await startPaymentProvider();
    say(
      `Kafka ${services.kafka.brokers.join(',')} (${services.kafka.source}) · PostgreSQL (${services.postgres.source})`,
    );
    await migrate(pool);
    await pool.query(PAYMENTS_DDL);
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true });

    const workload = buildWorkload(run, seed, options.events);
    await producer.connect();
    for (let i = 0; i < workload.messages.length; i += 500) {
      await producer.send({ topic, messages: workload.messages.slice(i, i + 500) });
    }
    say(`Produced ${workload.messages.length} messages to ${topic} (${PARTITIONS} partitions).`);

    const env = {
      KAFKA_BROKERS: services.kafka.brokers.join(','),
      DATABASE_URL: services.postgres.url,
      TOPIC: topic,
      GROUP_ID: groupId,
      PROVIDER_URL: provider.url,
      // The demo's dead letters are deliberate: their warnings would bury the summary.
      ONCELY_LOG_LEVEL: process.env.ONCELY_LOG_LEVEL ?? 'error',
    };
    const tally: Tally = { processed: 0, redelivery: 0, republish: 0, deadLettered: 0 };
    const inboxCount = async (): Promise<number> =>
      Number(
        (await pool.query<{ n: string }>('SELECT count(*) AS n FROM oncely.inbox WHERE consumer_group = $1', [groupId]))
          .rows[0]?.n,
      );

    // The HTTP act first: the API's events reach the topic through the outbox and the relay, ahead
    // of the consumer act, so the ledger consumer applies them (and the SIGKILL lands among them too).
    await relay.start();
    say('HTTP act: clients of POST /v1/payments time out, retry, race, reuse keys and burst past the pool…');
    const http = await runHttpDemo({
      databaseUrl: services.postgres.url,
      eventsTopic: topic,
      // In JSON mode the act's figures are part of the document, not printed on their own.
      log: options.json ? () => undefined : say,
    });
    await waitUntil(
      'the outbox to send the API events',
      async () =>
        Number(
          (
            await pool.query<{ n: string }>(
              "SELECT count(*) AS n FROM oncely.outbox WHERE topic = $1 AND status <> 'sent'",
              [topic],
            )
          ).rows[0]?.n,
        ) === 0,
    );
    consumer = startConsumer(env, tally);
    await consumer.started;
    await waitUntil(
      'a third of the events',
      async () => (await inboxCount()) >= (options.events + http.paymentsCreated) / 3,
    );
    consumer.child.kill('SIGKILL');
    await consumer.exited;
    const atKill = await inboxCount();
    say(`Killed the consumer (SIGKILL) after ${atKill} recorded outcomes; restarting it.`);

    consumer = startConsumer(env, tally);
    await consumer.started;

    const ends = await admin.fetchTopicOffsets(topic);
    await waitUntil(
      'every partition to be recorded to its end',
      async () => {
        const { rows } = await pool.query<{ partition: number; next_offset: string }>(
          'SELECT partition, next_offset FROM oncely.offsets WHERE consumer_group = $1 AND topic = $2',
          [groupId, topic],
        );
        const recorded = new Map(rows.map((r) => [r.partition, r.next_offset]));
        return ends.every((end) => recorded.get(end.partition) === end.high);
      },
      240_000,
    );
    consumer.child.kill('SIGTERM'); // graceful: drains, commits offsets, leaves the group
    await consumer.exited;
    consumer = undefined;

    const summary = await summarise(pool, { groupId, run, seed, workload, tally, http, provider, killedAfter: atKill });
    if (options.json) process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    else printSummary(summary);
    return summary.ok ? 0 : 1;
  } finally {
    await relay.stop().catch(() => undefined);
    await provider?.close();
    if (consumer !== undefined) consumer.child.kill('SIGKILL');
    await producer.disconnect().catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
    await pool.end();
    await services.stop();
  }
}

/** Everything the demo checked, each figure once; `expected` holds the figures that have a right value. */
export interface DemoSummary {
  readonly run: string;
  readonly seed: number;
  readonly ok: boolean;
  /** What did not match, in words; empty when `ok`. */
  readonly problems: string[];
  readonly http: Omit<HttpDemoReport, 'run' | 'ok' | 'paymentsExpected'> & {
    readonly expected: { executions: number; paymentsCreated: number; wrongAmounts: 0; chargedTwice: 0 };
  };
  readonly consumer: {
    /** Outcomes recorded when the consumer was SIGKILLed. */
    readonly killedAfter: number;
    readonly messagesSent: number;
    readonly duplicatesSent: number;
    readonly malformedSent: number;
    readonly keyReuseSent: number;
    readonly processed: number;
    readonly duplicatesSkipped: { readonly republish: number; readonly redelivery: number };
    readonly deadLettered: {
      readonly invalid_payload: number;
      readonly key_reuse: number;
      readonly handler_failed: number;
    };
    readonly ledgerEntries: number;
    readonly ledgerTotalCents: number;
    readonly accounts: number;
    readonly accountsRight: number;
    readonly httpPaymentsInLedger: number;
    readonly httpPaymentsNotInLedgerOnce: number;
    readonly expected: {
      readonly processed: number;
      readonly deadLettered: {
        readonly invalid_payload: number;
        readonly key_reuse: number;
        readonly handler_failed: number;
      };
      readonly ledgerEntries: number;
      readonly ledgerTotalCents: number;
      readonly accountsRight: number;
      readonly httpPaymentsInLedger: number;
      readonly httpPaymentsNotInLedgerOnce: 0;
    };
  };
  readonly provider: {
    readonly charges: number;
    /** Calls that repeated an idempotency key already charged (the provider deduped them). */
    readonly repeatedCalls: number;
    readonly paymentsChargedTwice: number;
    readonly refunds: number;
    readonly expected: { readonly charges: number; readonly paymentsChargedTwice: 0; readonly refunds: number };
  };
}

interface Outcome {
  readonly groupId: string;
  readonly run: string;
  readonly seed: number;
  readonly workload: Workload;
  readonly tally: Tally;
  readonly http: HttpDemoReport;
  readonly provider: PaymentProvider;
  readonly killedAfter: number;
}

/** Reads what happened from the database and the provider's own records, never from the tally alone. */
async function summarise(pool: pg.Pool, outcome: Outcome): Promise<DemoSummary> {
  const { groupId, run, workload, tally, http, provider } = outcome;
  const one = async (text: string, values: unknown[]): Promise<number> =>
    Number((await pool.query<{ n: string | null }>(text, values)).rows[0]?.n ?? 0);
  const processed = await one(
    "SELECT count(*) AS n FROM oncely.inbox WHERE consumer_group = $1 AND status = 'processed'",
    [groupId],
  );
  const letters = await pool.query<{ reason: string; n: string }>(
    'SELECT reason, count(*) AS n FROM oncely.dead_letters WHERE consumer_group = $1 GROUP BY reason ORDER BY reason',
    [groupId],
  );
  const byReason = new Map(letters.rows.map((r) => [r.reason, Number(r.n)]));
  const entries = await one('SELECT count(*) AS n FROM payments.ledger_entries WHERE account_id LIKE $1', [`${run}-%`]);
  const ledgerTotal = await one('SELECT sum(amount_cents) AS n FROM payments.ledger_entries WHERE account_id LIKE $1', [
    `${run}-%`,
  ]);
  const balances = await pool.query<{ account_id: string; balance_cents: string }>(
    'SELECT account_id, balance_cents FROM payments.accounts WHERE account_id LIKE $1',
    [`${run}-%`],
  );
  const expectedTotal = [...workload.expectedBalances.values()].reduce((a, b) => a + b, 0);
  const wrongBalances = [...workload.expectedBalances].filter(
    ([account, expected]) => Number(balances.rows.find((r) => r.account_id === account)?.balance_cents) !== expected,
  );

  // The HTTP payments in the ledger: exactly one entry per payment the API created.
  const httpLedger = await pool.query<{ n: number }>(
    `SELECT count(l.id)::int AS n
       FROM payments_api.payments p
       LEFT JOIN payments.ledger_entries l ON l.payment_id = 'pay_' || p.id AND l.account_id = p.account_id
      WHERE p.api_key LIKE $1
      GROUP BY p.id`,
    [`${http.run}-%`],
  );
  const httpEntries = httpLedger.rows.reduce((sum, r) => sum + r.n, 0);
  const httpNotOnce = httpLedger.rows.filter((r) => r.n !== 1).length;

  // The provider's own records: charges made, payments charged more than once, refunds.
  const expectedCharges = workload.expectedCharges + http.paymentsCreated;
  const chargesPerPayment = new Map<string, number>();
  for (const charge of provider.charges.values())
    chargesPerPayment.set(charge.paymentId, (chargesPerPayment.get(charge.paymentId) ?? 0) + 1);
  const providerChargedTwice = [...chargesPerPayment.values()].filter((n) => n > 1).length;
  const providerRetries = [...provider.charges.values()].reduce((sum, c) => sum + c.calls - 1, 0);
  // Messages given up after their charge step completed: each must have been refunded once. Only
  // handler_failed dead letters ran the handler (a key_reuse one shares its id with the processed
  // original, whose charge stands).
  const expectedRefunds = await one(
    `SELECT count(*) AS n FROM oncely.dead_letters d
       JOIN oncely.steps s ON s.scope = d.consumer_group AND s.owner_id = d.message_id
      WHERE d.consumer_group = $1 AND d.reason = 'handler_failed' AND s.name = 'charge' AND s.status = 'completed'`,
    [groupId],
  );

  const deadLettered = {
    invalid_payload: byReason.get('invalid_payload') ?? 0,
    key_reuse: byReason.get('key_reuse') ?? 0,
    handler_failed: byReason.get('handler_failed') ?? 0,
  };
  const problems = [
    processed !== workload.expectedEntries + http.paymentsCreated && 'processed count',
    !http.ok && 'HTTP act',
    (httpEntries !== http.paymentsCreated || httpNotOnce > 0) && 'HTTP ledger entries',
    provider.charges.size !== expectedCharges && 'provider charges',
    providerChargedTwice > 0 && 'provider double charges',
    (provider.refunds.size !== expectedRefunds || expectedRefunds !== REVIEW) && 'refunds',
    deadLettered.handler_failed !== REVIEW && 'handler_failed dead letters',
    entries !== workload.expectedEntries && 'ledger entries',
    ledgerTotal !== expectedTotal && 'ledger total',
    wrongBalances.length > 0 && `${wrongBalances.length} balances`,
    deadLettered.invalid_payload !== POISON && 'invalid_payload dead letters',
    deadLettered.key_reuse !== KEY_REUSE && 'key_reuse dead letters',
    // Each re-sent event is skipped exactly once; the SIGKILLed process may die between a commit
    // and printing its line, so up to one line per partition in flight can be missing from the tally.
    tally.republish + tally.redelivery < workload.duplicatesSent - PARTITIONS && 'duplicates skipped',
  ].filter((p): p is string => typeof p === 'string');

  const { run: _httpRun, ok: _httpOk, paymentsExpected, ...httpFigures } = http;
  return {
    run,
    seed: outcome.seed,
    ok: problems.length === 0,
    problems,
    http: {
      ...httpFigures,
      expected: { executions: paymentsExpected, paymentsCreated: paymentsExpected, wrongAmounts: 0, chargedTwice: 0 },
    },
    consumer: {
      killedAfter: outcome.killedAfter,
      messagesSent: workload.messages.length,
      duplicatesSent: workload.duplicatesSent,
      malformedSent: POISON,
      keyReuseSent: KEY_REUSE,
      processed,
      duplicatesSkipped: { republish: tally.republish, redelivery: tally.redelivery },
      deadLettered,
      ledgerEntries: entries,
      ledgerTotalCents: ledgerTotal,
      accounts: workload.expectedBalances.size,
      accountsRight: workload.expectedBalances.size - wrongBalances.length,
      httpPaymentsInLedger: httpEntries,
      httpPaymentsNotInLedgerOnce: httpNotOnce,
      expected: {
        processed: workload.expectedEntries + http.paymentsCreated,
        deadLettered: { invalid_payload: POISON, key_reuse: KEY_REUSE, handler_failed: REVIEW },
        ledgerEntries: workload.expectedEntries,
        ledgerTotalCents: expectedTotal,
        accountsRight: workload.expectedBalances.size,
        httpPaymentsInLedger: http.paymentsCreated,
        httpPaymentsNotInLedgerOnce: 0,
      },
    },
    provider: {
      charges: provider.charges.size,
      repeatedCalls: providerRetries,
      paymentsChargedTwice: providerChargedTwice,
      refunds: provider.refunds.size,
      expected: { charges: expectedCharges, paymentsChargedTwice: 0, refunds: expectedRefunds },
    },
  };
}

/** The consumer act's table: each figure on one line, with what it should be where that is known. */
function printSummary({ consumer: c, provider: p, ok, problems }: DemoSummary): void {
  const euros = (cents: number): string => `€${(cents / 100).toLocaleString('en-US', { minimumFractionDigits: 2 })}`;
  const rows: [string, string, string][] = [
    ['messages sent', String(c.messagesSent), ''],
    ['  of which duplicates (same message-id)', String(c.duplicatesSent), ''],
    ['  of which malformed', String(c.malformedSent), ''],
    ['  of which key reuse (same id, other amount)', String(c.keyReuseSent), ''],
    ['processed (inbox)', String(c.processed), `expected ${c.expected.processed}`],
    ['duplicates skipped: republish', String(c.duplicatesSkipped.republish), ''],
    ['duplicates skipped: redelivery', String(c.duplicatesSkipped.redelivery), ''],
    [
      'dead-lettered: invalid_payload',
      String(c.deadLettered.invalid_payload),
      `expected ${c.expected.deadLettered.invalid_payload}`,
    ],
    ['dead-lettered: key_reuse', String(c.deadLettered.key_reuse), `expected ${c.expected.deadLettered.key_reuse}`],
    [
      'dead-lettered: handler_failed (held)',
      String(c.deadLettered.handler_failed),
      `expected ${c.expected.deadLettered.handler_failed}`,
    ],
    ['ledger entries', String(c.ledgerEntries), `expected ${c.expected.ledgerEntries}`],
    ['ledger total', euros(c.ledgerTotalCents), `expected ${euros(c.expected.ledgerTotalCents)}`],
    ['account balances right', `${c.accountsRight}/${c.accounts}`, ''],
    ['ledger entries for HTTP payments', String(c.httpPaymentsInLedger), `expected ${c.expected.httpPaymentsInLedger}`],
    ['  HTTP payments not in the ledger exactly once', String(c.httpPaymentsNotInLedgerOnce), 'expected 0'],
    ['provider charges', String(p.charges), `expected ${p.expected.charges}`],
    ['  calls repeated with the same key (deduped)', String(p.repeatedCalls), ''],
    ['  payments charged twice', String(p.paymentsChargedTwice), 'expected 0'],
    ['refunds for dead letters', String(p.refunds), `expected ${p.expected.refunds}`],
  ];
  const width = Math.max(...rows.map((r) => r[0].length));
  console.log('');
  for (const [label, value, note] of rows)
    console.log(`${label.padEnd(width)}  ${value.padStart(14)}  ${note}`.trimEnd());
  console.log('');
  if (!ok) {
    console.log(`WRONG: ${problems.join(', ')} do not match.`);
    return;
  }
  console.log('Ledger correct: every event applied exactly once, every bad one dead-lettered, despite the crash;');
  console.log('every HTTP payment in the ledger once; every payment charged once, every held one refunded.');
}

function optionsOrExit(): DemoOptions | undefined {
  try {
    return demoOptions();
  } catch (error) {
    // A wrong argument: one line saying which, not a stack.
    console.error(`demo: ${error instanceof Error ? error.message : String(error)}`);
    return undefined;
  }
}

const options = optionsOrExit();
process.exitCode =
  options === undefined
    ? 1
    : await main(options).catch((error: unknown) => {
        console.error(error);
        return 1;
      });
