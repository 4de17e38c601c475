/**
 * The variants themselves. Each consumes the whole topic with its own consumer group, measures
 * itself with a Meter, stops, and checks its own result.
 *
 * This file runs compiled (bench/dist/, built by `npm run bench`) under plain Node, and imports
 * oncely by its package name, which resolves to the built dist/: the oncely variants run the code
 * a user installs, not the TypeScript source through a loader.
 */
import { performance } from 'node:perf_hooks';

import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import {
  type Consumer,
  type EachBatchPayload,
  type EachMessagePayload,
  type IHeaders,
  Kafka,
  type KafkaMessage,
  logLevel,
} from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import {
  type AnyHandlerDefinition,
  createInboxConsumer,
  defineBatchHandler,
  defineHandler,
  type InboxConsumer,
} from 'oncely';
import { Meter } from './meter.js';
import type { OutcomeCounts, VariantConfig, VariantResult } from './protocol.js';
import {
  BENCH_SCHEMA,
  type LedgerSummary,
  type LedgerTable,
  ledgerTable,
  PARTITIONS,
  paymentCaptured,
  summarizeLedger,
} from './workload.js';

/** Partitions handled at once, in every variant, so they compare fairly. */
const CONCURRENCY = PARTITIONS;
/** Messages per transaction in the batch variants. */
const CHUNK = 500;
/**
 * The ledger rows of a chunk as three array parameters. B0 and the oncely batch variants insert
 * with this same statement, so B/B0 measures what the inbox costs and not how rows are sent.
 */
const UNNEST_LEDGER_ROWS = 'SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])';
/** Pool size for every variant: concurrency plus headroom (oncely needs max > concurrency). */
const POOL_MAX = 8;
/** Lanes per partition of the lane variants (none for the others). */
const LANES: Partial<Record<VariantConfig['variant'], number>> = { GK: 8, SK: 16 };
/**
 * A lane variant holds a connection per lane of every partition, plus a few for the steps' own
 * short transactions (each step records its result on a connection of its own).
 */
function poolMaxOf(variant: VariantConfig['variant']): number {
  const lanes = LANES[variant];
  return lanes === undefined ? POOL_MAX : CONCURRENCY * lanes + 16;
}

interface VariantContext {
  readonly config: VariantConfig;
  /** S and SK: the payment provider their handler calls. */
  readonly provider: FakeProvider;
  readonly kafka: Kafka;
  readonly pool: pg.Pool;
  readonly meter: Meter;
  readonly counts: OutcomeCounts;
  readonly ledger: LedgerTable;
}

/** A started variant: how to stop it once every outcome is in. */
interface Running {
  stop(): Promise<void>;
}

export async function runVariant(config: VariantConfig): Promise<VariantResult> {
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: poolMaxOf(config.variant) });
  pool.on('error', () => undefined); // an idle connection closing at shutdown is not a failure
  const kafka = new Kafka({ clientId: `bench-${config.variant}`, brokers: config.brokers, logLevel: logLevel.NOTHING });
  const context: VariantContext = {
    config,
    kafka,
    pool,
    meter: new Meter(config.endOffsets),
    counts: { processed: 0, duplicates: 0, redeliveries: 0, republishes: 0, deadLettered: 0 },
    ledger: ledgerTable(config.ledger),
    provider: new FakeProvider(config.providerLatencyMs ?? 20),
  };
  const problems: string[] = [];
  try {
    const running = await start(context);
    try {
      // D counts duplicates, every other variant its processed messages: either way one outcome each.
      await context.meter.until(config.events, config.idleTimeoutMs);
    } catch (error) {
      problems.push(describe(error));
    }
    const measurement = context.meter.summary();
    await running.stop();
    const ledger = config.variant === 'R' ? undefined : await summarizeLedger(pool, config.ledger);
    problems.push(...(await check(context, ledger)));
    return { variant: config.variant, ...measurement, counts: context.counts, ledger, problems };
  } finally {
    await pool.end();
  }
}

function start(context: VariantContext): Promise<Running> {
  switch (context.config.variant) {
    case 'R':
      return runKafkajs(context, rawBatch(context));
    case 'B0':
      return runKafkajs(context, handWrittenBatch(context, undefined));
    case 'B1':
      return runKafkajs(context, handWrittenBatch(context, inboxOf(context.config)));
    case 'P0':
      return runKafkajs(context, handWrittenPerMessage(context));
    case 'P1':
      return runHandWrittenInbox(context, inboxOf(context.config));
    case 'P':
    case 'G':
    case 'GK':
      return runOncely(context, oncelyPerMessage(context));
    case 'S':
    case 'SK':
      return runOncely(context, oncelyWithStep(context));
    case 'G0':
      return runOncely(context, oncelyPerMessage(context, { writes: false }));
    case 'B':
    case 'B-metrics':
    case 'D':
    case 'B-full':
      return runOncely(context, oncelyBatch(context));
  }
}

