/**
 * The chaos run: a payments workload consumed by a group of consumer processes while they are
 * killed, the broker is restarted, their database connections are cut and members come and go;
 * then an invariant checker compares the database with what the topic holds.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { Kafka, logLevel, type Message, Partitioners, type PartitionMetadata } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';

import { type PaymentProvider, startPaymentProvider } from '../examples/payments/provider.js';
import { PAYMENTS_DDL } from '../examples/payments/schema.js';
import { type DevServices, type KafkaClusterHandle, startDevServices } from '../src/dev/index.js';
import { migrate } from '../src/migrate/migrate.js';
import { check, checkProvider, expectationFrom, type LoggedRecord, type ProviderVerdict } from './checker.js';
import { AUDIT_DDL, checkAudit, createAuditConsumer } from './audit.js';
import { checkDownstream, createDownstreamConsumer, DOWNSTREAM_DDL } from './downstream.js';
import { seededRandom } from '../src/testing/seeded-random.js';
import { buildWorkload } from './workload.js';

export interface ChaosOptions {
  /** Unique payment events (duplicates, key reuse and poison come on top). */
  readonly events: number;
  readonly seed: number;
  readonly mode: 'message' | 'batch' | 'lanes';
  /** Consumer processes in the group. Default 3. */
  readonly consumers?: number;
  /** At least this many SIGKILLs, one every ~killEveryMs. */
  readonly kills: number;
  readonly killEveryMs: number;
  readonly brokerRestarts: number;
  readonly connectionKillRounds: number;
  /** A fourth consumer joins and one leaves. Default true. */
  readonly rebalances?: boolean;
  /** The whole run must finish within this. */
  readonly timeoutMs: number;
  /** Progress lines. */
  readonly log?: (line: string) => void;
  /**
   * Run on a three-node cluster (replication factor 3, min.insync.replicas 2) and SIGKILL the
   * leader of a consumed partition, the group coordinator's node and the active controller this
   * many times each, restarting each before the next broker fault. `brokerRestarts` is ignored.
   */
  readonly cluster?: {
    readonly leaderKills: number;
    readonly coordinatorKills: number;
    readonly controllerKills: number;
  };
  /** Dev services to use (a test's cluster); stopped by their owner. Default: started for the run. */
  readonly services?: DevServices;
}

/** What the cluster went through, in the summary of a `cluster` run. */
export interface ClusterReport {
  readonly brokerKills: { readonly leader: number; readonly coordinator: number; readonly controller: number };
  /** Leader changes of the run's topics' partitions seen by sampling metadata every second. */
  readonly leaderChanges: number;
  /** Time during which some partition of the run's topics had fewer in-sync replicas than replicas. */
  readonly underReplicatedSeconds: number;
}

export interface ChaosSummary {
  readonly seed: number;
  readonly mode: 'message' | 'batch' | 'lanes';
  readonly events: number;
  /** Unique captured payments among them (the rest refund some of these). */
  readonly captures: number;
  readonly sent: number;
  readonly duplicatesSent: number;
  readonly keyReuseSent: number;
  readonly poisonSent: number;
  readonly inTopic: number;
  readonly kills: number;
  readonly brokerRestarts: number;
  readonly connectionsKilled: number;
  readonly connectionKillRounds: number;
  readonly joins: number;
  readonly leaves: number;
  readonly duplicatesSkipped: { redelivery: number; republish: number };
  readonly deadLetters: Record<string, number>;
  readonly applied: number;
  readonly lost: number;
  readonly doubled: number;
  /** Accounts whose events were applied out of their order in the log. */
  readonly outOfOrder: number;
  readonly unexpected: number;
  /** The second hop: `ledger.posted` events (outbox → relays in the killed members → downstream group). */
  readonly downstream: {
    readonly applied: number;
    readonly lost: number;
    readonly doubled: number;
    readonly unexpected: number;
    /** Relay re-sends the downstream inbox skipped. */
    readonly duplicatesSkipped: { redelivery: number; republish: number };
  };
  /** The second publishing group on the payments topic (chaos/audit.ts). */
  readonly audit: { readonly applied: number; readonly lost: number; readonly doubled: number };
  /** The payment provider's own records (it runs in the orchestrator, so it outlives every kill). */
  readonly provider: Omit<ProviderVerdict, 'violations'>;
  readonly violations: readonly string[];
  /** Consumer processes that exited on their own (restarted, like a process manager would), with their last words. */
  readonly crashes: readonly string[];
  readonly wallSeconds: number;
  readonly cluster?: ClusterReport;
  /** Kept when the run failed, so it can be inspected. */
  readonly databaseUrl?: string;
}

