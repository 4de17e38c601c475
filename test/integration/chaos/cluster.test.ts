/**
 * oncely on a three-node Kafka cluster (replication factor 3, min.insync.replicas 2): partition
 * leaders, the group coordinator and the controller die under load. One cluster for the file,
 * started before its first test and stopped after its last.
 */
import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka, logLevel } from 'kafkajs';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';

import { formatSummary, runChaos } from '../../../chaos/chaos.js';
import { publish } from '../../../src/index.js';
import { useKafkaCluster } from '../../support/cluster.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';
import { type Received, readTopic, testRelay } from '../outbox/support.js';

const cluster = useKafkaCluster();
const env = useTestEnvironment({ brokers: () => cluster.brokers });

afterEach(async () => {
  await cluster.heal();
});

/** Outbox rows of a topic by status. */
async function outboxStatuses(topic: string): Promise<{ sent: number; pending: number; other: number }> {
  const { rows } = await env.pool.query<{ status: string; n: string }>(
    'SELECT status, count(*) AS n FROM oncely.outbox WHERE topic = $1 GROUP BY status',
    [topic],
  );
  const count = (status: string): number => Number(rows.find((r) => r.status === status)?.n ?? 0);
  return {
    sent: count('sent'),
    pending: count('pending'),
    other: rows.length - (count('sent') > 0 ? 1 : 0) - (count('pending') > 0 ? 1 : 0),
  };
}

/** Every record of a topic up to its end offsets now. */
async function readToEnd(topic: string): Promise<Received[]> {
  const ends = (await env.admin.fetchTopicOffsets(topic)).filter((p) => p.high !== '0');
  return readTopic(env.kafka, topic, (received) =>
    ends.every((end) =>
      received.some((r) => r.partition === end.partition && BigInt(r.offset) + 1n >= BigInt(end.high)),
    ),
  );
}

