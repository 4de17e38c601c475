/**
 * The outbox relay: sends committed outbox rows to Kafka and marks them sent after the broker
 * acknowledged them. It composes the outbox's SQL (store.ts) with a kafkajs producer, as the
 * pipeline composes the inbox with the consumer.
 */
import pg from 'pg';
import { pino, type Logger } from 'pino';

import { configError } from '../errors.js';
import { isKafkaClient, type KafkaClient, type KafkaProducerSettings } from '../kafka/client.js';
import { type OutgoingRecord, protocolErrorType, RecordProducer } from '../kafka/producer.js';
import { type DatabaseInput, resolvePool } from '../inbox/database.js';
import { attachRelayMetrics, type RelayMetrics, type RelayMetricsOptions } from '../metrics/outbox.js';
import { assertRegistry } from '../metrics/registry.js';
import { decodeHeaders } from '../inbox/headers.js';
import {
  fetchPending,
  markSent,
  OUTBOX_CHANNEL,
  type PendingRow,
  readOutboxBacklog,
  recordAttemptFailed,
  type SentRow,
} from './store.js';

/** Options of `createOutboxRelay()`. Only `db` and `kafka` are required. */
export interface OutboxRelayOptions {
  /** The database holding `oncely.outbox`: a drizzle node-postgres database, a pg Pool, or a URL. */
  readonly db: DatabaseInput;
  /** A kafkajs client: `new Kafka({ clientId, brokers })`. */
  readonly kafka: KafkaClient;
  /** Rows read and sent per round. Default 500. */
  readonly batchSize?: number;
  /** How often to look for rows when no notification came (the fallback to LISTEN/NOTIFY). Default 1000 ms. */
  readonly pollIntervalMs?: number;
  /** How often a standby relay tries to become the active one. Default 2000 ms. */
  readonly standbyPollMs?: number;
  /**
   * The lease of the active relay's lock: how long a relay whose database connection stops
   * answering (a network partition, a frozen host) keeps the lock. PostgreSQL ends the relay's
   * lock session after this long without a command from it (`idle_session_timeout`, TCP
   * keepalives and `tcp_user_timeout` on that session), which releases the lock; the relay
   * confirms its session every quarter lease and starts no send once it has not confirmed it for
   * half a lease. A standby takes over within `lockLeaseMs + standbyPollMs` of the connection's
   * last answer. At least 1000. Default 30 000 ms (takeover within 32 s with the default
   * `standbyPollMs`).
   */
  readonly lockLeaseMs?: number;
  /**
   * Sends of one row to a topic the broker does not know before the row is parked. Rows over the
   * broker's size limit (and other records the broker rejects as invalid) are parked at once. Default 10.
   */
  readonly maxAttempts?: number;
  /** Backoff while the broker or the database is unreachable: first delay. Default 200 ms. */
  readonly initialBackoffMs?: number;
  /** Backoff while the broker or the database is unreachable: longest delay. Default 10 000 ms. */
  readonly maxBackoffMs?: number;
  /** A pino logger. Default: pino at `ONCELY_LOG_LEVEL` or `info`. Payloads are never logged. */
  readonly logger?: Logger;
  /** Further kafkajs producer settings. `idempotent` and `maxInFlightRequests` are fixed by oncely. */
  readonly producer?: KafkaProducerSettings;
  /**
   * Prometheus metrics (needs the optional peer `prom-client`): `{ registry: new Registry() }`
   * registers `oncely_outbox_backlog`, `oncely_outbox_oldest_pending_age_seconds` (read from the
   * database when scraped, at most every `refreshIntervalMs`, default 15 s) and
   * `oncely_relay_latency_seconds`. A standby relay reports the backlog too. Default: none.
   */
  readonly metrics?: RelayMetricsOptions;
  /** @internal For crash tests: called after the broker acknowledged a batch, before it is marked sent. */
  readonly afterSend?: (messageIds: readonly string[]) => Promise<void> | void;
}