const PARTITIONS = 6;
const APPLICATION_NAME = 'oncely-chaos-consumer';
const CONSUMER_SCRIPT = fileURLToPath(new URL('../examples/payments/consumer.ts', import.meta.url));

interface Member {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  /** Set before we kill or stop it: any other exit is a crash. */
  expected: boolean;
}

export async function runChaos(options: ChaosOptions): Promise<ChaosSummary> {
  const log = options.log ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const started = Date.now();
  const deadline = started + options.timeoutMs;
  const random = seededRandom(options.seed);
  const violations: string[] = [];
  const run = `s${options.seed}`;
  const topic = `payments-chaos-${run}-${Date.now().toString(36)}`;
  const groupId = `ledger-chaos-${run}`;
  const postedTopic = `ledger-posted-chaos-${run}-${Date.now().toString(36)}`;
  const downstreamGroupId = `balances-chaos-${run}`;
  // A second group on the payments topic that publishes for every message too (chaos/audit.ts).
  const auditGroupId = `audit-chaos-${run}`;
  const auditedTopic = `audited-chaos-${run}-${Date.now().toString(36)}`;

  // A broker of our own, run as a local process so it can be restarted (KAFKA_BROKERS is ignored
  // on purpose); the database may be the configured one.
  const services =
    options.services ??
    (await startDevServices({
      env: { DATABASE_URL: process.env.DATABASE_URL },
      logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'warn' }),
      ...(options.cluster === undefined ? {} : { brokers: 3 as const }),
    }));
  const cluster = options.cluster === undefined ? undefined : services.kafka.cluster;
  if (options.cluster !== undefined && cluster === undefined) throw new Error('a cluster run needs a local cluster');
  const admin = new pg.Client({ connectionString: services.postgres.url });
  const database = `oncely_chaos_${run}_${Date.now().toString(36)}`;
  const databaseUrl = withDatabase(services.postgres.url, database);
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  pool.on('error', () => undefined);
  // The downstream group runs in this process, on its own pool (not cut by the connection kills).
  const downstreamPool = new pg.Pool({
    connectionString: databaseUrl,
    max: 6,
    application_name: 'oncely-chaos-downstream',
  });
  downstreamPool.on('error', () => undefined);
  const downstreamTally = { redelivery: 0, republish: 0 };
  let downstreamConsumer: ReturnType<typeof createDownstreamConsumer> | undefined;
  // The audit group runs here too, on a pool of its own (not cut by the connection kills).
  const auditPool = new pg.Pool({ connectionString: databaseUrl, max: 6, application_name: 'oncely-chaos-audit' });
  auditPool.on('error', () => undefined);
  let auditConsumer: ReturnType<typeof createAuditConsumer> | undefined;
  const kafka = new Kafka({ clientId: 'oncely-chaos', brokers: services.kafka.brokers, logLevel: logLevel.NOTHING });
  const kafkaAdmin = kafka.admin();
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  const members = new Set<Member>();
  const tally = { redelivery: 0, republish: 0 };
  const crashes: string[] = [];
  let supervising = true;
  const counters = { kills: 0, brokerRestarts: 0, connectionsKilled: 0, connectionKillRounds: 0, joins: 0, leaves: 0 };
  const brokerKills = { leader: 0, coordinator: 0, controller: 0 };
  let watcher: ClusterWatcher | undefined;
  let failed = true;
  // The payment provider every member charges captured payments at, through ctx.step. It runs here,
  // in the orchestrator, so its records (and its answers to a retried key) survive the members'
  // SIGKILLs: a kill between its charge and the step record must not lead to a second charge.
  let provider: PaymentProvider | undefined;

  const env = {
    KAFKA_BROKERS: services.kafka.brokers.join(','),
    DATABASE_URL: databaseUrl,
    TOPIC: topic,
    GROUP_ID: groupId,
    // The ledger handler publishes ledger.posted through the outbox; each member runs a relay.
    LEDGER_POSTED_TOPIC: postedTopic,
    MODE: options.mode,
    PROVIDER_URL: '', // set once the provider listens, before the first member starts
    APPLICATION_NAME,
    // Errors only, on the members' stderr: kept as a crashed member's last words in the summary.
    ONCELY_LOG_LEVEL: process.env.ONCELY_LOG_LEVEL ?? 'error',
  };
  const startMember = (): Member => {
    const child = spawn(process.execPath, ['--import', 'tsx', CONSUMER_SCRIPT], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lastWords: string[] = [];
    createInterface({ input: child.stderr }).on('line', (line) => {
      lastWords.push(line);
      if (lastWords.length > 40) lastWords.shift();
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const event = JSON.parse(line) as { outcome?: string; class?: 'redelivery' | 'republish' };
        if (event.outcome === 'duplicate' && event.class !== undefined) tally[event.class] += 1;
      } catch {
        // not an outcome line
      }
    });
    const member: Member = {
      child,
      exited: new Promise((resolve) => child.once('exit', () => resolve())),
      expected: false,
    };
    members.add(member);
    void member.exited.then(() => {
      members.delete(member);
      if (member.expected || !supervising) return;
      // Not killed by us: a crash. Restart it, as a process manager would, and report it.
      crashes.push(`exit ${child.exitCode ?? child.signalCode}: ${lastWords.join(' | ').slice(0, 600)}`);
      startMember();
    });
    return member;
  };
  const pick = (): Member | undefined => {
    const live = [...members];
    return live[Math.floor(random() * live.length)];
  };

  try {
    provider = await startPaymentProvider();
    env.PROVIDER_URL = provider.url;
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    await migrate(pool);
    await pool.query(PAYMENTS_DDL);
    await pool.query(DOWNSTREAM_DDL);
    await pool.query(AUDIT_DDL);
    await kafkaAdmin.connect();
    await createTopics(kafkaAdmin, [topic, postedTopic, auditedTopic], deadline);
    if (cluster !== undefined) watcher = watchCluster(kafkaAdmin, [topic, postedTopic, auditedTopic]);
    await producer.connect();
    downstreamConsumer = createDownstreamConsumer({
      kafka,
      pool: downstreamPool,
      topic: postedTopic,
      groupId: downstreamGroupId,
      // Silent by default: its transient broker-restart crashes restart on their own; a final one is a violation.
      logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'silent' }),
    });
    downstreamConsumer.on('message:duplicate', (e) => void (downstreamTally[e.duplicateClass] += 1));
    // A crash kafkajs does not restart from (a coordinator not found right after a broker
    // restart) is restarted by oncely itself (G5): noted, not a violation. Had it stayed down, the
    // downstream side would never reach the end of its topic, and the checks below would say so.
    downstreamConsumer.on('consumer:crash', (e) => {
      if (!e.restart) log(`the downstream consumer crashed (${String(e.error)}); oncely restarts it`);
    });
    await downstreamConsumer.start();
    auditConsumer = createAuditConsumer({
      kafka,
      pool: auditPool,
      topic,
      auditedTopic,
      groupId: auditGroupId,
      logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'silent' }),
    });
    // A crash kafkajs does not restart from (a coordinator not found right after a broker
    // restart) is restarted by oncely itself (G5): noted, not a violation. Had it stayed down, the
    // audit side would never reach the end of its topic, and the checks below would say so.
    auditConsumer.on('consumer:crash', (e) => {
      if (!e.restart) log(`the audit consumer crashed (${String(e.error)}); oncely restarts it`);
    });
    await auditConsumer.start();

    // Lanes: many accounts (keys), three of them hot with 30 % of the payments between them.
    const workload =
      options.mode === 'lanes'
        ? buildWorkload(options.events, random, 400, { count: 3, share: 0.3 })
        : buildWorkload(options.events, random);
    const window = Math.max(options.kills * options.killEveryMs + options.killEveryMs, 5_000);
    log(
      `chaos · seed ${options.seed} · ${options.mode} mode · ${workload.messages.length} messages over ~${Math.round(window / 1000)} s · ` +
        `${options.consumers ?? 3} consumers · topic ${topic}`,
    );
    for (let i = 0; i < (options.consumers ?? 3); i++) startMember();

    // The producer spreads the workload over the fault window, retrying through broker restarts.
    const producing = produce(producer, topic, workload.messages, window * 0.8, deadline, log);

    // The fault timeline, seeded.
    type Step = { at: number; name: string; run: () => Promise<void> };
    const steps: Step[] = [];
    for (let k = 1; k <= options.kills; k++) {
      const at = k * options.killEveryMs + (random() - 0.5) * options.killEveryMs * 0.5;
      steps.push({
        at,
        name: 'kill',
        run: async () => {
          const victim = pick();
          if (victim === undefined) return;
          victim.expected = true;
          victim.child.kill('SIGKILL');
          await victim.exited;
          counters.kills += 1;
          startMember();
        },
      });
    }
    if (cluster !== undefined && options.cluster !== undefined) {
      steps.push(
        ...brokerKillSteps(options.cluster, window, random, {
          leader: async () => cluster.leaderOf(topic, Math.floor(random() * PARTITIONS)),
          coordinator: async () => cluster.groupCoordinatorOf(groupId),
          controller: async () => cluster.activeController(),
          kill: async (role, nodeId) => {
            log(`killing node ${nodeId} (${role})`);
            await killAndRestart(cluster, nodeId, [topic, postedTopic, auditedTopic], deadline);
            brokerKills[role] += 1;
          },
        }),
      );
    }
    for (let r = 0; r < (cluster === undefined ? options.brokerRestarts : 0); r++) {
      steps.push({
        at: window * ((r + 1) / (options.brokerRestarts + 1)) + 700,
        name: 'broker restart',
        run: async () => {
          await services.kafka.restart();
          counters.brokerRestarts += 1;
        },
      });
    }
    for (let c = 0; c < options.connectionKillRounds; c++) {
      steps.push({
        at: window * ((c + 0.5) / options.connectionKillRounds) + 300,
        name: 'connection kill',
        run: async () => {
          const { rowCount } = await pool.query(
            'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2',
            [database, APPLICATION_NAME],
          );
          counters.connectionsKilled += rowCount ?? 0;
          counters.connectionKillRounds += 1;
        },
      });
    }
    if (options.rebalances ?? true) {
      steps.push({
        at: window * 0.4,
        name: 'join',
        run: () => {
          startMember();
          counters.joins += 1;
          return Promise.resolve();
        },
      });
      steps.push({
        at: window * 0.7,
        name: 'leave',
        run: async () => {
          const leaving = pick();
          if (leaving === undefined) return;
          leaving.expected = true;
          leaving.child.kill('SIGTERM'); // graceful: drains, commits, leaves the group
          await leaving.exited;
          counters.leaves += 1;
        },
      });
    }
    steps.sort((a, b) => a.at - b.at);
    for (const step of steps) {
      const wait = started + step.at - Date.now();
      if (wait > 0) await sleep(wait);
      await step.run().catch((error: unknown) => violations.push(`fault step "${step.name}" failed: ${String(error)}`));
    }
    const sent = await producing;
    log(
      `faults done: ${counters.kills} kills, ${counters.brokerRestarts} broker restarts, ${counters.connectionsKilled} connections killed in ${counters.connectionKillRounds} rounds, ${counters.joins} joins, ${counters.leaves} leaves; ${sent} messages sent` +
        (cluster === undefined
          ? ''
          : `; broker kills: ${brokerKills.leader} leader, ${brokerKills.coordinator} coordinator, ${brokerKills.controller} controller`),
    );

    // Let the group finish: every partition recorded to its end in PostgreSQL.
    const ends = await kafkaAdmin.fetchTopicOffsets(topic);
    const finished = await waitUntil(deadline, async () => {
      const { rows } = await pool.query<{ partition: number; next_offset: string }>(
        'SELECT partition, next_offset FROM oncely.offsets WHERE consumer_group = $1 AND topic = $2',
        [groupId, topic],
      );
      const recorded = new Map(rows.map((r) => [r.partition, r.next_offset]));
      return ends.every((end) => recorded.get(end.partition) === end.high);
    });
    if (!finished) violations.push('the group did not record every partition to its end before the deadline');
    log(`group at the end of the topic after ${Math.round((Date.now() - started) / 1000)} s`);
    const auditFinished = await waitUntil(deadline, async () => {
      const { rows } = await pool.query<{ partition: number; next_offset: string }>(
        'SELECT partition, next_offset FROM oncely.offsets WHERE consumer_group = $1 AND topic = $2',
        [auditGroupId, topic],
      );
      const recorded = new Map(rows.map((r) => [r.partition, r.next_offset]));
      return ends.every((end) => recorded.get(end.partition) === end.high);
    });
    if (!auditFinished)
      violations.push('the audit group did not record every partition to its end before the deadline');

    // The second hop: the relays (in the members, still running) drain the outbox, then the
    // downstream group records every partition of ledger.posted to its end.
    const drained = await waitUntil(deadline, async () => {
      const { rows } = await pool.query<{ n: string }>(
        "SELECT count(*) AS n FROM oncely.outbox WHERE status = 'pending'",
      );
      return Number(rows[0]?.n) === 0;
    });
    if (!drained) violations.push('the relays did not send every outbox row before the deadline');
    log(`outbox drained after ${Math.round((Date.now() - started) / 1000)} s`);
    const { rows: parked } = await pool.query<{ n: string }>(
      "SELECT count(*) AS n FROM oncely.outbox WHERE status <> 'sent'",
    );
    if (Number(parked[0]?.n) > 0) violations.push(`${parked[0]?.n} outbox rows not sent (parked or pending)`);
    const postedEnds = await kafkaAdmin.fetchTopicOffsets(postedTopic);
    const downstreamFinished = await waitUntil(deadline, async () => {
      const { rows } = await pool.query<{ partition: number; next_offset: string }>(
        'SELECT partition, next_offset FROM oncely.offsets WHERE consumer_group = $1 AND topic = $2',
        [downstreamGroupId, postedTopic],
      );
      const recorded = new Map(rows.map((r) => [r.partition, r.next_offset]));
      return postedEnds.every((end) => end.high === '0' || recorded.get(end.partition) === end.high);
    });
    if (!downstreamFinished)
      violations.push('the downstream group did not record every partition to its end before the deadline');
    log(`downstream at the end after ${Math.round((Date.now() - started) / 1000)} s`);
    await downstreamConsumer.stop();
    await auditConsumer.stop();

    // Graceful stop: each member commits its offsets and leaves.
    supervising = false;
    await Promise.all([...members].map((m) => ((m.expected = true), m.child.kill('SIGTERM'), m.exited)));
    const [committed] = await kafkaAdmin.fetchOffsets({ groupId, topics: [topic] });
    for (const end of ends) {
      const at = committed?.partitions.find((p) => p.partition === end.partition)?.offset;
      if (at !== end.high)
        violations.push(`partition ${end.partition}: Kafka offset committed at ${at}, the end is ${end.high}`);
    }

    const records = await readTopic(kafka, topic, ends, deadline);
    const expected = expectationFrom(records);
    const verdict = await check(pool, groupId, expected);
    violations.push(...verdict.violations);
    const second = await checkDownstream(pool, groupId, expected);
    violations.push(...second.violations);
    const audited = await checkAudit(pool, auditGroupId, expected);
    violations.push(...audited.violations);
    const { violations: providerViolations, ...charged } = await checkProvider(pool, groupId, provider);
    violations.push(...providerViolations);
    failed = violations.length > 0;
    const watched = await watcher?.stop();
    return {
      seed: options.seed,
      mode: options.mode,
      events: options.events,
      captures: workload.counts.captured,
      sent,
      duplicatesSent: workload.counts.duplicates,
      keyReuseSent: workload.counts.keyReuse,
      poisonSent: workload.counts.poison,
      inTopic: records.length,
      ...counters,
      duplicatesSkipped: tally,
      deadLetters: verdict.deadLettersByReason,
      applied: verdict.applied,
      lost: verdict.lost.length,
      doubled: verdict.doubled.length,
      outOfOrder: verdict.outOfOrder.length,
      unexpected: verdict.unexpected.length,
      downstream: {
        applied: second.applied,
        lost: second.lost.length,
        doubled: second.doubled.length,
        unexpected: second.unexpected.length,
        duplicatesSkipped: downstreamTally,
      },
      audit: { applied: audited.applied, lost: audited.lost, doubled: audited.doubled },
      provider: charged,
      violations,
      crashes,
      wallSeconds: Math.round((Date.now() - started) / 100) / 10,
      ...(watched === undefined ? {} : { cluster: { brokerKills, ...watched } }),
      // A local throwaway server goes away with the run; a configured one keeps the evidence.
      ...(failed && process.env.DATABASE_URL !== undefined ? { databaseUrl } : {}),
    };
  } finally {
    supervising = false;
    for (const member of members) member.child.kill('SIGKILL');
    await Promise.all([...members].map((m) => m.exited));
    await downstreamConsumer?.stop().catch(() => undefined);
    await downstreamPool.end().catch(() => undefined);
    await auditConsumer?.stop().catch(() => undefined);
    await auditPool.end().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
    await kafkaAdmin.disconnect().catch(() => undefined);
    await pool.end().catch(() => undefined);
    if (!failed) await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await admin.end().catch(() => undefined);
    await watcher?.stop();
    if (options.services === undefined) await services.stop();
    await provider?.close();
  }
}

