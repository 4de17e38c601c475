/**
 * `npm run replay-demo`: retention and a replay with its safety report, end to end.
 *
 * 1. Starts Kafka and PostgreSQL (KAFKA_BROKERS / DATABASE_URL if set), migrates.
 * 2. A ledger consumer applies wave A (old), then wave B (recent) of payment events, each wave
 *    with one malformed event (dead-lettered). A purge removes wave A's inbox rows (older than the
 *    window, offsets committed in both stores) and raises the horizon.
 * 3. While the consumer is stopped, wave C arrives (never processed), and Kafka deletes the
 *    oldest records of partition 0 (log retention).
 * 4. `planReplay` from offset 0: every class is non-zero (skipped, applied, at risk,
 *    dead-lettered, gone). `runReplay` is refused (at risk), then forced, writing its audit row.
 * 5. The consumer re-reads the range; the ledger is checked against what it must be.
 *
 * The forced run re-applies the at-risk events: that is what "at risk" means. This ledger keys
 * its entries by payment id (a natural key), so the re-applied events change nothing — the
 * condition under which --force is the right call. The demo counts them and exits 1 if the
 * ledger is wrong in any way.
 */
import { randomBytes } from 'node:crypto';

import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { bigint, pgSchema, text } from 'drizzle-orm/pg-core';
import { Kafka, logLevel, type Message } from 'kafkajs';
import {
  createInboxConsumer,
  defineHandler,
  formatReplayPlan,
  isOncelyError,
  migrate,
  planReplay,
  purge,
  replayStatus,
  runReplay,
} from 'oncely';
import { startDevServices } from 'oncely/dev';
import pg from 'pg';
import { pino } from 'pino';
import { z } from 'zod';

const demo = pgSchema('replay_demo');
const entries = demo.table('entries', {
  paymentId: text('payment_id').primaryKey(),
  accountId: text('account_id').notNull(),
  amountCents: bigint('amount_cents', { mode: 'number' }).notNull(),
  messageId: text('message_id').notNull(),
});
const balances = demo.table('balances', {
  accountId: text('account_id').primaryKey(),
  balanceCents: bigint('balance_cents', { mode: 'number' }).notNull(),
});
const DDL = `
CREATE SCHEMA IF NOT EXISTS replay_demo;
CREATE TABLE IF NOT EXISTS replay_demo.entries (
  payment_id text PRIMARY KEY, account_id text NOT NULL, amount_cents bigint NOT NULL, message_id text NOT NULL);
CREATE TABLE IF NOT EXISTS replay_demo.balances (account_id text PRIMARY KEY, balance_cents bigint NOT NULL);`;

const captured = z.object({ paymentId: z.string(), accountId: z.string(), amountCents: z.int().positive() });

const PARTITIONS = 2;
const PER_WAVE = 40;
const ACCOUNTS = 6;

function ledgerHandler(topic: string, reapplied: { count: number }) {
  return defineHandler({
    topic,
    schema: captured,
    async handle(event, ctx) {
      // The payment id is the ledger's natural key: an event applied again inserts nothing.
      const inserted = await ctx.tx
        .insert(entries)
        .values({ ...event, messageId: ctx.messageId })
        .onConflictDoNothing()
        .returning({ paymentId: entries.paymentId });
      if (inserted.length === 0) {
        reapplied.count++;
        return;
      }
      await ctx.tx
        .insert(balances)
        .values({ accountId: event.accountId, balanceCents: event.amountCents })
        .onConflictDoUpdate({
          target: balances.accountId,
          set: { balanceCents: sql`${balances.balanceCents} + ${event.amountCents}` },
        });
    },
  });
}

function wave(run: string, name: string, expected: Map<string, number>): Message[] {
  const messages: Message[] = [];
  for (let n = 0; n < PER_WAVE; n++) {
    const event = {
      paymentId: `${run}-${name}-${n}`,
      accountId: `${run}-acct-${n % ACCOUNTS}`,
      amountCents: 100 + ((n * 7919) % 9_900),
    };
    expected.set(event.accountId, (expected.get(event.accountId) ?? 0) + event.amountCents);
    messages.push({
      key: event.accountId,
      value: JSON.stringify(event),
      headers: { 'message-id': `${run}-${name}-evt-${n}` },
      partition: n % PARTITIONS,
    });
  }
  messages.push({ value: '{"paymentId":', headers: { 'message-id': `${run}-${name}-malformed` }, partition: 1 });
  return messages;
}