export interface OutboxRelay {
  /** Starts the relay; resolves at once (it becomes active, or a standby, in the background). Idempotent. */
  start(): Promise<void>;
  /** Stops sending, releases the lock (a standby takes over) and disconnects. Idempotent. */
  stop(): Promise<void>;
  /** Whether this relay holds the lock and sends. */
  isActive(): boolean;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * A fixed key for the relay's session-level advisory lock: one active relay per database. Next to
 * the migrations' key ("oncely" in ASCII) and distinct from it.
 */
export const RELAY_LOCK_KEY = 0x6f6e63656c79n + 0x0b0en;

/** Errors of a record the broker will never accept: retrying cannot help, the row is parked. */
const UNSENDABLE = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE']);
/** Errors that may pass (a topic being created): counted, the row parked after `maxAttempts`. */
const PER_ROW = new Set(['UNKNOWN_TOPIC_OR_PARTITION', 'TOPIC_AUTHORIZATION_FAILED', 'INVALID_TOPIC_EXCEPTION']);

class LostConnection extends Error {}
class Stopped extends Error {}

/** How often the lock session is confirmed (a query) while nothing else runs on it: a quarter lease. */
function heartbeatMs(lockLeaseMs: number): number {
  return Math.max(250, Math.floor(lockLeaseMs / 4));
}

/**
 * The settings that make PostgreSQL itself end the session of a relay that stopped talking to it,
 * so its advisory lock is released within the lease however the connection died:
 * - `idle_session_timeout` / `idle_in_transaction_session_timeout`: the session of a relay that
 *   sends nothing for a lease is ended (the relay confirms it every quarter lease, so a live one
 *   never is). This also covers a peer whose TCP stack still answers (a frozen proxy, a paused VM).
 * - `tcp_keepalives_*` and `tcp_user_timeout`: a peer that vanished is noticed in about a lease
 *   even while the server waits to send to it (where the idle timeout does not count).
 * - `statement_timeout`: no statement on the lock session runs longer than half a lease.
 * TCP settings are ignored on a Unix socket; the idle timeout needs PostgreSQL 14.
 */
export function lockSessionSettings(lockLeaseMs: number, serverVersion: number): Record<string, string> {
  const seconds = (ms: number): string => String(Math.max(1, Math.floor(ms / 1000)));
  const settings: Record<string, string> = {
    idle_in_transaction_session_timeout: String(lockLeaseMs),
    statement_timeout: String(Math.floor(lockLeaseMs / 2)),
    tcp_keepalives_idle: seconds(lockLeaseMs / 3),
    tcp_keepalives_interval: seconds(lockLeaseMs / 6),
    tcp_keepalives_count: '3',
    tcp_user_timeout: String(lockLeaseMs),
  };
  if (serverVersion >= 140000) settings.idle_session_timeout = String(lockLeaseMs);
  return settings;
}

/**
 * Creates an outbox relay. Several may run against one database (one per consumer process, or a
 * dedicated deployment): one is active at a time, holding a session-level advisory lock on a
 * connection of its own; the others poll for the lock and take over when the active one's session
 * ends (a crash closes it, so PostgreSQL releases the lock).
 *
 * Order: rows are sent in insertion order per (topic, key) by an idempotent producer with one
 * request in flight, and marked sent only after the broker acknowledged them. A crash between the
 * acknowledgement and the mark sends them again with the same `message-id`: a downstream oncely
 * consumer classifies that `republish` and skips it.
 */
export function createOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  const config = resolveRelayOptions(options);
  const { logger } = config;
  // Built only when asked for; the backlog is read through the pool, not the relay's own session.
  const metrics: RelayMetrics | undefined =
    options.metrics === undefined
      ? undefined
      : attachRelayMetrics(options.metrics, () => readOutboxBacklog(config.pool), logger);
  const recordSent = (sent: readonly SentRow[]): void => metrics?.observeSent(sent);
  let running: Promise<void> | undefined;
  let stopping: Promise<void> | undefined;
  let stopped = false;
  let active = false;
  let client: pg.Client | undefined;
  /**
   * When the lock session last answered, as the time its query was sent (performance.now()): the
   * server had not ended the session before then, so it cannot end it (and free the lock) before
   * this plus the lease. Sends start only within half a lease of it (see {@link holdLease}).
   */
  let confirmedAt = Number.NEGATIVE_INFINITY;
  let heartbeat: NodeJS.Timeout | undefined;
  let producer: RecordProducer | undefined;
  let knownTopics: { names: Set<string>; at: number } | undefined;