async function produce(
  producer: ReturnType<Kafka['producer']>,
  topic: string,
  messages: readonly { key: string; value: string; messageId: string }[],
  overMs: number,
  deadline: number,
  log: (line: string) => void,
): Promise<number> {
  const chunk = 100;
  const chunks = Math.ceil(messages.length / chunk);
  const started = Date.now();
  let sent = 0;
  for (let i = 0; i < chunks; i++) {
    const wait = started + (overMs * i) / chunks - Date.now();
    if (wait > 0) await sleep(wait);
    const batch: Message[] = messages
      .slice(i * chunk, (i + 1) * chunk)
      .map((m) => ({ key: m.key, value: m.value, headers: { 'message-id': m.messageId } }));
    // One send per partition: a send spanning several leaders can resolve without writing a
    // partition whose leader moved meanwhile (kafkajs #1303), and the workload must be in the log.
    let pending = byPartition(batch);
    while (pending.size > 0) {
      const failed = new Map<number, Message[]>();
      await Promise.all(
        [...pending].map(async ([partition, records]) => {
          try {
            await producer.send({ topic, acks: -1, messages: records });
          } catch (error) {
            // A broker is restarting or a leader moving: retry the same records (the topic may then
            // hold them twice, which the checker accounts for — it reads the topic back).
            if (Date.now() > deadline) throw error;
            failed.set(partition, records);
          }
        }),
      );
      pending = failed;
      if (pending.size > 0) await sleep(500);
    }
    sent += batch.length;
  }
  log(`produced ${sent} messages in ${Math.round((Date.now() - started) / 1000)} s`);
  return sent;
}

