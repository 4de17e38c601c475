/** The options of `createOutboxRelay()`: what a user passes, its schema, and the values the relay runs with. */
import type pg from 'pg';
import { pino, type Logger } from 'pino';
import { z } from 'zod';

import { isKafkaClient, type KafkaClient, type KafkaProducerSettings } from '../kafka/client.js';
import { type DatabaseInput, resolvePool } from '../inbox/database.js';
import type { RelayMetricsOptions } from '../metrics/outbox.js';
import { registrySchema } from '../metrics/registry.js';
import { parseOptions } from '../options.js';

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

/** The options resolved once, at construction: every default applied, the pool made. */
export interface ResolvedRelayOptions {
  readonly kafka: KafkaClient;
  readonly pool: pg.Pool;
  readonly ownedPool: boolean;
  /** The settings of the relay's own lock session (not a pooled connection). */
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
  readonly metrics: RelayMetricsOptions | undefined;
  readonly afterSend: ((messageIds: readonly string[]) => Promise<void> | void) | undefined;
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null;

const wholeAtLeastOne = (fallback: number) =>
  z.int('must be a whole number ≥ 1').min(1, 'must be a whole number ≥ 1').default(fallback);

const relaySchema = z.strictObject(
  {
    db: z.custom<DatabaseInput>((v) => typeof v === 'string' || isObject(v), {
      message: 'expected a drizzle node-postgres database, a pg Pool or a connection URL',
    }),
    kafka: z.custom<KafkaClient>(isKafkaClient, {
      message: 'expected a kafkajs client: `new Kafka({ clientId, brokers })`',
    }),
    batchSize: wholeAtLeastOne(500),
    pollIntervalMs: wholeAtLeastOne(1000),
    standbyPollMs: wholeAtLeastOne(2000),
    lockLeaseMs: z
      .int('must be a whole number of milliseconds ≥ 1000')
      .min(1_000, 'must be a whole number of milliseconds ≥ 1000')
      .default(30_000),
    maxAttempts: wholeAtLeastOne(10),
    initialBackoffMs: wholeAtLeastOne(200),
    maxBackoffMs: wholeAtLeastOne(10_000),
    logger: z
      .custom<Logger>((v) => isObject(v) && typeof v.child === 'function' && typeof v.info === 'function', {
        message: 'expected a pino logger: `pino()`',
      })
      .optional(),
    producer: z
      .custom<KafkaProducerSettings>(isObject, { message: 'expected kafkajs producer settings, e.g. { retry: { … } }' })
      .default({}),
    // Loose: a consumer hands its own `metrics` option (with `lag`) to the relay it runs.
    metrics: z
      .looseObject({
        registry: registrySchema,
        refreshIntervalMs: z.int('must be a whole number of milliseconds').min(0, 'must be 0 or more').optional(),
      })
      .optional(),
    afterSend: z
      .custom<(messageIds: readonly string[]) => Promise<void> | void>((v) => typeof v === 'function', {
        message: 'expected a function',
      })
      .optional(),
  },
  { error: (issue) => (issue.code === 'invalid_type' ? 'pass { db, kafka }' : undefined) },
);

/**
 * Validates the options (errors name them `relay.<option>`, as a consumer's `relay` settings are
 * named) and resolves every default. The pool is made last: a refused option leaves none behind.
 */
export function resolveRelayOptions(options: OutboxRelayOptions): ResolvedRelayOptions {
  const o = parseOptions(relaySchema, options, ['relay']);
  const { lockLeaseMs } = o;
  const { pool, owned } = resolvePool(o.db);
  const poolOptions = (pool as unknown as { options?: pg.ClientConfig }).options ?? {};
  return {
    kafka: o.kafka,
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
    batchSize: o.batchSize,
    pollIntervalMs: o.pollIntervalMs,
    standbyPollMs: o.standbyPollMs,
    maxAttempts: o.maxAttempts,
    initialBackoffMs: o.initialBackoffMs,
    maxBackoffMs: o.maxBackoffMs,
    logger: (o.logger ?? pino({ name: 'oncely', level: process.env.ONCELY_LOG_LEVEL ?? 'info' })).child({
      component: 'outbox-relay',
    }),
    producerConfig: o.producer,
    metrics: options.metrics,
    afterSend: o.afterSend,
  };
}