// ---------------------------------------------------------------------------------------------
// Plain kafkajs: R, B0, B1, P0, P1

async function runKafkajs(
  context: VariantContext,
  eachBatch: (payload: EachBatchPayload) => Promise<void>,
): Promise<Running> {
  const { kafka, config, meter } = context;
  const consumer: Consumer = kafka.consumer({ groupId: config.groupId });
  await consumer.connect();
  await consumer.subscribe({ topic: config.topic, fromBeginning: true });
  await consumer.run({
    partitionsConsumedConcurrently: CONCURRENCY,
    // Offsets are resolved by hand after each commit, as a careful hand-written consumer does.
    eachBatchAutoResolve: false,
    eachBatch: async (payload) => {
      meter.delivered(payload.batch.partition, offsetsOf(payload.batch.messages));
      await eachBatch(payload);
    },
  });
  return { stop: () => consumer.disconnect() };
}

/** R: what kafkajs alone costs — count each message, resolve, no database. */
function rawBatch({ meter, counts }: VariantContext) {
  return async (payload: EachBatchPayload): Promise<void> => {
    const { batch } = payload;
    for (const message of batch.messages) {
      counts.processed += 1;
      meter.outcome(batch.partition, message.offset);
    }
    payload.resolveOffset(batch.lastOffset());
    await payload.heartbeat();
  };
}

/**
 * B0: the fastest honest hand-written consumer — per chunk of 500, BEGIN, one INSERT of all rows
 * through unnest (three array parameters instead of 1,500 scalars), COMMIT, resolve. It validates
 * with the same zod schema as the oncely variants, so the comparison isolates what the inbox costs.
 *
 * B1 (`inbox` given): what a team writes when it adds an inbox to B0 — in the same transaction,
 * one more unnest INSERT of the chunk's ids into its inbox table, ON CONFLICT DO NOTHING RETURNING
 * the ids it inserted, and the ledger rows of those ids only: a message already in the inbox is
 * a duplicate and changes nothing. The ledger statement is B0's, so B1 − B0 is the inbox alone.
 */
function handWrittenBatch({ meter, counts, pool, config }: VariantContext, inbox: string | undefined) {
  const insert = `INSERT INTO ${BENCH_SCHEMA}.${config.ledger} (message_id, account_id, amount_cents)
                  ${UNNEST_LEDGER_ROWS}`;
  const claim = `INSERT INTO ${BENCH_SCHEMA}.${inbox ?? ''} (consumer_group, message_id)
                 SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING message_id`;
  return async (payload: EachBatchPayload): Promise<void> => {
    const { batch } = payload;
    for (let start = 0; start < batch.messages.length; start += CHUNK) {
      if (!payload.isRunning() || payload.isStale()) return;
      const chunk = batch.messages.slice(start, start + CHUNK);
      let ids: string[] = [];
      let accounts: string[] = [];
      let amounts: number[] = [];
      for (const message of chunk) {
        const event = paymentCaptured.parse(JSON.parse(message.value?.toString() ?? 'null'));
        ids.push(messageIdOf(message.headers));
        accounts.push(event.accountId);
        amounts.push(event.amountCents);
      }
      const started = performance.now();
      let fresh = ids.length;
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        if (inbox !== undefined) {
          const { rows } = await client.query<{ message_id: string }>(claim, [config.groupId, ids]);
          if (rows.length < ids.length) {
            // Some were processed before: keep only the rows of the ids this statement inserted.
            const inserted = new Set(rows.map((r) => r.message_id));
            const keep = ids.map((id) => inserted.has(id));
            ids = ids.filter((_, i) => keep[i]);
            accounts = accounts.filter((_, i) => keep[i]);
            amounts = amounts.filter((_, i) => keep[i]);
            fresh = ids.length;
          }
        }
        if (fresh > 0) await client.query(insert, [ids, accounts, amounts]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      } finally {
        client.release();
      }
      const workMs = performance.now() - started;
      counts.processed += fresh;
      counts.duplicates += chunk.length - fresh;
      for (const message of chunk) meter.outcome(batch.partition, message.offset, workMs);
      // Committed: Kafka may move past the chunk now.
      const last = chunk.at(-1);
      if (last !== undefined) payload.resolveOffset(last.offset);
      await payload.heartbeat();
    }
  };
}