const partitioner = Partitioners.DefaultPartitioner();
const PARTITION_METADATA: PartitionMetadata[] = Array.from({ length: PARTITIONS }, (_, partitionId) => ({
  partitionErrorCode: 0,
  partitionId,
  leader: 0,
  replicas: [],
  isr: [],
}));

/** The batch's records per partition (the murmur2 partition of their key), each pinned to it. */
function byPartition(batch: readonly Message[]): Map<number, Message[]> {
  const groups = new Map<number, Message[]>();
  for (const message of batch) {
    const partition = partitioner({ topic: '', partitionMetadata: PARTITION_METADATA, message });
    groups.set(partition, [...(groups.get(partition) ?? []), { ...message, partition }]);
  }
  return groups;
}

/** Creates the run's topics; on a cluster, waits until every broker knows their leaders. */
async function createTopics(
  admin: ReturnType<Kafka['admin']>,
  topics: readonly string[],
  deadline: number,
): Promise<void> {
  try {
    await admin.createTopics({
      topics: topics.map((topic) => ({ topic, numPartitions: PARTITIONS })),
      waitForLeaders: true,
    });
  } catch (error) {
    // A broker asked right after the controller created them may not know them yet.
    if ((error as { type?: unknown }).type !== 'UNKNOWN_TOPIC_OR_PARTITION') throw error;
  }
  const ready = await waitUntil(deadline, async () => {
    const { topics: known } = await admin.fetchTopicMetadata({ topics: [...topics] }).catch(() => ({ topics: [] }));
    return known.length === topics.length && known.every((t) => t.partitions.every((p) => p.leader >= 0));
  });
  if (!ready) throw new Error("the run's topics got no leaders before the deadline");
}

