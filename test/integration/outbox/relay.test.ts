import net from 'node:net';

import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka, logLevel } from 'kafkajs';
import { pino } from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';

import {
  defineBatchHandler,
  defineHandler,
  discardParked,
  listOutbox,
  publish,
  purgeSentOutbox,
  retryParked,
} from '../../../src/index.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';
import { readTopic, testRelay } from './support.js';
import { derivedMessageId } from '../../../src/outbox/message-id.js';

const env = useTestEnvironment();

/** Publishes each event in a transaction of its own, in order. */
async function publishAll(events: readonly { topic: string; key?: string; value: unknown }[]): Promise<void> {
  for (const event of events) await drizzle(env.pool).transaction((tx) => publish(tx, event));
}

async function statuses(topic: string): Promise<Record<string, string>> {
  const { rows } = await env.pool.query<{ value: string; status: string }>(
    "SELECT convert_from(value, 'UTF8') AS value, status FROM oncely.outbox WHERE topic = $1 ORDER BY id",
    [topic],
  );
  return Object.fromEntries(rows.map((r) => [JSON.parse(r.value) as string, r.status]));
}

/** A TCP proxy the test can freeze: it keeps every connection open but forwards nothing until thawed. */
interface FreezableProxy {
  readonly port: number;
  /** Stops forwarding in both directions (data and closes are held), as a network partition would. */
  freeze(): void;
  /** Forwards what was held, in order, and everything after. */
  thaw(): void;
  close(): Promise<void>;
}

