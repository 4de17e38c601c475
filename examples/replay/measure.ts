/**
 * `npx tsx examples/replay/measure.ts`: two measurements for the replay/retention issue.
 *
 * 1. Plan time: PLAN_MESSAGES (default 1,000,000) messages on 4 partitions, 80 % of them already
 *    in the inbox, part of partition 0 below a horizon; times `planReplay` over all of them.
 * 2. Claim latency during a purge: PURGE_ROWS (default 5,000,000) old inbox rows of a group; a
 *    running consumer of that group processes CLAIM_MESSAGES messages without a purge, then as many
 *    again while `purge()` deletes those rows; per-message processing time (claim, handler,
 *    commit: the `message:processed` durationMs) p50/p99 for both.
 *
 * Needs KAFKA_BROKERS and DATABASE_URL (a scratch database: it migrates it and leaves data behind).
 */
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka, logLevel } from 'kafkajs';
import { createInboxConsumer, defineHandler, migrate, planReplay, purge } from 'oncely';
import pg from 'pg';
import { pino } from 'pino';

const PLAN_MESSAGES = Number(process.env.PLAN_MESSAGES ?? 1_000_000);
const PURGE_ROWS = Number(process.env.PURGE_ROWS ?? 5_000_000);
const CLAIM_MESSAGES = Number(process.env.CLAIM_MESSAGES ?? 3_000);
const run = Date.now().toString(36);

const brokers = (process.env.KAFKA_BROKERS ?? '').split(',');
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 6 });
pool.on('error', () => undefined);
const kafka = new Kafka({ clientId: 'replay-measure', brokers, logLevel: logLevel.NOTHING });
const admin = kafka.admin();
const producer = kafka.producer();
const say = (line: string): boolean => process.stdout.write(`${line}\n`);

async function produce(topic: string, count: number, partitions: number, prefix: string): Promise<void> {
  for (let start = 0; start < count; start += 20_000) {
    const messages = [];
    for (let i = start; i < Math.min(count, start + 20_000); i++) {
      messages.push({ value: `{"i":${i}}`, headers: { 'message-id': `${prefix}-${i}` }, partition: i % partitions });
    }
    await producer.send({ topic, messages, acks: 1 });
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

async function measurePlan(): Promise<void> {
  const topic = `measure-plan-${run}`;
  const groupId = `measure-plan-${run}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });
  let t = Date.now();
  await produce(topic, PLAN_MESSAGES, 4, 'pm');
  say(`produced ${PLAN_MESSAGES} messages in ${Date.now() - t} ms`);
  t = Date.now();
  // Message i went to partition i % 4 at offset floor(i / 4); 80 % of them are in the inbox.
  await pool.query(
    `INSERT INTO oncely.inbox (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at)
     SELECT $1, 'pm-' || i, $2, i % 4, i / 4, sha256(int8send(i)), 'processed', 1, now()
       FROM generate_series(0, $3::bigint - 1) AS i WHERE i % 5 <> 0`,
    [groupId, topic, PLAN_MESSAGES],
  );
  await pool.query(
    `INSERT INTO oncely.inbox_horizons (consumer_group, topic, partition, horizon_offset) VALUES ($1, $2, 0, $3)`,
    [groupId, topic, Math.floor(PLAN_MESSAGES / 16)],
  );
  await pool.query('ANALYZE oncely.inbox');
  say(`inbox rows inserted in ${Date.now() - t} ms`);
  let shown = Date.now();
  const plan = await planReplay({
    pool,
    kafka,
    groupId,
    topic,
    from: 'earliest',
    onProgress: (read, total) => {
      if (Date.now() - shown < 5_000) return;
      shown = Date.now();
      say(`  read ${read} of ${total} offsets`);
    },
  });
  say(`plan of ${plan.totals.messages} messages: ${plan.durationMs} ms (${JSON.stringify(plan.totals)})`);
}

async function measureClaims(): Promise<void> {
  const oldTopic = `measure-old-${run}`;
  const topic = `measure-claims-${run}`;
  const groupId = `measure-claims-${run}`;
  await admin.createTopics({
    topics: [
      { topic: oldTopic, numPartitions: 1 },
      { topic, numPartitions: 1 },
    ],
    waitForLeaders: true,
  });
  let t = Date.now();
  await pool.query(
    `INSERT INTO oncely.inbox (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at, processed_at)
     SELECT $1, 'old-' || i, $2, 0, i, sha256(int8send(i)), 'processed', 1,
            now() - interval '30 days', now() - interval '30 days' + i * interval '1 ms'
       FROM generate_series(0, $3::bigint - 1) AS i`,
    [groupId, oldTopic, PURGE_ROWS],
  );
  await pool.query(
    'INSERT INTO oncely.offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 0, $3)',
    [groupId, oldTopic, PURGE_ROWS],
  );
  // Kafka's committed offset of the old partition: everything below it is done.
  await admin.setOffsets({ groupId, topic: oldTopic, partitions: [{ partition: 0, offset: String(PURGE_ROWS) }] });
  await pool.query('ANALYZE oncely.inbox');
  say(`${PURGE_ROWS} old inbox rows inserted in ${Date.now() - t} ms`);
  await pool.query('CREATE TABLE IF NOT EXISTS measure_effects (message_id text, i bigint)');

  const durations: number[] = [];
  const consumer = createInboxConsumer({
    kafka,
    db: drizzle(pool),
    groupId,
    handlers: [
      defineHandler({
        topic,
        async handle(event, ctx) {
          await ctx.tx.execute(
            sql`INSERT INTO measure_effects VALUES (${ctx.messageId}, ${(event as { i: number }).i})`,
          );
        },
      }),
    ],
    logger: pino({ level: 'fatal' }),
    consumer: { maxWaitTimeInMs: 100 },
  });
  consumer.on('message:processed', (e) => durations.push(e.durationMs));
  await consumer.start();

  const phase = async (name: string, prefix: string): Promise<number[]> => {
    durations.length = 0;
    await produce(topic, CLAIM_MESSAGES, 1, prefix);
    while (durations.length < CLAIM_MESSAGES) await new Promise((resolve) => setTimeout(resolve, 50));
    const taken = [...durations];
    say(
      `${name}: ${taken.length} messages, p50 ${percentile(taken, 50).toFixed(1)} ms, p99 ${percentile(taken, 99).toFixed(1)} ms, max ${Math.max(...taken).toFixed(1)} ms`,
    );
    return taken;
  };
  await phase('claims, no purge', `base-${run}`);
  t = Date.now();
  let purgeDone = false;
  const purging = purge({ pool, kafka, groupId, inboxFor: 7 * 86_400_000 }).then((result) => {
    purgeDone = true;
    say(`purge: ${result.inboxDeleted} rows in ${result.batches} batches, ${Date.now() - t} ms`);
  });
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  await phase('claims during the purge', `during-${run}`);
  say(`purge still running at the end of that phase: ${!purgeDone}`);
  await purging;
  await consumer.stop();
}

try {
  await migrate(pool);
  await admin.connect();
  await producer.connect();
  if (process.env.SKIP_PLAN !== '1') await measurePlan();
  if (process.env.SKIP_CLAIMS !== '1') await measureClaims();
} finally {
  await producer.disconnect();
  await admin.disconnect();
  await pool.end();
}