type BrokerRole = 'leader' | 'coordinator' | 'controller';

/** The broker faults of a cluster run, spread over the window, each role in turn. */
function brokerKillSteps(
  counts: NonNullable<ChaosOptions['cluster']>,
  window: number,
  random: () => number,
  roles: Record<BrokerRole, () => Promise<number>> & { kill(role: BrokerRole, nodeId: number): Promise<void> },
): { at: number; name: string; run: () => Promise<void> }[] {
  const order: BrokerRole[] = [];
  for (let i = 0; i < Math.max(counts.leaderKills, counts.coordinatorKills, counts.controllerKills); i++) {
    if (i < counts.leaderKills) order.push('leader');
    if (i < counts.coordinatorKills) order.push('coordinator');
    if (i < counts.controllerKills) order.push('controller');
  }
  return order.map((role, i) => ({
    at: window * ((i + 0.6) / (order.length + 0.5)) + (random() - 0.5) * 400,
    name: `${role} kill`,
    run: async () => roles.kill(role, await roles[role]()),
  }));
}

/**
 * SIGKILL a node, start it again once the cluster moved its roles, and wait (bounded) until its
 * replicas are back in sync: one node down at a time, so min.insync.replicas 2 always holds.
 */
async function killAndRestart(
  cluster: KafkaClusterHandle,
  nodeId: number,
  topics: readonly string[],
  deadline: number,
): Promise<void> {
  const node = cluster.node(nodeId);
  await node.kill();
  await sleep(3_000);
  await node.start();
  const until = Math.min(deadline, Date.now() + 30_000);
  await waitUntil(until, async () => (await cluster.underReplicated(topics).catch(() => 1)) === 0);
}

