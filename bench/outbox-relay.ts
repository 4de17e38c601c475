/**
 * `npx tsx bench/outbox-relay.ts`: the outbox relay's throughput — committed outbox rows to
 * acknowledged-and-marked — against a raw kafkajs `sendBatch` of the same events (idempotent
 * producer, acks all, the relay's batch size), in the same run, on the same broker.
 *
 * It uses KAFKA_BROKERS / DATABASE_URL when set (otherwise startDevServices), a fresh database and
 * two fresh 4-partition topics. OUTBOX_BENCH_EVENTS (default 20,000) ~200-byte JSON events over 64
 * keys are inserted into the outbox first (timed separately: that cost is the publisher's), then a
 * relay is started and timed until every row is marked sent. Target: relay/raw ≥ 0.7.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';

import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';

import { startDevServices } from '../src/dev/index.js';
import { createOutboxRelay, migrate } from '../src/index.js';
import { outboxRow } from '../src/outbox/publish.js';
import { INSERT_OUTBOX_SQL, insertOutboxValues } from '../src/outbox/store.js';

const EVENTS = Number(process.env.OUTBOX_BENCH_EVENTS ?? 20_000);
const BATCH = 500;
const KEYS = 64;

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

const services = await startDevServices();
const database = `oncely_outbox_bench_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
const admin = new pg.Client({ connectionString: services.postgres.url });
await admin.connect();
await admin.query(`CREATE DATABASE ${database}`);
const url = new URL(services.postgres.url);
url.pathname = `/${database}`;
const pool = new pg.Pool({ connectionString: url.toString(), max: 4 });
const kafka = new Kafka({ clientId: 'outbox-bench', brokers: services.kafka.brokers, logLevel: logLevel.NOTHING });
const kafkaAdmin = kafka.admin();

try {
  await migrate(pool);
  await kafkaAdmin.connect();
  const [relayTopic, rawTopic] = [`bench-relay-${Date.now()}`, `bench-raw-${Date.now()}`];
  await kafkaAdmin.createTopics({
    topics: [relayTopic, rawTopic].map((topic) => ({ topic, numPartitions: 4 })),
    waitForLeaders: true,
  });
  const filler = randomBytes(60).toString('hex');
  const events = Array.from({ length: EVENTS }, (_, i) => ({
    key: `acct-${i % KEYS}`,
    value: { paymentId: `p-${i}`, accountId: `acct-${i % KEYS}`, amountCents: 100 + (i % 900), note: filler },
  }));

  // Raw: the same events, the same producer settings, batches of the relay's size.
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const rawStart = performance.now();
  for (let i = 0; i < EVENTS; i += BATCH) {
    await producer.sendBatch({
      acks: -1,
      topicMessages: [
        {
          topic: rawTopic,
          messages: events.slice(i, i + BATCH).map((e) => {
            const row = outboxRow({ topic: rawTopic, key: e.key, value: e.value });
            return { key: row.key, value: row.value, headers: { 'message-id': row.messageId } };
          }),
        },
      ],
    });
  }
  const rawMs = performance.now() - rawStart;
  await producer.disconnect();

  // The outbox: insert committed rows (batches of 500 per transaction), then time the relay alone.
  const insertStart = performance.now();
  for (let i = 0; i < EVENTS; i += BATCH) {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      for (const e of events.slice(i, i + BATCH)) {
        await client.query(INSERT_OUTBOX_SQL, insertOutboxValues(outboxRow({ topic: relayTopic, ...e })));
      }
      await client.query('COMMIT');
    } finally {
      client.release();
    }
  }
  const insertMs = performance.now() - insertStart;

  const relay = createOutboxRelay({ db: pool, kafka, batchSize: BATCH, logger: pino({ level: 'warn' }) });
  const relayStart = performance.now();
  await relay.start();
  for (;;) {
    const { rows } = await pool.query<{ n: string }>(
      "SELECT count(*) AS n FROM oncely.outbox WHERE status = 'pending'",
    );
    if (Number(rows[0]?.n) === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const relayMs = performance.now() - relayStart;
  await relay.stop();

  const rate = (ms: number): number => Math.round((EVENTS / ms) * 1000);
  const result = {
    events: EVENTS,
    batch: BATCH,
    rawEventsPerSecond: rate(rawMs),
    relayEventsPerSecond: rate(relayMs),
    relayToRaw: Number((rawMs / relayMs).toFixed(2)),
    outboxInsertEventsPerSecond: rate(insertMs),
  };
  log(
    `raw sendBatch ${result.rawEventsPerSecond} ev/s · relay ${result.relayEventsPerSecond} ev/s · ` +
      `relay/raw ${result.relayToRaw} (target ≥ 0.7) · outbox inserts ${result.outboxInsertEventsPerSecond} ev/s`,
  );
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await kafkaAdmin.disconnect().catch(() => undefined);
  await pool.end();
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin.end();
  await services.stop();
}