  // stop() must not wait for kafkajs to give up on an unreachable broker (its retries can take
  // tens of seconds): a connect or send still running then is abandoned. Safe: nothing was marked,
  // so the rows stay pending and the next active relay sends them.
  let onStop: (() => void) | undefined;
  const stopRequested = new Promise<never>((_, reject) => {
    onStop = () => reject(new Stopped('the relay is stopping'));
  });
  stopRequested.catch(() => undefined);
  // Work still running in kafkajs (abandoned or not): a send abandoned by stop() against a reachable
  // broker finishes a moment later and may open a broker connection after the disconnect.
  const inFlight = new Set<Promise<unknown>>();
  const untilStopped = <T>(work: Promise<T>): Promise<T> => {
    const settled = work.then(
      () => undefined,
      () => undefined, // an abandoned send's failure is nobody's concern
    );
    inFlight.add(settled);
    void settled.finally(() => inFlight.delete(settled));
    return Promise.race([work, stopRequested]);
  };

  // One waiter at a time; a notification that arrives while the relay is busy is not lost.
  let woken = false;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    woken = true;
    wake?.();
  };
  /** Waits `ms`; a notification ends the wait early when `wakeable` (a backoff is not cut short), a stop always. */
  const sleep = (ms: number, wakeable = true): Promise<void> => {
    if (stopped || (wakeable && woken)) {
      woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      }
      wake = () => {
        if (stopped || wakeable) done();
      };
    });
  };

  const backoff = (failures: number): number =>
    Math.min(config.maxBackoffMs, config.initialBackoffMs * 2 ** Math.min(failures - 1, 20)) *
    (0.8 + Math.random() * 0.4);

  /** Second disconnects pending; stop() waits a short while for them. */
  const lingering = new Set<Promise<unknown>>();
  const closeKafka = async (): Promise<void> => {
    const p = producer;
    producer = undefined;
    knownTopics = undefined;
    const disconnect = (): Promise<unknown> => p?.disconnect() ?? Promise.resolve();
    await disconnect();
    // Once the work still running in these clients ends, disconnect again: whatever connection it
    // opened after the first disconnect is closed too (in the background: it may take kafkajs'
    // retries against an unreachable broker).
    if (inFlight.size > 0 && p !== undefined) {
      const again = Promise.all([...inFlight]).then(disconnect);
      lingering.add(again);
      void again.finally(() => lingering.delete(again));
    }
  };

  const closeDatabase = async (): Promise<void> => {
    const current = client;
    client = undefined;
    clearInterval(heartbeat);
    heartbeat = undefined;
    confirmedAt = Number.NEGATIVE_INFINITY;
    if (active) logger.info('outbox relay is no longer active');
    active = false;
    // Ending the session releases the advisory lock: a standby takes over. A connection that
    // stopped answering may never confirm the end: it is cut after a moment (the server ends
    // that session on its own within the lease).
    if (current !== undefined) await endWithin(current, 1_000);
  };

  /** Runs a query on the lock session; once it answers, the session is confirmed as of when it was sent. */
  const onLockSession = async <T>(db: pg.Client, work: () => Promise<T>): Promise<T> => {
    const sentAt = performance.now();
    const result = await work();
    if (client === db && !isLost(db)) confirmedAt = Math.max(confirmedAt, sentAt);
    return result;
  };

  /**
   * Called right before every send: the lock is surely still this relay's for half a lease after
   * the session last answered (PostgreSQL ends a silent session only a whole lease after its last
   * command), so a send may start within that half; past it, the session is asked again, and a
   * relay that cannot confirm it (a frozen or lost connection) sends nothing — another relay may
   * hold the lock by now. A send already under way when the lease runs out may still land: its
   * rows are not marked, so the next active relay sends them again with the same message-id.
   */
  const holdLease = async (db: pg.Client): Promise<void> => {
    const halfLease = config.lockLeaseMs / 2;
    if (!isLost(db) && performance.now() - confirmedAt < halfLease) return;
    if (!isLost(db)) await onLockSession(db, () => db.query('SELECT 1')).catch(() => undefined);
    if (isLost(db) || performance.now() - confirmedAt >= halfLease) {
      throw new LostConnection('the relay could not confirm its lock within half its lease; it stops sending');
    }
  };

  /** A dedicated connection (not from the pool): it holds the lock and LISTENs for its whole life. */
  const connect = async (): Promise<pg.Client> => {
    const created = new pg.Client(config.connection);
    let lost = false;
    const markLost = (): void => {
      lost = true;
      // Whatever it is doing now (waiting for the broker), it sends nothing more (see holdLease).
      if (client === created && active) {
        active = false;
        logger.info('outbox relay is no longer active: its database session stopped answering');
      }
      notify();
    };
    created.on('error', (error) => {
      if (!lost) logger.warn({ err: error }, 'the outbox relay lost its database connection');
      markLost();
    });
    created.on('end', markLost);
    created.on('notification', notify);
    (created as pg.Client & { oncelyLost?: () => boolean }).oncelyLost = () => lost;
    try {
      await created.connect();
      // The lease (see lockSessionSettings): PostgreSQL ends this session if the relay goes silent.
      const { rows } = await created.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
      const settings = lockSessionSettings(config.lockLeaseMs, Number(rows[0]?.v ?? 0));
      await created.query(
        `SELECT ${Object.keys(settings)
          .map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, false)`)
          .join(', ')}`,
        Object.entries(settings).flat(),
      );
      if (settings.idle_session_timeout === undefined) {
        logger.warn(
          { lockLeaseMs: config.lockLeaseMs },
          'PostgreSQL before 14 has no idle_session_timeout: a relay cut off behind a live TCP peer keeps its lock until TCP gives up',
        );
      }
    } catch (error) {
      await endWithin(created, 1_000);
      throw error;
    }
    client = created;
    confirmedAt = Number.NEGATIVE_INFINITY;
    // Confirms the session while the relay waits (for the broker, a notification, the lock): a
    // live relay is never idle for a lease, and a relay whose session stops answering learns it
    // within half a lease (the query times out) and stops being active.
    heartbeat = setInterval(
      () => {
        if (client !== created || lost) return;
        if (performance.now() - confirmedAt < heartbeatMs(config.lockLeaseMs)) return;
        onLockSession(created, () => created.query('SELECT 1')).catch((error: unknown) => {
          if (!lost) logger.warn({ err: error }, 'the outbox relay could not confirm its database session');
          markLost();
        });
      },
      heartbeatMs(config.lockLeaseMs) / 2,
    );
    heartbeat.unref();
    return created;
  };
  const isLost = (c: pg.Client): boolean => (c as pg.Client & { oncelyLost?: () => boolean }).oncelyLost?.() === true;

  const ensureKafka = async (): Promise<RecordProducer> => {
    producer ??= await RecordProducer.connect(config.kafka, config.producerConfig, untilStopped);
    return producer;
  };

  /**
   * Whether the broker has the topic: `'yes'`, `'no'` (the list was just read again, so this
   * counts as an attempt), or `'unknown'` (read too recently to read again: the row just waits).
   */
  const topicExists = async (p: RecordProducer, topic: string): Promise<'yes' | 'no' | 'unknown'> => {
    if (knownTopics?.names.has(topic) === true) return 'yes';
    if (knownTopics !== undefined && Date.now() - knownTopics.at < config.pollIntervalMs) return 'unknown';
    knownTopics = { names: new Set(await p.listTopics()), at: Date.now() };
    return knownTopics.names.has(topic) ? 'yes' : 'no';
  };

  /**
   * Sends one round of rows. Returns how many were marked sent; throws when the broker is
   * unreachable (nothing is counted against the rows then) or the database connection was lost.
   */
  const sendRound = async (db: pg.Client, rows: readonly PendingRow[]): Promise<number> => {
    const p = await ensureKafka();
    // Rows of a key whose earlier row cannot go now wait behind it: order per key.
    const held = new Set<string>();
    const sendable: PendingRow[] = [];
    for (const row of rows) {
      const key = keyOf(row);
      if (key !== undefined && held.has(key)) continue;
      const exists = await topicExists(p, row.topic);
      if (exists === 'unknown') {
        if (key !== undefined) held.add(key);
        continue;
      }
      if (exists === 'no') {
        const park = row.attempts + 1 >= config.maxAttempts;
        await onLockSession(db, () =>
          recordAttemptFailed(
            db,
            row.id,
            { code: 'UNKNOWN_TOPIC_OR_PARTITION', message: `topic "${row.topic}" does not exist` },
            park,
          ),
        );
        logger.warn(
          { outboxId: row.id, messageId: row.messageId, topic: row.topic, attempts: row.attempts + 1, parked: park },
          park ? 'outbox event parked: its topic does not exist' : 'outbox event waits: its topic does not exist',
        );
        if (key !== undefined) held.add(key);
        continue;
      }
      sendable.push(row);
    }
    if (sendable.length === 0) return 0;
    await holdLease(db);
    try {
      await untilStopped(p.send(sendable.map(toRecord)));
    } catch (error) {
      if (error instanceof Stopped) throw error;
      const type = protocolErrorType(error);
      if (type === undefined || (!UNSENDABLE.has(type) && !PER_ROW.has(type))) throw error;
      // One record the broker refuses fails the whole batch: send row by row to find it, so only
      // that row (and the rows of its key behind it) wait. Rows of partitions that had already
      // been written are sent again: the same message-id, a `republish` downstream.
      return sendOneByOne(db, p, sendable);
    }
    await config.afterSend?.(sendable.map((r) => r.messageId));
    // Acknowledged by all in-sync replicas (acks -1): only now is a row sent. A crash before this
    // UPDATE commits re-sends the rows, with the same message-id.
    recordSent(
      await onLockSession(db, () =>
        markSent(
          db,
          sendable.map((r) => r.id),
          metrics !== undefined,
        ),
      ),
    );
    return sendable.length;
  };

  const sendOneByOne = async (db: pg.Client, p: RecordProducer, rows: readonly PendingRow[]): Promise<number> => {
    const held = new Set<string>();
    let sent = 0;
    for (const row of rows) {
      const key = keyOf(row);
      if (key !== undefined && held.has(key)) continue;
      await holdLease(db);
      try {
        await untilStopped(p.send([toRecord(row)]));
      } catch (error) {
        if (error instanceof Stopped) throw error;
        const type = protocolErrorType(error);
        if (type === undefined || (!UNSENDABLE.has(type) && !PER_ROW.has(type))) throw error;
        const park = UNSENDABLE.has(type) || row.attempts + 1 >= config.maxAttempts;
        await onLockSession(db, () => recordAttemptFailed(db, row.id, describeSendError(error, type), park));
        logger.warn(
          { outboxId: row.id, messageId: row.messageId, topic: row.topic, code: type, parked: park },
          park ? 'outbox event parked: the broker refuses it' : 'outbox event waits: the broker refused it',
        );
        if (key !== undefined) held.add(key);
        continue;
      }
      await config.afterSend?.([row.messageId]);
      recordSent(await onLockSession(db, () => markSent(db, [row.id], metrics !== undefined)));
      sent++;
    }
    return sent;
  };

  /** While active: read, send, mark; wait for a notification (or the poll) when nothing is left. */
  const relayWhileActive = async (db: pg.Client): Promise<void> => {
    let brokerFailures = 0;
    while (!stopped && !isLost(db)) {
      woken = false;
      const rows = await onLockSession(db, () => fetchPending(db, config.batchSize));
      if (rows.length === 0) {
        await sleep(config.pollIntervalMs);
        continue;
      }
      let sent: number;
      try {
        sent = await sendRound(db, rows);
        brokerFailures = 0;
      } catch (error) {
        if (error instanceof Stopped) return;
        if (isLost(db) || error instanceof LostConnection || isDatabaseError(error)) throw error;
        // The broker is unreachable (or refused the batch for a passing reason): nothing is marked,
        // nothing counted against the rows; the same rows go again after a backoff.
        brokerFailures++;
        const delayMs = backoff(brokerFailures);
        logger.warn({ err: error, delayMs }, 'the outbox relay cannot reach the broker; backing off');
        await closeKafka();
        await sleep(delayMs, false);
        woken = true; // retry at once after the backoff, not after another poll interval
        continue;
      }
      // Everything left waits (an unknown topic, a key behind a parked row): poll, do not spin.
      if (sent === 0) await sleep(config.pollIntervalMs);
    }
  };

  const run = async (): Promise<void> => {
    let failures = 0;
    while (!stopped) {
      try {
        const db = client ?? (await connect());
        const { rows } = await onLockSession(db, () =>
          db.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [RELAY_LOCK_KEY.toString()]),
        );
        failures = 0;
        if (rows[0]?.locked !== true) {
          // A standby: another relay is active. Its lock goes when its session ends.
          await sleep(config.standbyPollMs);
          continue;
        }
        active = true;
        logger.info('outbox relay is active');
        await db.query(`LISTEN ${OUTBOX_CHANNEL}`);
        await relayWhileActive(db);
        if (isLost(db)) throw new LostConnection('the relay lost its database connection');
      } catch (error) {
        if (stopped) break;
        failures++;
        const delayMs = backoff(failures);
        logger.warn({ err: error, delayMs }, 'the outbox relay failed; it will try again');
        await closeKafka();
        await closeDatabase();
        await sleep(delayMs, false);
      }
    }
  };

  const start = (): Promise<void> => {
    if (stopping !== undefined) return Promise.reject(configError('relay', 'this relay was stopped; create a new one'));
    running ??= run().catch((error: unknown) => {
      logger.error({ err: error }, 'the outbox relay stopped unexpectedly');
    });
    metrics?.start();
    return Promise.resolve();
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      stopped = true;
      metrics?.stop();
      onStop?.();
      notify();
      await running;
      await closeKafka();
      await closeDatabase();
      // Usually a moment (a send the broker is answering); bounded, for one it never answers.
      await Promise.race([Promise.all([...lingering]), new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
      if (config.ownedPool) await config.pool.end().catch(() => undefined);
    })();
    return stopping;
  };

  return { start, stop, isActive: () => active, [Symbol.asyncDispose]: stop };
}

interface ResolvedRelayOptions {
  readonly kafka: KafkaClient;
  readonly pool: pg.Pool;
  readonly ownedPool: boolean;
  readonly connection: pg.ClientConfig;
  readonly batchSize: number;
  readonly pollIntervalMs: number;
  readonly standbyPollMs: number;
  readonly lockLeaseMs: number;
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly logger: Logger;
  readonly producerConfig: KafkaProducerSettings;
  readonly afterSend: ((messageIds: readonly string[]) => Promise<void> | void) | undefined;
}

function resolveRelayOptions(options: OutboxRelayOptions): ResolvedRelayOptions {
  if (typeof options !== 'object' || options === null) throw configError('relay', 'pass { db, kafka }');
  const kafka: unknown = options.kafka;
  if (!isKafkaClient(kafka)) {
    throw configError('relay.kafka', 'expected a kafkajs client: `new Kafka({ clientId, brokers })`');
  }
  const positive = (name: string, value: number | undefined, fallback: number): number => {
    if (value === undefined) return fallback;
    if (!Number.isInteger(value) || value < 1) throw configError(`relay.${name}`, 'must be a whole number ≥ 1');
    return value;
  };
  // Before the pool is made: a refused option must not leave a pool behind.
  if (options.metrics !== undefined)
    assertRegistry('relay.metrics', (options.metrics as { registry?: unknown }).registry);
  const lockLeaseMs = options.lockLeaseMs ?? 30_000;
  if (!Number.isInteger(lockLeaseMs) || lockLeaseMs < 1_000) {
    throw configError('relay.lockLeaseMs', 'must be a whole number of milliseconds ≥ 1000');
  }
  const { pool, owned } = resolvePool(options.db);
  const poolOptions = (pool as unknown as { options?: pg.ClientConfig }).options ?? {};
  return {
    kafka: options.kafka,
    pool,
    ownedPool: owned,
    connection: {
      ...poolOptions,
      application_name: 'oncely-relay',
      // The lock session's side of the lease: the relay's own TCP keepalive notices a vanished
      // server, and a query that gets no answer for half a lease fails (the relay then stops).
      keepAlive: true,
      keepAliveInitialDelayMillis: Math.max(1_000, Math.floor(lockLeaseMs / 3)),
      query_timeout: Math.floor(lockLeaseMs / 2),
      connectionTimeoutMillis: poolOptions.connectionTimeoutMillis ?? lockLeaseMs,
    },
    lockLeaseMs,
    batchSize: positive('batchSize', options.batchSize, 500),
    pollIntervalMs: positive('pollIntervalMs', options.pollIntervalMs, 1000),
    standbyPollMs: positive('standbyPollMs', options.standbyPollMs, 2000),
    maxAttempts: positive('maxAttempts', options.maxAttempts, 10),
    initialBackoffMs: positive('initialBackoffMs', options.initialBackoffMs, 200),
    maxBackoffMs: positive('maxBackoffMs', options.maxBackoffMs, 10_000),
    logger: (options.logger ?? pino({ name: 'oncely', level: process.env.ONCELY_LOG_LEVEL ?? 'info' })).child({
      component: 'outbox-relay',
    }),
    producerConfig: options.producer ?? {},
    afterSend: options.afterSend,
  };
}

/** The (topic, key) a row's order is kept within; undefined for rows without a key (no order). */
function keyOf(row: PendingRow): string | undefined {
  return row.key === null ? undefined : `${row.topic}\u0000${row.key.toString('base64')}`;
}

/** A row as the producer sends it. */
function toRecord(row: PendingRow): OutgoingRecord {
  return {
    topic: row.topic,
    partition: row.partition,
    key: row.key,
    value: row.value,
    headers: decodeHeaders(row.headers),
  };
}

function describeSendError(error: unknown, type: string): Record<string, unknown> {
  return { code: type, name: (error as Error).name, message: (error as Error).message };
}

/** pg's errors carry a SQLSTATE code or come from a closed connection. */
function isDatabaseError(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown } | undefined;
  return (
    (typeof e?.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code)) ||
    (typeof e?.message === 'string' &&
      /Connection terminated|Client was closed|not queryable|Query read timeout/i.test(e.message))
  );
}

/**
 * Ends a pg client, waiting at most `ms` for the server to confirm: a connection that stopped
 * answering would keep `end()` waiting for ever. Then its socket is destroyed.
 */
async function endWithin(db: pg.Client, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const ended = await Promise.race([
    db.end().then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
  ]);
  clearTimeout(timer);
  if (!ended) (db as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}