interface ClusterWatcher {
  stop(): Promise<{ leaderChanges: number; underReplicatedSeconds: number }>;
}

/** Samples the topics' metadata every second: leader changes and time spent under-replicated. */
function watchCluster(admin: ReturnType<Kafka['admin']>, topics: readonly string[]): ClusterWatcher {
  const leaders = new Map<string, number>();
  let leaderChanges = 0;
  let underReplicatedMs = 0;
  let running = true;
  const loop = (async () => {
    let last = Date.now();
    while (running) {
      try {
        const { topics: metadata } = await admin.fetchTopicMetadata({ topics: [...topics] });
        const now = Date.now();
        let under = false;
        for (const t of metadata) {
          for (const p of t.partitions) {
            const key = `${t.name}/${p.partitionId}`;
            const before = leaders.get(key);
            if (before !== undefined && p.leader >= 0 && before !== p.leader) leaderChanges++;
            if (p.leader >= 0) leaders.set(key, p.leader);
            if (p.isr.length < new Set([...p.replicas, ...(p.offlineReplicas ?? [])]).size) under = true;
          }
        }
        if (under) underReplicatedMs += now - last;
        last = now;
      } catch {
        // A node is down: the next sample counts the time.
      }
      await sleep(1_000);
    }
  })();
  let stopped: Promise<{ leaderChanges: number; underReplicatedSeconds: number }> | undefined;
  return {
    stop: () =>
      (stopped ??= (async () => {
        running = false;
        await loop;
        return { leaderChanges, underReplicatedSeconds: Math.round(underReplicatedMs / 100) / 10 };
      })()),
  };
}