describe('on a three-node cluster', () => {
  it('G8: an outbox event is never marked sent before the cluster acknowledged it', async () => {
    const topic = await env.createTopic('g8-cluster', 3);
    const publishAll = (events: readonly { topic: string; key: string; value: unknown }[]) =>
      drizzle(env.pool).transaction(async (tx) => {
        for (const event of events) await publish(tx, event);
      });
    const warnings: string[] = [];
    const relay = testRelay({
      db: env.pool,
      kafka: new Kafka({ clientId: 'g8-relay', brokers: env.brokers, logLevel: logLevel.NOTHING }),
      logger: pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) }),
    });
    await relay.start();
    // Warm-up: the relay's producer is connected to every leader and has its producer id.
    const warmUp = Array.from({ length: 9 }, (_, i) => ({ topic, key: `warm-${i}`, value: { warm: i } }));
    await publishAll(warmUp);
    await waitFor('the warm-up sent', async () => (await outboxStatuses(topic)).sent === warmUp.length);

    // The leader of partition 0 stops answering (frozen: it holds the produce request and
    // acknowledges nothing), then the events are published: the relay's send waits for its ack.
    const victim = cluster.cluster.node(await cluster.cluster.leaderOf(topic, 0));
    victim.freeze();
    const events = Array.from({ length: 60 }, (_, i) => ({ topic, key: `account-${i}`, value: { n: i } }));
    let markedWhileUnacknowledged = 0;
    try {
      await publishAll(events);
      // Until the cluster moves partition 0 to another leader, no new row may be marked sent,
      // whatever the other leaders answered: the send as a whole was not acknowledged.
      await waitFor(
        'partition 0 led by another node',
        async () => {
          const { sent } = await outboxStatuses(topic);
          markedWhileUnacknowledged = Math.max(markedWhileUnacknowledged, sent - warmUp.length);
          return (await cluster.cluster.leaderOf(topic, 0)) !== victim.nodeId;
        },
        { timeoutMs: 60_000, intervalMs: 200 },
      );
    } finally {
      // The leader dies between send and ack.
      await victim.kill();
    }
    expect(markedWhileUnacknowledged, 'rows marked sent while their send waited for the frozen leader').toBe(0);
    await waitFor(
      'every outbox row marked sent',
      async () => (await outboxStatuses(topic)).sent === warmUp.length + events.length,
      {
        timeoutMs: 90_000,
      },
    );
    await relay.stop();

    // Every row marked sent is in the log (read through the new leaders, up to what the in-sync
    // replicas have): nothing was marked that the cluster did not keep.
    const all = warmUp.length + events.length;
    const received = await readToEnd(topic);
    const inLog = new Set(received.map((m) => m.value));
    const missing = [...warmUp, ...events].map((e) => JSON.stringify(e.value)).filter((v) => !inLog.has(v));
    expect(missing, 'events marked sent that the log does not hold').toEqual([]);
    // A downstream oncely consumer applies each event once, re-sends (same message-id) skipped.
    const groupId = env.groupId('g8-downstream');
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('every record in the log handled downstream', () => outcomes.total === received.length, {
      timeoutMs: 60_000,
    });
    const applied = await env.effectsOf(topic);
    expect(applied).toHaveLength(all);
    expect(new Set(applied.map((e) => e.messageId)).size).toBe(all);
    expect(outcomes.duplicates.every((d) => d.duplicateClass === 'republish')).toBe(true);
    const partial = warnings.filter((line) => line.includes('acknowledged only part')).length;
    console.log(
      `G8: ${received.length} records in the log for ${all} events (${outcomes.duplicates.length} re-sends skipped), ${partial} partial acknowledgements`,
    );
  }, 180_000);

  it("G3: a consumer keeps its partitions' offsets across a coordinator move", async () => {
    const topic = await env.createTopic('g3-cluster', 3);
    const groupId = env.groupId('g3-cluster');
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    // Watch G3 throughout: Kafka's committed offset never passes the database's (read after it).
    const violations: string[] = [];
    /** Kafka's committed offsets per partition, sampled from the coordinator kill on. */
    const history = new Map<number, bigint[]>();
    let moving = false;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        try {
          const kafka = await env.committedOffsetsOf(groupId, topic);
          const database = await env.offsetsOf(groupId, topic);
          for (const [partition, committed] of kafka) {
            if (committed < 0n) continue;
            if (moving) history.set(partition, [...(history.get(partition) ?? []), committed]);
            const recorded = database.get(partition) ?? 0n;
            if (committed > recorded)
              violations.push(`partition ${partition}: Kafka at ${committed}, database at ${recorded}`);
          }
        } catch {
          // The coordinator is moving: its offsets cannot be read right now.
        }
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
    })();

    // A wait that fails reports the G3 violations seen first: they are the cause to look at.
    const orViolations = <T>(waiting: Promise<T>): Promise<T> =>
      waiting.catch((error: unknown) => {
        expect(violations, "Kafka's committed offset ahead of the database's").toEqual([]);
        throw error;
      });
    const batch = (from: number, count: number) =>
      Array.from({ length: count }, (_, i) => jsonMessage(`g3-${from + i}`, { n: from + i }, (from + i) % 3));
    await env.produce(topic, batch(0, 150));
    const ends = async (): Promise<Map<number, bigint>> =>
      new Map((await env.admin.fetchTopicOffsets(topic)).map((p) => [p.partition, BigInt(p.high)]));
    const reached = async (offsets: () => Promise<Map<number, bigint>>): Promise<boolean> => {
      const [end, at] = [await ends(), await offsets()];
      // At or past the end: past it is a G3 violation the watcher reports.
      return [...end].every(([partition, high]) => (at.get(partition) ?? -1n) >= high);
    };
    await orViolations(
      waitFor('the first messages committed to Kafka', () => reached(() => env.committedOffsetsOf(groupId, topic))),
    );
    const before = await env.committedOffsetsOf(groupId, topic);

    const coordinator = await cluster.cluster.groupCoordinatorOf(groupId);
    moving = true;
    await cluster.cluster.node(coordinator).kill();
    // The producer may still aim at the dead node until the cluster fences it: sent again until
    // acknowledged (a second copy of a message is a duplicate the inbox skips).
    await waitFor('the second messages produced', async () => {
      await env.produce(topic, batch(150, 150));
      return true;
    });
    const moved = await waitFor(
      'a new coordinator',
      async () => {
        const now = await cluster.cluster.groupCoordinatorOf(groupId);
        return now !== coordinator ? now : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    await orViolations(
      waitFor(
        'every message committed to Kafka through the new coordinator',
        () => reached(() => env.committedOffsetsOf(groupId, topic)),
        { timeoutMs: 90_000 },
      ),
    );
    await orViolations(
      waitFor('the database at the end of every partition', () => reached(() => env.offsetsOf(groupId, topic))),
    );
    watching = false;
    await watcher;

    expect(moved).not.toBe(coordinator);
    expect(violations, "Kafka's committed offset ahead of the database's").toEqual([]);
    expect(await env.committedOffsetsOf(groupId, topic)).toEqual(await ends());
    // Kept, never rewound: the committed offsets only grew from where they stood before the move.
    for (const [partition, offsets] of history) {
      expect(offsets.every((offset, i) => i === 0 || offset >= (offsets[i - 1] ?? 0n))).toBe(true);
      expect(offsets[0]).toBeGreaterThanOrEqual(before.get(partition) ?? 0n);
    }
    // Nothing handled twice: each of the 300 messages applied once.
    const applied = await env.effectsOf(topic);
    expect(applied).toHaveLength(300);
    expect(new Set(applied.map((e) => e.messageId)).size).toBe(300);
    expect(outcomes.processed).toHaveLength(300);
  }, 180_000);

  it('G1 G3 G8 G9 on a cluster: 2,000 payment events through a leader kill, a coordinator kill, consumer kills and cut connections: zero lost, zero doubled on both hops, no payment charged twice', async () => {
    const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 1_000_000));
    const lines: string[] = [];
    const summary = await runChaos({
      seed,
      mode: 'message',
      events: 2_000,
      kills: 4,
      killEveryMs: 3_000,
      brokerRestarts: 0,
      connectionKillRounds: 2,
      timeoutMs: Number(process.env.CHAOS_TIMEOUT_MS ?? 240_000),
      cluster: { leaderKills: 1, coordinatorKills: 1, controllerKills: 0 },
      services: cluster.services,
      log: (line) => {
        lines.push(line);
        if (process.env.CHAOS_PROGRESS !== undefined) console.log(line);
      },
    });
    const report = `${lines.join('\n')}\n${formatSummary(summary)}\n(replay with CHAOS_SEED=${seed})`;
    console.log(report);
    expect(summary.violations, report).toEqual([]);
    expect(summary.crashes, report).toEqual([]);
    expect(summary.cluster?.brokerKills, report).toEqual({ leader: 1, coordinator: 1, controller: 0 });
    expect(summary.lost + summary.doubled + summary.unexpected, report).toBe(0);
    expect(summary.outOfOrder, report).toBe(0);
    expect(summary.applied).toBe(2_000);
    expect(summary.downstream.lost + summary.downstream.doubled + summary.downstream.unexpected, report).toBe(0);
    expect(summary.downstream.applied).toBe(2_000);
    expect(summary.audit.lost + summary.audit.doubled, report).toBe(0);
    expect(summary.provider.chargedTwice, report).toBe(0);
    expect(summary.provider.uncharged, report).toBe(0);
    expect(summary.provider.charges, report).toBe(summary.captures);
  }, 270_000);
});