/**
 * P0: one transaction per message, as a typical drizzle user writes it — `db.transaction()`
 * around the same insert the oncely handler makes, then resolve the offset.
 */
function handWrittenPerMessage({ meter, counts, pool, ledger }: VariantContext) {
  const db = drizzle(pool);
  return async (payload: EachBatchPayload): Promise<void> => {
    const { batch } = payload;
    for (const message of batch.messages) {
      if (!payload.isRunning() || payload.isStale()) return;
      const started = performance.now();
      const event = paymentCaptured.parse(JSON.parse(message.value?.toString() ?? 'null'));
      const messageId = messageIdOf(message.headers);
      await db.transaction(async (tx) => {
        await tx.insert(ledger).values({ messageId, accountId: event.accountId, amountCents: event.amountCents });
      });
      counts.processed += 1;
      meter.outcome(batch.partition, message.offset, performance.now() - started);
      // Committed: Kafka may move past this message now.
      payload.resolveOffset(message.offset);
      await payload.heartbeat();
    }
  };
}

/**
 * P1: the per-message inbox of the blog posts about the pattern — kafkajs `eachMessage` with its
 * auto-commit, and per message one transaction: BEGIN, insert the id into the inbox ON CONFLICT
 * DO NOTHING, the ledger insert only when that inserted a row (otherwise the message is a
 * duplicate), COMMIT. kafkajs resolves each message's offset when eachMessage returns and commits
 * them after each fetched batch.
 */
async function runHandWrittenInbox(
  { kafka, config, meter, counts, pool }: VariantContext,
  inbox: string,
): Promise<Running> {
  const claim = `INSERT INTO ${BENCH_SCHEMA}.${inbox} (consumer_group, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`;
  const insert = `INSERT INTO ${BENCH_SCHEMA}.${config.ledger} (message_id, account_id, amount_cents) VALUES ($1, $2, $3)`;
  const consumer: Consumer = kafka.consumer({ groupId: config.groupId });
  await consumer.connect();
  await consumer.subscribe({ topic: config.topic, fromBeginning: true });
  await consumer.run({
    partitionsConsumedConcurrently: CONCURRENCY,
    eachMessage: async ({ partition, message }: EachMessagePayload) => {
      // eachMessage hands over one message at a time: its delivery is this call.
      meter.delivered(partition, [message.offset]);
      const started = performance.now();
      const event = paymentCaptured.parse(JSON.parse(message.value?.toString() ?? 'null'));
      const messageId = messageIdOf(message.headers);
      let fresh = false;
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const claimed = await client.query(claim, [config.groupId, messageId]);
        fresh = claimed.rowCount === 1;
        if (fresh) await client.query(insert, [messageId, event.accountId, event.amountCents]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      } finally {
        client.release();
      }
      if (fresh) counts.processed += 1;
      else counts.duplicates += 1;
      meter.outcome(partition, message.offset, performance.now() - started);
    },
  });
  return { stop: () => consumer.disconnect() };
}