/** Reads every record of the topic back, up to the end offsets taken after the run. */
async function readTopic(
  kafka: Kafka,
  topic: string,
  ends: readonly { partition: number; high: string }[],
  deadline: number,
): Promise<LoggedRecord[]> {
  const records: LoggedRecord[] = [];
  const reader = kafka.consumer({ groupId: `chaos-reader-${Date.now().toString(36)}`, maxWaitTimeInMs: 100 });
  const seen = new Map<number, bigint>();
  await reader.connect();
  try {
    await reader.subscribe({ topic, fromBeginning: true });
    await reader.run({
      eachBatch: ({ batch }) => {
        for (const message of batch.messages) {
          records.push({
            partition: batch.partition,
            offset: message.offset,
            messageId: String(message.headers?.['message-id'] ?? ''),
            value: message.value?.toString('utf8') ?? '',
          });
          seen.set(batch.partition, BigInt(message.offset) + 1n);
        }
        return Promise.resolve();
      },
    });
    const done = await waitUntil(deadline, () =>
      Promise.resolve(ends.every((end) => (seen.get(end.partition) ?? 0n) >= BigInt(end.high))),
    );
    if (!done) throw new Error('could not read the topic back before the deadline');
  } finally {
    await reader.disconnect();
  }
  return records;
}

