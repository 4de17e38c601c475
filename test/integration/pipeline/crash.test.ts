import { describe, expect, it } from 'vitest';

import pg from 'pg';

import { spawnFixture } from '../../support/child.js';
import { testPool } from '../../support/settings.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

describe('G1, G3, G5: crashes leave no partial effect and nothing applied twice', () => {
  it('G1 G3 G5: a consumer SIGKILLed between the database commit and the Kafka offset commit applies nothing twice after restart', async () => {
    const topic = await env.createTopic('crash-kill');
    const groupId = env.groupId('kill');
    const total = 300;
    await env.produce(
      topic,
      Array.from({ length: total }, (_, i) => jsonMessage(`k-${i}`, { i })),
    );

    // ~10 ms per message: the first batch (all 300) takes seconds, and Kafka's offset is committed
    // only after a batch, so a kill part-way lands after many database commits but before the
    // Kafka commit that would cover them.
    const child = spawnFixture('effect-consumer.ts', {
      KAFKA_BROKERS: env.brokers.join(','),
      DATABASE_URL: env.databaseUrl,
      TOPIC: topic,
      GROUP_ID: groupId,
      HANDLER_DELAY_MS: '10',
    });
    await child.waitForLine((l) => l.event === 'processed' && Number(l.offset) >= 60);
    await child.kill('SIGKILL');

    const recorded = (await env.offsetsOf(groupId, topic)).get(0) ?? 0n;
    const committed = (await env.committedOffsetsOf(groupId, topic)).get(0) ?? -1n;
    const appliedBeforeRestart = (await env.effectsOf(topic)).length;
    // The precondition this test is about: outcomes committed in PostgreSQL that Kafka never heard of.
    expect(recorded).toBeGreaterThanOrEqual(60n);
    expect(committed).toBeLessThan(recorded);
    expect(BigInt(appliedBeforeRestart)).toBe(recorded);

    const restarted = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(restarted);
    await restarted.start();
    await waitFor(
      'the partition recorded to its end',
      async () => (await env.offsetsOf(groupId, topic)).get(0) === BigInt(total),
    );

    const rows = await env.effectsOf(topic);
    expect(rows).toHaveLength(total);
    expect(new Set(rows.map((r) => r.messageId)).size).toBe(total);
    // Records below the database's resume point were passed over, not even claimed again.
    expect(outcomes.duplicates).toEqual([]);
    expect(outcomes.processed).toHaveLength(total - appliedBeforeRestart);
  });

  it('G5: a handler that writes and then throws leaves nothing behind, and the partition moves on', async () => {
    const topic = await env.createTopic('crash-throw');
    await env.produce(topic, [jsonMessage('bad', { poison: true }), jsonMessage('good', { poison: false })]);
    let attempts = 0;
    const handler = effectHandler(topic, (ctx, event) => {
      if ((event as { poison: boolean }).poison) {
        attempts = ctx.attempt;
        throw new Error('ledger service rejected the entry');
      }
    });
    const consumer = env.consumer({
      groupId: env.groupId('throw'),
      handlers: [handler],
      retry: { attempts: 3, initialDelayMs: 10, maxDelayMs: 20 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('both outcomes', () => outcomes.total === 2);

    // The effect row written before each throw was rolled back with its attempt.
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['good']);
    expect(attempts).toBe(3);
    expect(outcomes.deadLettered).toEqual([
      expect.objectContaining({ messageId: 'bad', reason: 'handler_failed', attempts: 3 }),
    ]);
    const { rows } = await env.pool.query<{ status: string; attempts: number }>(
      "SELECT status, attempts FROM oncely.inbox WHERE message_id = 'bad'",
    );
    expect(rows).toEqual([{ status: 'dead_lettered', attempts: 3 }]);
  });

  it('G5: a handler that fails twice and then succeeds is applied once, on attempt 3', async () => {
    const topic = await env.createTopic('crash-flaky');
    await env.produce(topic, [jsonMessage('flaky', {})]);
    const handler = effectHandler(topic, (ctx) => {
      if (ctx.attempt < 3) throw new Error(`timeout on attempt ${ctx.attempt}`);
    });
    const consumer = env.consumer({
      groupId: env.groupId('flaky'),
      handlers: [handler],
      retry: { initialDelayMs: 10, maxDelayMs: 20 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('the outcome', () => outcomes.total === 1);
    expect(outcomes.processed).toEqual([expect.objectContaining({ messageId: 'flaky', attempts: 3 })]);
    expect(await env.effectsOf(topic)).toHaveLength(1);
  });

  it('G5: pg_terminate_backend on the consumer’s connection mid-transaction is retried, applied once, and leaks no pooled connection', async () => {
    const topic = await env.createTopic('crash-terminate');
    await env.produce(topic, [jsonMessage('victim', {}), jsonMessage('after', {})]);
    const pool = testPool(env.databaseUrl, 4);
    const { drizzle } = await import('drizzle-orm/node-postgres');
    let terminated = false;
    const handler = effectHandler(topic, async (ctx) => {
      if (ctx.messageId !== 'victim' || terminated) return;
      // Kill this transaction's own backend from outside, after the effect row was written.
      const { rows } = await env.pool.query<{ pid: number }>(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction' AND query LIKE '%effects%'",
      );
      expect(rows).toHaveLength(1);
      await env.pool.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
      terminated = true;
      await ctx.tx.execute('SELECT 1'); // fails: the connection is gone
    });
    const consumer = env.consumer({ groupId: env.groupId('term'), db: drizzle(pool), handlers: [handler] });
    const outcomes = recordOutcomes(consumer);
    try {
      await consumer.start();
      await waitFor('both outcomes', () => outcomes.total === 2);
      await consumer.stop();
      expect(terminated).toBe(true);
      expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['victim', 'after']);
      // A lost connection does not use up one of the message's attempts.
      expect(outcomes.processed).toEqual([
        expect.objectContaining({ messageId: 'victim', attempts: 1 }),
        expect.objectContaining({ messageId: 'after', attempts: 1 }),
      ]);
      // Every connection is back in the pool (the dead one destroyed, not leaked or reused).
      expect(pool.waitingCount).toBe(0);
      expect(pool.idleCount).toBe(pool.totalCount);
      const { rows } = await pool.query<{ one: number }>('SELECT 1 AS one');
      expect(rows).toEqual([{ one: 1 }]);
    } finally {
      await pool.end();
    }
  });

  it('G3: commits the Kafka offset only after the inbox row commits', async () => {
    const topic = await env.createTopic('g3-order', 2);
    const groupId = env.groupId('g3');
    // Partition 0 holds the transaction of its offset 5 open, while partition 1 finishes its batch.
    // kafkajs commits every offset the consumer resolved, on all partitions, at the end of any
    // batch: an offset of partition 0 resolved before its transaction committed would reach Kafka
    // right then. (A single-partition test cannot see that: nothing commits mid-batch.)
    await env.produce(topic, [
      ...Array.from({ length: 10 }, (_, i) => jsonMessage(`p0-${i}`, { i }, 0)),
      ...Array.from({ length: 3 }, (_, i) => jsonMessage(`p1-${i}`, { i }, 1)),
    ]);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let hold!: () => void;
    const held = new Promise<void>((resolve) => (hold = resolve));
    const handler = effectHandler(topic, async (ctx) => {
      if (ctx.message.partition === 0 && ctx.message.offset === '5') {
        hold();
        await released;
      }
      // Partition 1's batch ends only once partition 0 is inside offset 5's transaction.
      if (ctx.message.partition === 1 && ctx.message.offset === '2') await held;
    });
    const consumer = env.consumer({ groupId, concurrency: 2, handlers: [handler] });
    try {
      await consumer.start();
      await held;
      await waitFor(
        'Kafka to commit partition 1 to its end while partition 0 holds offset 5',
        async () => (await env.committedOffsetsOf(groupId, topic)).get(1) === 3n,
      );
      // Offset 5 is in flight: PostgreSQL has committed at most offsets 0–4 of partition 0 (fewer
      // when 5 shares its commit group with some of them). Kafka committed meanwhile, and may not be
      // past what PostgreSQL holds.
      const recorded = (await env.offsetsOf(groupId, topic)).get(0) ?? 0n;
      expect(recorded).toBeLessThanOrEqual(5n);
      expect((await env.committedOffsetsOf(groupId, topic)).get(0) ?? -1n).toBeLessThanOrEqual(recorded);
    } finally {
      release(); // also when an expectation failed: the consumer cannot stop while offset 5 is held
    }
    await waitFor('Kafka to commit the end', async () => (await env.committedOffsetsOf(groupId, topic)).get(0) === 10n);
    expect((await env.offsetsOf(groupId, topic)).get(0)).toBe(10n);
  });

  it('G3: a consumer stopped while a message waits for its retry does not commit past it, and the next consumer applies it', async () => {
    const topic = await env.createTopic('g3-stop-retry');
    const groupId = env.groupId('g3stop');
    await env.produce(topic, [jsonMessage('before', {}), jsonMessage('stuck', {}), jsonMessage('after', {})]);
    let failing = true;
    const handler = effectHandler(topic, (ctx) => {
      if (ctx.messageId === 'stuck' && failing) throw new Error('downstream unavailable');
    });
    const first = env.consumer({
      groupId,
      handlers: [handler],
      retry: { attempts: 10, initialDelayMs: 60_000, maxDelayMs: 60_000 },
    });
    const retrying = new Promise<void>((resolve) => first.on('message:retrying', () => resolve()));
    await first.start();
    await retrying;
    await first.stop();

    // Only "before" has an outcome: neither store may have moved past "stuck".
    expect((await env.offsetsOf(groupId, topic)).get(0)).toBe(1n);
    expect((await env.committedOffsetsOf(groupId, topic)).get(0)).toBe(1n);

    failing = false;
    const second = env.consumer({ groupId, handlers: [handler] });
    await second.start();
    await waitFor('the partition recorded to its end', async () => (await env.offsetsOf(groupId, topic)).get(0) === 3n);
    expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['before', 'stuck', 'after']);
  });

  it('G5: survives its idle pooled connections being terminated while it is still starting', async () => {
    const topic = await env.createTopic('crash-idle-start');
    // No pool.on('error') here either: the consumer's own listener must be there from its first query.
    const pool = new pg.Pool({ connectionString: env.databaseUrl, max: 4, application_name: 'oncely-start-victim' });
    const { drizzle } = await import('drizzle-orm/node-postgres');
    const consumer = env.consumer({
      groupId: env.groupId('idle-start'),
      db: drizzle(pool),
      handlers: [effectHandler(topic)],
    });
    // Holds start() at the step that records the group's inbox scope, after its first checks.
    const lock = await env.pool.connect();
    try {
      await env.produce(topic, [jsonMessage('one', {})]);
      await lock.query('BEGIN');
      await lock.query('LOCK TABLE oncely.group_scopes IN ACCESS EXCLUSIVE MODE');
      // Idle connections in the pool, as a consumer restarted in a running process has.
      await Promise.all([1, 2, 3].map(() => pool.query('SELECT pg_sleep(0.01)')));
      const started = consumer.start();
      await waitFor('start() to wait at the inbox scope', async () => {
        const { rows } = await env.pool.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'oncely-start-victim' AND wait_event_type = 'Lock'",
        );
        return rows[0]?.n === 1;
      });
      // A failover while it starts: its idle connections die.
      const { rowCount } = await env.pool.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'oncely-start-victim' AND state = 'idle'",
      );
      expect(rowCount).toBeGreaterThan(0);
      await waitFor('the pool to drop them', () => pool.totalCount === 1);
      await lock.query('COMMIT');
      await started;
      await waitFor('the effect', async () => (await env.effectsOf(topic)).length === 1);
    } finally {
      lock.release();
      await consumer.stop();
      pool.on('error', () => undefined);
      await pool.end();
    }
  });

  it('G5: keeps consuming when its idle pooled connections are terminated (a database failover)', async () => {
    const topic = await env.createTopic('crash-idle');
    // Deliberately no pool.on('error'): many applications have none, and pg re-emits an idle
    // connection's death on the pool, which would end the process if nobody listened.
    const pool = new pg.Pool({ connectionString: env.databaseUrl, max: 4, application_name: 'oncely-idle-victim' });
    const { drizzle } = await import('drizzle-orm/node-postgres');
    const consumer = env.consumer({
      groupId: env.groupId('idle'),
      db: drizzle(pool),
      handlers: [effectHandler(topic)],
    });
    try {
      await env.produce(topic, [jsonMessage('one', {})]);
      await consumer.start();
      await waitFor('the first effect', async () => (await env.effectsOf(topic)).length === 1);
      const { rows } = await env.pool.query<{ killed: boolean }>(
        "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE application_name = 'oncely-idle-victim' AND state = 'idle'",
      );
      expect(rows.length).toBeGreaterThan(0);
      await waitFor(
        'the pool to drop the dead connections',
        () => pool.totalCount < 4 && pool.idleCount === pool.totalCount,
        {
          timeoutMs: 5_000,
        },
      ).catch(() => undefined);
      await env.produce(topic, [jsonMessage('two', {})]);
      await waitFor('the second effect', async () => (await env.effectsOf(topic)).length === 2);
      expect((await env.effectsOf(topic)).map((r) => r.messageId)).toEqual(['one', 'two']);
    } finally {
      await consumer.stop();
      pool.on('error', () => undefined);
      await pool.end();
    }
  });
});