function inboxOf(config: VariantConfig): string {
  if (config.inbox === undefined) throw new Error(`${config.variant} needs its inbox table`);
  return config.inbox;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function messageIdOf(headers: IHeaders | undefined): string {
  const value = headers?.['message-id'];
  if (value === undefined || Array.isArray(value)) throw new Error('message without a single message-id header');
  return value.toString();
}

function offsetsOf(messages: readonly KafkaMessage[]): string[] {
  return messages.map((m) => m.offset);
}

// ---------------------------------------------------------------------------------------------
// oncely: P, G, B, B-metrics, D, B-full

function oncelyPerMessage({ config, ledger }: VariantContext, { writes = true } = {}): AnyHandlerDefinition {
  return defineHandler({
    topic: config.topic,
    schema: paymentCaptured,
    async handle(event, ctx) {
      // G0: the message is still claimed, decoded, validated and handed over; only the handler's
      // own statement is left out, so G0 shows what the rest of a grouped message costs.
      if (!writes) return;
      await ctx.tx
        .insert(ledger)
        .values({ messageId: ctx.messageId, accountId: event.accountId, amountCents: event.amountCents });
    },
  });
}

/**
 * A payment provider in the variant's process: each charge takes `latencyMs` (a card network's
 * round trip, without the CPU of an HTTP server on this machine) and is kept by idempotency key,
 * as a real provider keeps it, so the check can count each payment charged once.
 */
class FakeProvider {
  readonly charges = new Map<string, number>();
  calls = 0;

  constructor(private readonly latencyMs: number) {}

  async charge(idempotencyKey: string, amountCents: number): Promise<{ id: string }> {
    this.calls += 1;
    await new Promise((resolve) => setTimeout(resolve, this.latencyMs));
    if (!this.charges.has(idempotencyKey)) this.charges.set(idempotencyKey, amountCents);
    return { id: `ch_${this.charges.size}` };
  }
}

/** S, SK: charge through ctx.step (the provider's 20 ms, then the step's own record), then the ledger row. */
function oncelyWithStep({ config, ledger, provider }: VariantContext): AnyHandlerDefinition {
  return defineHandler({
    topic: config.topic,
    schema: paymentCaptured,
    async handle(event, ctx) {
      await ctx.step('charge', ({ idempotencyKey }) => provider.charge(idempotencyKey, event.amountCents));
      await ctx.tx
        .insert(ledger)
        .values({ messageId: ctx.messageId, accountId: event.accountId, amountCents: event.amountCents });
    },
  });
}

function oncelyBatch({ config }: VariantContext): AnyHandlerDefinition {
  const table = sql.raw(`${BENCH_SCHEMA}.${config.ledger}`);
  return defineBatchHandler({
    topic: config.topic,
    schema: paymentCaptured,
    async handleBatch(events, ctx) {
      // The same unnest insert as B0 (see UNNEST_LEDGER_ROWS), through the handler's transaction.
      const ids = sql.param(events.map((e) => e.messageId));
      const accounts = sql.param(events.map((e) => e.event.accountId));
      const amounts = sql.param(events.map((e) => e.event.amountCents));
      await ctx.tx.execute(sql`
        INSERT INTO ${table} (message_id, account_id, amount_cents)
        SELECT * FROM unnest(${ids}::text[], ${accounts}::text[], ${amounts}::bigint[])`);
    },
  });
}

async function runOncely(context: VariantContext, handler: AnyHandlerDefinition): Promise<Running> {
  const { config, pool, meter, counts } = context;
  const registry = config.variant === 'B-metrics' ? new Registry() : undefined;
  const consumer: InboxConsumer = createInboxConsumer({
    kafka: observingDeliveries(context.kafka, meter),
    db: drizzle(pool),
    groupId: config.groupId,
    handlers: handler.kind === 'batch' ? [handler] : [handler],
    mode: handler.kind,
    ...(handler.kind === 'batch' ? { batchSize: CHUNK } : {}),
    // P is the per-message mode without commit grouping; G leaves the option at its default.
    ...(config.variant === 'P' ? { maxMessagesPerTransaction: 1 } : {}),
    // GK and SK: lanes by the Kafka key (the account id).
    ...(LANES[config.variant] === undefined ? {} : { lanes: LANES[config.variant] }),
    concurrency: CONCURRENCY,
    // stderr: stdout carries the result line.
    logger: pino({ level: 'warn' }, pino.destination(2)),
    ...(registry === undefined ? {} : { metrics: { registry } }),
  });
  // Scraped as Prometheus would (every 15 s), so the scrape-time lag and dead-letter reads count too.
  const scrapes = registry === undefined ? undefined : setInterval(() => void registry.metrics(), 15_000);
  // Every outcome event is emitted right after the commit that recorded it.
  consumer.on('message:processed', (e) => {
    counts.processed += 1;
    meter.outcome(e.partition, e.offset, e.durationMs);
  });
  consumer.on('message:duplicate', (e) => {
    counts.duplicates += 1;
    if (e.duplicateClass === 'redelivery') counts.redeliveries += 1;
    else counts.republishes += 1;
    const workMs = (e as { durationMs?: unknown }).durationMs;
    meter.outcome(e.partition, e.offset, typeof workMs === 'number' ? workMs : undefined);
  });
  // Every event of this workload is valid and every handler succeeds: a retry or a dead letter
  // means the variant is broken, and the run fails now instead of after the retries' backoff.
  consumer.on('message:dead-lettered', (e) => {
    counts.deadLettered += 1;
    meter.outcome(e.partition, e.offset);
    meter.fail(new Error(`dead-lettered ${e.topic}/${e.partition}/${e.offset} (${e.reason})`));
  });
  consumer.on('message:retrying', (e) => {
    meter.fail(new Error(`handler failed at ${e.topic}/${e.partition}/${e.offset}: ${describe(e.error)}`));
  });
  await consumer.start();
  return {
    stop: () => {
      clearInterval(scrapes);
      return consumer.stop();
    },
  };
}

/**
 * The Kafka client oncely is given, with one addition for measuring: every batch kafkajs hands to
 * oncely's eachBatch is noted first, so delivery latency means the same as in the kafkajs variants.
 */
function observingDeliveries(kafka: Kafka, meter: Meter): Kafka {
  const makeConsumer = kafka.consumer.bind(kafka);
  kafka.consumer = (consumerConfig) => {
    const consumer = makeConsumer(consumerConfig);
    const run = consumer.run.bind(consumer);
    consumer.run = (runConfig) => {
      const eachBatch = runConfig?.eachBatch;
      if (eachBatch === undefined) return run(runConfig);
      return run({
        ...runConfig,
        eachBatch: (payload) => {
          meter.delivered(payload.batch.partition, offsetsOf(payload.batch.messages));
          return eachBatch(payload);
        },
      });
    };
    return consumer;
  };
  return kafka;
}

// ---------------------------------------------------------------------------------------------
// Checks: the run fails when one does not hold

async function check(context: VariantContext, ledger: LedgerSummary | undefined): Promise<string[]> {
  const { config, counts, pool } = context;
  const n = config.events;
  const problems: string[] = [];
  const expect = (what: string, actual: number, expected: number): void => {
    if (actual !== expected) problems.push(`${what}: ${actual}, expected ${expected}`);
  };
  if (config.variant === 'R') {
    expect('messages counted', counts.processed, n);
    return problems;
  }
  if (ledger === undefined) return ['no ledger summary'];
  if (config.variant === 'D') {
    const before = config.ledgerBefore;
    if (before === undefined) return ['D needs the ledger as B left it'];
    expect('ledger rows after the replay', ledger.rows, before.rows);
    expect('distinct message ids after the replay', ledger.distinctIds, before.distinctIds);
    expect('ledger total after the replay (cents)', ledger.totalCents, before.totalCents);
    expect('messages processed in the replay', counts.processed, 0);
    expect('duplicates skipped in the replay', counts.duplicates, n);
    expect('dead letters in the replay', counts.deadLettered, 0);
  } else if (config.variant === 'S' || config.variant === 'SK') {
    expect('ledger rows', ledger.rows, n);
    expect('distinct message ids in the ledger', ledger.distinctIds, n);
    expect('ledger total (cents)', ledger.totalCents, config.totalCents);
    expect('messages processed', counts.processed, n);
    expect('payments charged at the provider', context.provider.charges.size, n);
    expect('provider calls (each payment once)', context.provider.calls, n);
    expect('dead letters', counts.deadLettered, 0);
  } else if (config.variant === 'G0') {
    expect('ledger rows (G0 writes none)', ledger.rows, 0);
    expect('messages processed', counts.processed, n);
    expect('duplicates', counts.duplicates, 0);
    expect('dead letters', counts.deadLettered, 0);
  } else {
    expect('ledger rows', ledger.rows, n);
    expect('distinct message ids in the ledger', ledger.distinctIds, n);
    expect('ledger total (cents)', ledger.totalCents, config.totalCents);
    expect('messages processed', counts.processed, n);
    expect('duplicates', counts.duplicates, 0);
    expect('dead letters', counts.deadLettered, 0);
  }
  if (config.inbox !== undefined) {
    // The hand-written inboxes: one row per message of the group, as oncely's.
    const { rows } = await pool.query<{ total: string }>(
      `SELECT count(*) AS total FROM ${BENCH_SCHEMA}.${config.inbox} WHERE consumer_group = $1`,
      [config.groupId],
    );
    expect('hand-written inbox rows of the group', Number(rows[0]?.total ?? 0), n);
  } else if (config.variant !== 'B0' && config.variant !== 'P0') {
    const { rows } = await pool.query<{ processed: string; total: string }>(
      `SELECT count(*) FILTER (WHERE status = 'processed') AS processed, count(*) AS total
         FROM oncely.inbox WHERE consumer_group = $1`,
      [config.groupId],
    );
    expect('inbox rows of the group', Number(rows[0]?.total ?? 0), n);
    expect('processed inbox rows of the group', Number(rows[0]?.processed ?? 0), n);
  }
  return problems;
}
