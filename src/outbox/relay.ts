/**
 * The outbox relay: sends committed outbox rows to Kafka and marks them sent after the broker
 * acknowledged them. It composes the outbox's SQL (store.ts) with a kafkajs producer, as the
 * pipeline composes the inbox with the consumer. Its parts: the lock session (lock-session.ts),
 * the producer (relay-producer.ts), one round of sends (relay-rounds.ts), and here the loop that
 * stands by, becomes active, and backs off.
 */
import { configError } from '../errors.js';
import { attachRelayMetrics, type RelayMetrics } from '../metrics/outbox.js';
import { LockSession, LockSessionLost } from './lock-session.js';
import { type OutboxRelayOptions, type ResolvedRelayOptions, resolveRelayOptions } from './relay-options.js';
import { RelayProducer, RelayStopped } from './relay-producer.js';
import { type RoundParts, sendRound } from './relay-rounds.js';
import { fetchPending, OUTBOX_CHANNEL, readOutboxBacklog } from './store.js';
import { Wakeup } from './wakeup.js';

export type { OutboxRelayOptions } from './relay-options.js';

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
  const relay = new Relay(resolveRelayOptions(options));
  const stop = (): Promise<void> => relay.stop();
  return { start: () => relay.start(), stop, isActive: () => relay.active, [Symbol.asyncDispose]: stop };
}

/** One relay: a standby until it takes the lock, then active until it stops or loses its session. */
class Relay {
  readonly #config: ResolvedRelayOptions;
  /** Built only when asked for; the backlog is read through the pool, not the relay's own session. */
  readonly #metrics: RelayMetrics | undefined;
  readonly #producer: RelayProducer;
  readonly #rounds: RoundParts;
  readonly #wakeup = new Wakeup();
  /** The session holding (or trying for) the lock; undefined between sessions. */
  #session: LockSession | undefined;
  #active = false;
  #stopped = false;
  #running: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;

  constructor(config: ResolvedRelayOptions) {
    this.#config = config;
    this.#metrics =
      config.metrics === undefined
        ? undefined
        : attachRelayMetrics(config.metrics, () => readOutboxBacklog(config.pool), config.logger);
    this.#producer = new RelayProducer(config.kafka, config.producerConfig, config.pollIntervalMs);
    const metrics = this.#metrics;
    this.#rounds = {
      producer: this.#producer,
      config,
      onSent: metrics === undefined ? undefined : (sent) => metrics.observeSent(sent),
    };
  }

  /** Whether this relay holds the lock and sends. */
  get active(): boolean {
    return this.#active;
  }

  start(): Promise<void> {
    if (this.#stopping !== undefined)
      return Promise.reject(configError('relay', 'this relay was stopped; create a new one'));
    this.#running ??= this.run().catch((error: unknown) => {
      this.#config.logger.error({ err: error }, 'the outbox relay stopped unexpectedly');
    });
    this.#metrics?.start();
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#stopped = true;
      this.#metrics?.stop();
      this.#producer.abandon();
      this.#wakeup.stop();
      await this.#running;
      await this.#producer.close();
      await this.closeSession();
      // Usually a moment (a send the broker is answering); bounded, for one it never answers.
      await this.#producer.settle(2_000);
      if (this.#config.ownedPool) await this.#config.pool.end().catch(() => undefined);
    })();
    return this.#stopping;
  }

  /** Stands by, becomes active, relays; after a failure closes everything and tries again after a backoff. */
  private async run(): Promise<void> {
    const { logger } = this.#config;
    let failures = 0;
    while (!this.#stopped) {
      try {
        const session = this.#session ?? (await this.connect());
        const locked = await session.tryLock();
        failures = 0;
        if (!locked) {
          // A standby: another relay is active. Its lock goes when its session ends.
          await this.#wakeup.sleep(this.#config.standbyPollMs);
          continue;
        }
        this.#active = true;
        logger.info('outbox relay is active');
        await session.listen(OUTBOX_CHANNEL);
        await this.relayWhileActive(session);
        if (session.lost) throw new LockSessionLost('the relay lost its database connection');
      } catch (error) {
        if (this.#stopped) break;
        failures++;
        const delayMs = this.backoff(failures);
        logger.warn({ err: error, delayMs }, 'the outbox relay failed; it will try again');
        await this.#producer.close();
        await this.closeSession();
        await this.#wakeup.sleep(delayMs, false);
      }
    }
  }

  /** While active: read, send, mark; wait for a notification (or the poll) when nothing is left. */
  private async relayWhileActive(session: LockSession): Promise<void> {
    const { batchSize, pollIntervalMs, logger } = this.#config;
    let brokerFailures = 0;
    while (!this.#stopped && !session.lost) {
      this.#wakeup.reset();
      const rows = await session.run((db) => fetchPending(db, batchSize));
      if (rows.length === 0) {
        await this.#wakeup.sleep(pollIntervalMs);
        continue;
      }
      let sent: number;
      try {
        sent = await sendRound(this.#rounds, session, rows);
        brokerFailures = 0;
      } catch (error) {
        if (error instanceof RelayStopped) return;
        if (session.lost || error instanceof LockSessionLost || isDatabaseError(error)) throw error;
        // The broker is unreachable (or refused the batch for a passing reason): nothing is marked,
        // nothing counted against the rows; the same rows go again after a backoff.
        brokerFailures++;
        const delayMs = this.backoff(brokerFailures);
        logger.warn({ err: error, delayMs }, 'the outbox relay cannot reach the broker; backing off');
        await this.#producer.close();
        await this.#wakeup.sleep(delayMs, false);
        this.#wakeup.notify(); // retry at once after the backoff, not after another poll interval
        continue;
      }
      // Everything left waits (an unknown topic, a key behind a parked row): poll, do not spin.
      if (sent === 0) await this.#wakeup.sleep(pollIntervalMs);
    }
  }

  /** Opens a lock session and makes it this relay's. */
  private async connect(): Promise<LockSession> {
    const { connection, lockLeaseMs, logger } = this.#config;
    const session = await LockSession.open({
      connection,
      lockLeaseMs,
      logger,
      onLost: (lost) => {
        // Whatever it is doing now (waiting for the broker), it sends nothing more (see holdLease).
        if (this.#session === lost && this.#active) {
          this.#active = false;
          logger.info('outbox relay is no longer active: its database session stopped answering');
        }
        this.#wakeup.notify();
      },
      onNotification: () => this.#wakeup.notify(),
    });
    this.#session = session;
    return session;
  }

  /** Ends the lock session, which releases the lock: a standby takes over. */
  private async closeSession(): Promise<void> {
    const current = this.#session;
    this.#session = undefined;
    if (this.#active) this.#config.logger.info('outbox relay is no longer active');
    this.#active = false;
    await current?.end();
  }

  private backoff(failures: number): number {
    const { initialBackoffMs, maxBackoffMs } = this.#config;
    return Math.min(maxBackoffMs, initialBackoffMs * 2 ** Math.min(failures - 1, 20)) * (0.8 + Math.random() * 0.4);
  }
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