async function freezableProxy(target: { host: string; port: number }): Promise<FreezableProxy> {
  let frozen = false;
  const held: (() => void)[] = [];
  const sockets = new Set<net.Socket>();
  const relay = (action: () => void): void => {
    if (frozen) held.push(action);
    else action();
  };
  const pipe = (from: net.Socket, to: net.Socket): void => {
    from.on('data', (chunk: Buffer) => relay(() => to.write(chunk)));
    from.on('end', () => relay(() => to.end()));
    from.on('close', () => relay(() => to.destroy()));
    from.on('error', () => undefined);
  };
  const server = net.createServer((downstream) => {
    const upstream = net.connect(target.port, target.host);
    for (const socket of [downstream, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    }
    pipe(downstream, upstream);
    pipe(upstream, downstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    freeze: () => {
      frozen = true;
    },
    thaw: () => {
      frozen = false;
      for (const action of held.splice(0)) action();
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// Every test starts with an empty outbox: rows a test leaves behind must not reach the next one.
beforeEach(async () => {
  await env.pool.query('DELETE FROM oncely.outbox');
});

describe('the outbox relay', () => {
  it('G8: never sends an event whose transaction rolled back', async () => {
    const source = await env.createTopic('ob-src');
    const out = await env.createTopic('ob-out');
    // Outside a consumer: a rolled-back transaction's event never exists.
    await drizzle(env.pool)
      .transaction(async (tx) => {
        await publish(tx, { topic: out, key: 'k', value: { n: 'rolled-back' } });
        throw new Error('the request failed after publishing');
      })
      .catch(() => undefined);
    await drizzle(env.pool).transaction(async (tx) => {
      await publish(tx, { topic: out, key: 'k', value: { n: 'committed' } }, { messageId: 'request-1' });
    });
    const { rows: written } = await env.pool.query<{ n: string }>(
      "SELECT convert_from(value, 'UTF8')::jsonb->>'n' AS n FROM oncely.outbox WHERE topic = $1",
      [out],
    );
    expect(written.map((r) => r.n)).toEqual(['committed']);
    // Inside a handler: the first attempt publishes and then fails; only the retry's commit counts.
    let attempts = 0;
    const rollbackGroup = env.groupId('ob-rollback');
    const consumer = env.consumer({
      groupId: rollbackGroup,
      handlers: [
        effectHandler(source, async (ctx) => {
          await ctx.publish({ topic: out, key: 'k', value: { n: 'from-handler', attempt: ctx.attempt } });
          if (++attempts === 1) throw new Error('ledger service down');
        }),
      ],
      retry: { attempts: 3, initialDelayMs: 10, maxDelayMs: 10 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await env.produce(source, [
      {
        ...jsonMessage('payment-1', { amount: 5 }),
        headers: { 'message-id': 'payment-1', traceparent: '00-abc-def-01' },
      },
    ]);
    await waitFor('the message processed', () => outcomes.processed.length === 1);
    await testRelay({ db: env.db, kafka: env.kafka }).start();

    const received = await readTopic(env.kafka, out, (r) => r.length >= 2);
    // Give a wrongly sent third event the chance to arrive.
    await waitFor('every row sent', async () => {
      const { rows } = await env.pool.query("SELECT 1 FROM oncely.outbox WHERE topic = $1 AND status = 'pending'", [
        out,
      ]);
      return rows.length === 0;
    });
    expect(received.map((r) => JSON.parse(r.value ?? 'null') as unknown)).toEqual([
      { n: 'committed' },
      { n: 'from-handler', attempt: 2 },
    ]);
    expect(received[1]?.headers).toMatchObject({
      'message-id': derivedMessageId(rollbackGroup, 'payment-1', 0),
      'causation-id': 'payment-1',
      traceparent: '00-abc-def-01',
    });
    expect(received[0]?.headers['message-id']).toBe('request-1');
    const { rows } = await env.pool.query<{ n: string }>('SELECT count(*) AS n FROM oncely.outbox WHERE topic = $1', [
      out,
    ]);
    expect(rows[0]?.n).toBe('2');
  });

  it('G8: two relays, one active', async () => {
    const out = await env.createTopic('ob-two', 2);
    const first = testRelay({ db: env.db, kafka: env.kafka });
    const second = testRelay({ db: env.db, kafka: env.kafka });
    await Promise.all([first.start(), second.start()]);
    await waitFor('one relay to become active', () => first.isActive() || second.isActive());
    const events = Array.from({ length: 30 }, (_, i) => ({ topic: out, key: `k${i % 3}`, value: `e${i}` }));
    const checks: number[] = [];
    const watch = setInterval(() => checks.push(Number(first.isActive()) + Number(second.isActive())), 20);
    try {
      await publishAll(events);
      await waitFor('every row sent', async () => Object.values(await statuses(out)).every((s) => s === 'sent'));
    } finally {
      clearInterval(watch);
    }
    expect(Math.max(...checks)).toBe(1);
    const received = await readTopic(env.kafka, out, (r) => r.length >= 30);
    // Sent once each: only the active relay sends.
    expect(received.map((r) => r.value).sort()).toEqual(events.map((e) => JSON.stringify(e.value)).sort());

    // The active one stops: the standby takes over and sends what comes next.
    const [active, standby] = first.isActive() ? [first, second] : [second, first];
    await active.stop();
    await waitFor('the standby to take over', () => standby.isActive());
    await publishAll([{ topic: out, key: 'k0', value: 'after' }]);
    await waitFor('the new row sent', async () => (await statuses(out)).after === 'sent');
  });

  it('G8: a relay whose connection freezes loses the lock and another relay sends within the lease', async () => {
    const out = await env.createTopic('ob-frozen');
    const lockLeaseMs = 3_000;
    const standbyPollMs = 200;
    const database = new URL(env.databaseUrl);
    const proxy = await freezableProxy({ host: database.hostname, port: Number(database.port || 5432) });
    try {
      const throughProxy = new URL(env.databaseUrl);
      throughProxy.hostname = '127.0.0.1';
      throughProxy.port = String(proxy.port);
      // The frozen relay's broker is out of reach at first, so it is caught waiting to send when
      // its database connection freezes, and can reach the broker again after the thaw.
      let brokerUp = false;
      const frozenKafka = new Kafka({
        clientId: 'relay-frozen',
        brokers: () => (brokerUp ? env.brokers : ['127.0.0.1:1']),
        connectionTimeout: 300,
        retry: { retries: 100, initialRetryTime: 100, maxRetryTime: 300 },
        logLevel: logLevel.NOTHING,
      });
      const frozenSends: string[][] = [];
      const frozen = testRelay({
        db: throughProxy.toString(),
        kafka: frozenKafka,
        lockLeaseMs,
        standbyPollMs,
        afterSend: (ids) => void frozenSends.push([...ids]),
      });
      await frozen.start();
      await waitFor('the first relay to become active', () => frozen.isActive());
      const other = testRelay({ db: env.db, kafka: env.kafka, lockLeaseMs, standbyPollMs });
      await other.start();
      await publishAll([{ topic: out, key: 'acct', value: 'x' }]);
      // Long enough for the active relay to have read the row and be trying to send it.
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(other.isActive()).toBe(false);

      proxy.freeze();
      const frozenAt = Date.now();
      await waitFor('the other relay to take over and send the row', async () => (await statuses(out)).x === 'sent', {
        timeoutMs: 60_000,
      });
      const takeoverMs = Date.now() - frozenAt;
      expect(other.isActive()).toBe(true);
      // The stated bound is lockLeaseMs + standbyPollMs after the connection's last answer; the
      // rest is room for a slow shared machine (without a lease it is hours: TCP's own timeout).
      expect(takeoverMs).toBeLessThan(lockLeaseMs + standbyPollMs + 5_000);

      // Thawed, and its broker reachable again: it must not send, it no longer holds the lock.
      proxy.thaw();
      brokerUp = true;
      await waitFor('the first relay to step down', () => !frozen.isActive(), { timeoutMs: 10_000 });
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect(frozenSends).toEqual([]);
      // One record in the topic: the other relay's send, none from the thawed one.
      expect((await env.admin.fetchTopicOffsets(out)).map((p) => p.high)).toEqual(['1']);
      const received = await readTopic(env.kafka, out, (r) => r.length >= 1);
      expect(received.map((r) => r.value)).toEqual(['"x"']);
    } finally {
      await proxy.close();
    }
  });

  it('G8: broker unreachable → rows wait, then flow', async () => {
    const out = await env.createTopic('ob-down');
    let brokerUp = false;
    const kafka = new Kafka({
      clientId: 'relay-outage',
      // The shared broker keeps running: this client just cannot reach it until brokerUp.
      brokers: () => (brokerUp ? env.brokers : ['127.0.0.1:1']),
      connectionTimeout: 300,
      retry: { retries: 1, initialRetryTime: 50, maxRetryTime: 200 },
      logLevel: logLevel.NOTHING,
    });
    let backoffs = 0;
    const logger = pino(
      { level: 'warn' },
      {
        write(line: string) {
          if (line.includes('cannot reach the broker')) backoffs++;
        },
      },
    );
    await testRelay({ db: env.db, kafka, logger }).start();
    await publishAll(Array.from({ length: 5 }, (_, i) => ({ topic: out, key: 'acct', value: `e${i}` })));
    await waitFor('the relay to back off twice', () => backoffs >= 2);
    const { rows } = await env.pool.query<{ status: string; attempts: number }>(
      'SELECT status, attempts FROM oncely.outbox WHERE topic = $1',
      [out],
    );
    // Waiting, not failing: an outage does not count against the rows.
    expect(rows).toEqual(Array.from({ length: 5 }, () => ({ status: 'pending', attempts: 0 })));

    brokerUp = true;
    const received = await readTopic(env.kafka, out, (r) => r.length >= 5);
    expect(received.map((r) => r.value)).toEqual(['"e0"', '"e1"', '"e2"', '"e3"', '"e4"']);
    await waitFor('every row marked sent', async () => Object.values(await statuses(out)).every((s) => s === 'sent'));
  });

  it('G8: a parked event does not block other keys', async () => {
    const out = await env.createTopic('ob-park');
    const missing = `ob-missing-${Date.now()}`;
    const tooLarge = 'x'.repeat(1_200_000); // over the broker's default message.max.bytes (~1 MB)
    await publishAll([
      { topic: out, key: 'a', value: 'a1' },
      { topic: out, key: 'big', value: tooLarge },
      { topic: out, key: 'big', value: 'big-after' },
      { topic: missing, key: 'gone', value: 'to-nowhere' },
      { topic: out, key: 'gone', value: 'other-topic-same-key' },
      { topic: out, key: 'b', value: 'b1' },
    ]);
    await testRelay({ db: env.db, kafka: env.kafka, maxAttempts: 2 }).start();
    await waitFor('the other keys sent', async () => {
      const s = await statuses(out);
      return s.a1 === 'sent' && s.b1 === 'sent' && s['other-topic-same-key'] === 'sent';
    });
    await waitFor('both unsendable events parked', async () => {
      const parked = await listOutbox(env.pool);
      return parked.length === 2 ? parked : undefined;
    });
    const parked = await listOutbox(env.pool);
    expect(parked.map((p) => [p.topic, p.key, p.lastError?.code])).toEqual([
      [out, 'big', 'MESSAGE_TOO_LARGE'],
      [missing, 'gone', 'UNKNOWN_TOPIC_OR_PARTITION'],
    ]);
    // The row behind the parked one with the same key waits: order per key.
    expect((await statuses(out))['big-after']).toBe('pending');
    // Events of other keys published after the park still flow.
    await publishAll([{ topic: out, key: 'b', value: 'b2' }]);
    await waitFor('a later event of another key sent', async () => (await statuses(out)).b2 === 'sent');
    expect((await statuses(out))['big-after']).toBe('pending');

    // Discarding the parked row lets its key go on; retry puts a row back in the relay's hands.
    const big = parked[0];
    expect(await discardParked(env.pool, [big?.id ?? ''], 'too large, re-issued in parts')).toBe(1);
    await waitFor('the row behind it sent', async () => (await statuses(out))['big-after'] === 'sent');
    await env.admin.createTopics({ topics: [{ topic: missing }], waitForLeaders: true });
    expect(await retryParked(env.pool, [], missing)).toBe(1);
    await waitFor('the retried row sent', async () => (await statuses(missing))['to-nowhere'] === 'sent');
    const received = await readTopic(env.kafka, out, (r) => r.length >= 5);
    expect(received.map((r) => JSON.parse(r.value ?? 'null') as unknown)).toEqual([
      'a1',
      'other-topic-same-key',
      'b1',
      'b2',
      'big-after',
    ]);

    // Sent and discarded rows go with retention; nothing pending is touched.
    await publishAll([{ topic: out, key: 'late', value: 'late' }]);
    expect(await purgeSentOutbox(env.pool, { olderThan: new Date(Date.now() + 60_000) })).toBe(7);
    expect(await purgeSentOutbox(env.pool)).toBe(0);
  });

  it("publishes from a batch handler with ids derived from each event, sent by the consumer's own relay", async () => {
    const source = await env.createTopic('ob-batch-src');
    const out = await env.createTopic('ob-batch-out');
    const batchGroup = env.groupId('ob-batch');
    const handler = defineBatchHandler({
      topic: source,
      async handleBatch(events, ctx) {
        for (const event of events) {
          await ctx.publish({ topic: out, key: event.messageId, value: { step: 'one' } }, { causedBy: event });
          await ctx.publish({ topic: out, key: event.messageId, value: { step: 'two' } }, { causedBy: event });
        }
      },
    });
    const consumer = env.consumer({
      groupId: batchGroup,
      handlers: [handler],
      relay: { pollIntervalMs: 200, standbyPollMs: 200 },
    });
    await env.produce(source, [jsonMessage('p-1', {}), jsonMessage('p-2', {})]);
    await consumer.start();
    const received = await readTopic(env.kafka, out, (r) => r.length >= 4);
    expect(received.map((r) => [r.headers['message-id'], r.headers['causation-id'], r.value])).toEqual([
      [derivedMessageId(batchGroup, 'p-1', 0), 'p-1', '{"step":"one"}'],
      [derivedMessageId(batchGroup, 'p-1', 1), 'p-1', '{"step":"two"}'],
      [derivedMessageId(batchGroup, 'p-2', 0), 'p-2', '{"step":"one"}'],
      [derivedMessageId(batchGroup, 'p-2', 1), 'p-2', '{"step":"two"}'],
    ]);
  });

  it('G8: two groups consuming one topic both publish for every message, with distinct stable event ids', async () => {
    const source = await env.createTopic('ob-groups-src');
    const out = await env.createTopic('ob-groups-out');
    const groups = [env.groupId('billing'), env.groupId('shipping')] as const;
    const consumers = groups.map((groupId) =>
      env.consumer({
        groupId,
        // A collision is a constraint violation on every attempt: fail fast instead of backing off.
        retry: { attempts: 2, initialDelayMs: 10, maxDelayMs: 20 },
        handlers: [
          defineHandler({
            topic: source,
            handle: (_event, ctx) =>
              ctx.publish({ topic: out, key: ctx.messageId, value: { by: groupId } }).then(() => undefined),
          }),
        ],
        relay: { pollIntervalMs: 200, standbyPollMs: 200 },
      }),
    );
    const outcomes = consumers.map((c) => recordOutcomes(c));
    await env.produce(source, [jsonMessage('order-1', {}), jsonMessage('order-2', {})]);
    for (const c of consumers) await c.start();
    await waitFor('both groups recorded both messages', () =>
      outcomes.every((o) => o.processed.length + o.deadLettered.length === 2),
    );
    expect(outcomes.map((o) => o.deadLettered)).toEqual([[], []]);

    const received = await readTopic(env.kafka, out, (r) => r.length >= 4);
    const ids = received.map((r) => r.headers['message-id']);
    expect(new Set(ids).size).toBe(4);
    expect(received.map((r) => [r.headers['message-id'], r.value]).sort()).toEqual(
      groups
        .flatMap((g) => ['order-1', 'order-2'].map((m) => [derivedMessageId(g, m, 0), JSON.stringify({ by: g })]))
        .sort(),
    );
  });

  it('stops promptly while the broker is unreachable, leaving the rows pending', async () => {
    const out = await env.createTopic('ob-stop');
    // kafkajs' default retries would keep a connect going for many seconds.
    const kafka = new Kafka({ clientId: 'relay-stop', brokers: ['127.0.0.1:1'], logLevel: logLevel.NOTHING });
    const relay = testRelay({ db: env.db, kafka });
    await relay.start();
    await publishAll([{ topic: out, key: 'k', value: 'waits' }]);
    await waitFor('the relay to be active', () => relay.isActive());
    const started = Date.now();
    await relay.stop();
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(await statuses(out)).toEqual({ waits: 'pending' });
  });
});