async function waitUntil(deadline: number, check: () => Promise<boolean>): Promise<boolean> {
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(250);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** The summary as aligned lines. */
export function formatSummary(summary: ChaosSummary): string {
  const rows: [string, string][] = [
    ['seed', String(summary.seed)],
    ['mode', summary.mode],
    ['events (unique) / captures', `${summary.events} / ${summary.captures}`],
    ['messages sent / in topic', `${summary.sent} / ${summary.inTopic}`],
    [
      '  duplicates / key reuse / poison sent',
      `${summary.duplicatesSent} / ${summary.keyReuseSent} / ${summary.poisonSent}`,
    ],
    ['consumer kills (SIGKILL)', String(summary.kills)],
    ['broker restarts', String(summary.brokerRestarts)],
    ...(summary.cluster === undefined
      ? []
      : ([
          [
            'broker kills (SIGKILL): leader / coordinator / controller',
            `${summary.cluster.brokerKills.leader} / ${summary.cluster.brokerKills.coordinator} / ${summary.cluster.brokerKills.controller}`,
          ],
          ['leader changes seen', String(summary.cluster.leaderChanges)],
          ['under-replicated time', `${summary.cluster.underReplicatedSeconds} s`],
        ] as [string, string][])),
    ['connections killed (rounds)', `${summary.connectionsKilled} (${summary.connectionKillRounds})`],
    ['rebalances: joins / leaves', `${summary.joins} / ${summary.leaves}`],
    [
      'duplicates skipped: republish / redelivery',
      `${summary.duplicatesSkipped.republish} / ${summary.duplicatesSkipped.redelivery}`,
    ],
    [
      'dead letters by reason',
      Object.entries(summary.deadLetters)
        .map(([r, n]) => `${r} ${n}`)
        .join(', ') || 'none',
    ],
    ['applied', String(summary.applied)],
    ['lost', String(summary.lost)],
    ['doubled', String(summary.doubled)],
    ['accounts out of order', String(summary.outOfOrder)],
    ['unexpected', String(summary.unexpected)],
    ['downstream applied (ledger.posted)', String(summary.downstream.applied)],
    [
      'downstream duplicates skipped: republish / redelivery',
      `${summary.downstream.duplicatesSkipped.republish} / ${summary.downstream.duplicatesSkipped.redelivery}`,
    ],
    ['downstream lost', String(summary.downstream.lost)],
    ['downstream doubled', String(summary.downstream.doubled)],
    ['downstream unexpected', String(summary.downstream.unexpected)],
    [
      'audit group applied / lost / doubled',
      `${summary.audit.applied} / ${summary.audit.lost} / ${summary.audit.doubled}`,
    ],
    [
      'provider charges (payments charged)',
      `${summary.provider.charges} (${summary.provider.paymentsCharged}) expected ${summary.provider.expectedCharges}`,
    ],
    ['  calls repeated with the same key (deduped)', String(summary.provider.repeatedCalls)],
    ['  applied captures not charged', String(summary.provider.uncharged)],
    ['  charged twice', String(summary.provider.chargedTwice)],
    ['refunds for dead letters', `${summary.provider.refunds} expected ${summary.provider.expectedRefunds}`],
    ['consumer crashes (restarted)', String(summary.crashes.length)],
    ['wall time', `${summary.wallSeconds} s`],
    [
      'verdict',
      summary.violations.length === 0
        ? 'PASS: zero lost, zero doubled on both hops, every account in order, nothing charged twice, every partition committed to its end'
        : 'FAIL',
    ],
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  const lines = rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`);
  for (const violation of summary.violations) lines.push(`  violation: ${violation}`);
  for (const crash of summary.crashes) lines.push(`  crash: ${crash}`);
  if (summary.databaseUrl !== undefined)
    lines.push(`  the run's database is kept for inspection: ${summary.databaseUrl}`);
  return lines.join('\n');
}