async function main(): Promise<void> {
  const run = randomBytes(3).toString('hex');
  // Dead letters are logged at error level; the demo reports them itself.
  const logger = pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'fatal' });
  const services = await startDevServices({ logger });
  const pool = new pg.Pool({ connectionString: services.postgres.url, max: 6 });
  pool.on('error', () => undefined);
  const kafka = new Kafka({ clientId: 'replay-demo', brokers: services.kafka.brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  const producer = kafka.producer();
  const say = (line = ''): boolean => process.stdout.write(`${line}\n`);
  try {
    await migrate(pool);
    await pool.query(DDL);
    await admin.connect();
    await producer.connect();
    const topic = `replay-demo-${run}`;
    const groupId = `ledger-${run}`;
    await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true });
    const db = drizzle(pool);
    const reapplied = { count: 0 };
    const expected = new Map<string, number>();

    /** Runs the ledger consumer until the group's resume points reach the log end, then stops it. */
    const consumeAll = async (): Promise<void> => {
      const consumer = createInboxConsumer({
        kafka,
        db,
        groupId,
        handlers: [ledgerHandler(topic, reapplied)],
        logger,
        consumer: { maxWaitTimeInMs: 100 },
      });
      await consumer.start();
      const ends = await admin.fetchTopicOffsets(topic);
      for (let waited = 0; ; waited += 100) {
        const { rows } = await pool.query<{ partition: number; next_offset: string }>(
          'SELECT partition, next_offset FROM oncely.offsets WHERE consumer_group = $1 AND topic = $2',
          [groupId, topic],
        );
        const at = new Map(rows.map((r) => [r.partition, BigInt(r.next_offset)]));
        if (ends.every((e) => (at.get(e.partition) ?? 0n) >= BigInt(e.high))) break;
        if (waited > 60_000) throw new Error('the consumer did not catch up within a minute');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await consumer.stop();
    };

    say(`Kafka ${services.kafka.brokers.join(',')} · topic ${topic} (${PARTITIONS} partitions) · group ${groupId}`);
    await producer.send({ topic, messages: wave(run, 'A', expected) });
    await consumeAll();
    const windowEnd = new Date();
    await producer.send({ topic, messages: wave(run, 'B', expected) });
    await consumeAll();
    say(`Waves A and B consumed: ${2 * PER_WAVE} events applied, 2 malformed ones dead-lettered.`);

    // The purge's clock is set to just after wave A, with a zero window: wave A is "older than
    // the window", wave B is not. Its offsets are committed in both stores, so its rows may go.
    const purged = await purge({ pool, kafka, groupId, inboxFor: 0, now: () => windowEnd, pauseMs: 0 });
    say(
      `Retention purge: ${purged.inboxDeleted} inbox rows of wave A deleted (the open dead letter's row kept); ` +
        `horizons ${purged.horizons.map((h) => `p${h.partition}≥${h.horizon}`).join(', ')}.`,
    );

    await producer.send({ topic, messages: wave(run, 'C', expected).slice(0, PER_WAVE) });
    await admin.fetchTopicMetadata({ topics: [topic] });
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '3' }] });
    say(`While the group was stopped: wave C (${PER_WAVE} events) arrived; Kafka deleted partition 0 below offset 3.`);

    say();
    say('$ oncely replay plan --group … --topic … --from 0');
    const plan = await planReplay({ pool, kafka, groupId, topic, from: 0 });
    say(formatReplayPlan(plan));

    say();
    say('$ oncely replay run --group … --topic … --from 0');
    try {
      await runReplay({ pool, kafka, groupId, topic, from: 0, requestedBy: 'replay-demo' });
      throw new Error('the run was not refused');
    } catch (error) {
      if (!isOncelyError(error)) throw error;
      say(`refused (${error.code}): ${error.message}`);
    }

    say();
    say('$ oncely replay run --group … --topic … --from 0 --force');
    const forced = await runReplay({ pool, kafka, groupId, topic, from: 0, force: true, requestedBy: 'replay-demo' });
    for (const p of forced.offsets.partitions) say(`  partition ${p.partition}: resume point ${p.from} → ${p.to}`);
    const { rows: audit } = await pool.query(
      `SELECT id, consumer_group, topic, range_from, range_to, ranges, forced, requested_by, created_at,
              report->'totals' AS totals
         FROM oncely.replays WHERE id = $1`,
      [forced.replayId],
    );
    say(`Audit row oncely.replays: ${JSON.stringify(audit[0])}`);

    await consumeAll();
    const [status] = await replayStatus(pool, { groupId });
    say();
    say(`$ oncely status  (replay ${status?.id})`);
    for (const p of status?.partitions ?? []) {
      say(
        `  partition ${p.partition}: at ${p.position} of ${p.start}–${p.end}; ${p.skippedSoFar} skipped as duplicates, ${p.appliedSoFar} applied`,
      );
    }
    say(`  completed: ${status?.completedAt === null ? 'no' : 'yes'}`);

    const { rows: ledger } = await pool.query<{ account_id: string; balance_cents: string }>(
      'SELECT account_id, balance_cents FROM replay_demo.balances WHERE account_id = ANY($1)',
      [[...expected.keys()]],
    );
    const { rows: counted } = await pool.query<{ n: string }>(
      'SELECT count(*) AS n FROM replay_demo.entries WHERE payment_id LIKE $1',
      [`${run}-%`],
    );
    const wrong = ledger.filter((r) => Number(r.balance_cents) !== expected.get(r.account_id));
    const entriesOk = Number(counted[0]?.n) === 3 * PER_WAVE;
    say('');
    say(
      `Ledger: ${counted[0]?.n} entries (expected ${3 * PER_WAVE}), ${ledger.length} accounts, ` +
        `${wrong.length} balances wrong. At-risk events re-run by the forced replay: ${reapplied.count}, ` +
        'each absorbed by the ledger key (payment id).',
    );
    if (!entriesOk || wrong.length > 0) {
      say('LEDGER WRONG');
      process.exitCode = 1;
    } else {
      say('Ledger exactly right.');
    }
  } finally {
    await producer.disconnect().catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
    await pool.end();
    await services.stop();
  }
}

await main();
