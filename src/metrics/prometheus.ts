import type { KafkaAdmin, KafkaClient } from '../kafka/client.js';
/**
 * Prometheus metrics fed from a consumer's event hub. prom-client is an optional peer dependency:
 * it is loaded only when a consumer is given `metrics`, and metrics go to the registry the user
 * passes (never prom-client's global one), so two consumers or two libraries cannot collide.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import type * as PromClient from 'prom-client';

import {
  countOpenDeadLetters,
  type OpenDeadLetterCount,
  runningReplayTotals,
  type RunningReplayTotals,
} from '../inbox/status.js';
import { type PartitionLag, readConsumerLag } from '../kafka/lag.js';
import type { EventHub } from '../events/index.js';

import { IDEMPOTENCY_METRIC_NAMES } from './idempotency.js';
import { RELAY_METRIC_NAMES } from './outbox.js';
import { loadPromClient } from './registry.js';

/** The `metrics` option of `createInboxConsumer()`. */
export interface MetricsOptions {
  /**
   * The prom-client `Registry` the metrics are registered in: `new Registry()` (serve it with
   * `registry.metrics()`). Required. Consumers sharing a registry share the metrics (labelled by
   * group); prom-client's global registry is never used unless you pass it.
   */
  readonly registry: PromClient.Registry;
  /**
   * The least time between two reads of the figures a scrape asks the broker and the database
   * for (`oncely_consumer_lag`, `oncely_dead_letters_open`, the replay gauges); scrapes in between
   * get the last figures. Default 15 000 ms.
   */
  readonly refreshIntervalMs?: number;
  /** Read `oncely_consumer_lag` from Kafka's admin API when scraped. Default true. */
  readonly lag?: boolean;
}

/** The metrics a consumer's `metrics` option registers. */
export const CONSUMER_METRIC_NAMES = [
  'oncely_messages_total',
  'oncely_handler_duration_seconds',
  'oncely_transaction_duration_seconds',
  'oncely_duplicate_age_seconds',
  'oncely_retries_total',
  'oncely_consumer_lag',
  'oncely_dead_letters_open',
  'oncely_replay_replayed_messages',
  'oncely_replay_remaining_messages',
] as const;

/**
 * Every metric name oncely registers (the dashboard and alert rules are built on these): a
 * consumer's, an outbox relay's and the idempotent HTTP routes'.
 */
export const METRIC_NAMES = [...CONSUMER_METRIC_NAMES, ...RELAY_METRIC_NAMES, ...IDEMPOTENCY_METRIC_NAMES] as const;

/** What one consumer gives the gauges read on scrape. */
interface Source {
  readonly groupId: string;
  readLag(): Promise<readonly PartitionLag[]>;
  readDeadLetters(): Promise<readonly OpenDeadLetterCount[]>;
  readReplays(): Promise<readonly RunningReplayTotals[]>;
}

interface RegistryMetrics {
  readonly messages: PromClient.Counter<'group' | 'topic' | 'outcome' | 'duplicate_class' | 'reason'>;
  readonly handler: PromClient.Histogram<'group' | 'topic'>;
  readonly transaction: PromClient.Histogram<'group' | 'topic'>;
  readonly duplicateAge: PromClient.Histogram<'group' | 'topic' | 'duplicate_class'>;
  readonly retries: PromClient.Counter<'group' | 'topic'>;
  readonly sources: Set<Source>;
  /** Counts of the two per-message outcomes, added to `messages` when it is collected (see countOutcome). */
  readonly pending: Map<string, PendingCount>;
}

type MessageLabels = Record<'group' | 'topic' | 'outcome' | 'duplicate_class' | 'reason', string>;

interface PendingCount {
  readonly labels: MessageLabels;
  count: number;
}

const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const HOUR = 3600;
const DAY = 24 * HOUR;
/** From a second to a month: where a late duplicate falls against a retention window of days. */
const AGE_BUCKETS = [1, 10, 60, 300, 900, HOUR, 6 * HOUR, DAY, 2 * DAY, 3 * DAY, 5 * DAY, 7 * DAY, 14 * DAY, 30 * DAY];

// One set of metric objects per registry: prom-client refuses a second registration of a name.
const byRegistry = new WeakMap<PromClient.Registry, RegistryMetrics>();

function metricsOf(registry: PromClient.Registry): RegistryMetrics {
  const existing = byRegistry.get(registry);
  if (existing !== undefined) return existing;
  const client = loadPromClient();
  const registers = [registry];
  const sources = new Set<Source>();
  const pending = new Map<string, PendingCount>();
  const metrics: RegistryMetrics = {
    messages: new client.Counter({
      name: 'oncely_messages_total',
      help: 'Messages by recorded outcome (processed, duplicate, dead_lettered, skipped), duplicate class and dead-letter reason.',
      labelNames: ['group', 'topic', 'outcome', 'duplicate_class', 'reason'] as const,
      registers,
      // Runs before every read of the counter (a scrape, get()): what was counted since is added now.
      collect() {
        for (const entry of pending.values()) {
          if (entry.count === 0) continue;
          this.inc(entry.labels, entry.count);
          entry.count = 0;
        }
      },
    }),
    handler: new client.Histogram({
      name: 'oncely_handler_duration_seconds',
      help: "Time in the user's handler per committed transaction (one message, a commit group of messages, or one chunk in batch mode).",
      labelNames: ['group', 'topic'] as const,
      buckets: DURATION_BUCKETS,
      registers,
    }),
    transaction: new client.Histogram({
      name: 'oncely_transaction_duration_seconds',
      help: 'Processing transactions from first statement to COMMIT (one message, a commit group of messages, or one chunk in batch mode).',
      labelNames: ['group', 'topic'] as const,
      buckets: DURATION_BUCKETS,
      registers,
    }),
    duplicateAge: new client.Histogram({
      name: 'oncely_duplicate_age_seconds',
      help: 'Time since the original was processed, per skipped duplicate: how close late duplicates come to the inbox retention window.',
      labelNames: ['group', 'topic', 'duplicate_class'] as const,
      buckets: AGE_BUCKETS,
      registers,
    }),
    retries: new client.Counter({
      name: 'oncely_retries_total',
      help: 'Failed handler attempts that will be retried.',
      labelNames: ['group', 'topic'] as const,
      registers,
    }),
    sources,
    pending,
  };
  new client.Gauge({
    name: 'oncely_consumer_lag',
    help: "Records not yet committed past, per partition: log end offset minus the group's committed offset.",
    labelNames: ['group', 'topic', 'partition'] as const,
    registers,
    async collect() {
      this.reset();
      await Promise.all(
        [...sources].map(async (source) => {
          for (const p of await source.readLag()) {
            this.set({ group: source.groupId, topic: p.topic, partition: String(p.partition) }, p.lag);
          }
        }),
      );
    },
  });
  new client.Gauge({
    name: 'oncely_dead_letters_open',
    help: 'Dead letters waiting for `oncely dead-letters retry` or `discard`, per topic and reason.',
    labelNames: ['group', 'topic', 'reason'] as const,
    registers,
    async collect() {
      this.reset();
      await Promise.all(
        [...sources].map(async (source) => {
          for (const row of await source.readDeadLetters()) {
            this.set({ group: source.groupId, topic: row.topic, reason: row.reason }, row.open);
          }
        }),
      );
    },
  });
  // Replays are run by an operator (`oncely replay run`) and re-consumed by the group's consumers:
  // their progress is the group's resume point against each range end, read from the database.
  const replayGauge = (name: string, help: string, value: (row: RunningReplayTotals) => number): void => {
    new client.Gauge({
      name,
      help,
      labelNames: ['group', 'topic'] as const,
      registers,
      async collect() {
        this.reset();
        await Promise.all(
          [...sources].map(async (source) => {
            // Read once per refresh interval (see `cached`), whichever of the two gauges asks first.
            for (const row of await source.readReplays()) {
              this.set({ group: source.groupId, topic: row.topic }, value(row));
            }
          }),
        );
      },
    });
  };
  replayGauge(
    'oncely_replay_replayed_messages',
    'Messages re-read so far by the replays of a group still running (summed per topic).',
    (row) => row.replayed,
  );
  replayGauge(
    'oncely_replay_remaining_messages',
    'Messages the replays of a group still running have left to re-read (summed per topic).',
    (row) => row.remaining,
  );
  byRegistry.set(registry, metrics);
  return metrics;
}

export interface ConsumerMetricsInput {
  readonly groupId: string;
  readonly topics: readonly string[];
  readonly events: EventHub;
  readonly kafka: KafkaClient;
  readonly pool: pg.Pool;
  readonly logger: Logger;
}

export interface ConsumerMetrics {
  /** Starts answering the scrape-time gauges (lag, open dead letters) for this consumer. */
  start(): void;
  /** Stops answering them and closes the admin client used for lag. */
  stop(): Promise<void>;
}

/**
 * Registers oncely's metrics in `options.registry` (once per registry) and counts this consumer's
 * outcomes into them. Labels are bounded: group, topic, partition, outcome, class and reason —
 * never a message id or key.
 */
export function attachMetrics(options: MetricsOptions, input: ConsumerMetricsInput): ConsumerMetrics {
  const metrics = metricsOf(options.registry);
  const group = input.groupId;
  const { events } = input;

  // Processed and duplicate outcomes come once per message, tens of thousands a second in batch
  // mode: each is a number added to a per-label-set count, which the counter takes in when it is
  // read. prom-client's inc() hashes its labels on every call, which cost more than the rest of
  // what metrics do per message.
  const countOutcome = (topic: string, outcome: 'processed' | 'duplicate', duplicateClass: string): void => {
    const key = `${group}\u0000${topic}\u0000${outcome}\u0000${duplicateClass}`;
    let entry = metrics.pending.get(key);
    if (entry === undefined) {
      entry = { labels: { group, topic, outcome, duplicate_class: duplicateClass, reason: '' }, count: 0 };
      metrics.pending.set(key, entry);
    }
    entry.count += 1;
  };
  events.on('message:processed', (e) => {
    countOutcome(e.topic, 'processed', '');
  });
  events.on('message:duplicate', (e) => {
    countOutcome(e.topic, 'duplicate', e.duplicateClass);
    const processedAt = e.original.processedAt;
    if (processedAt === null) return; // no inbox row to measure from: a dead letter replayed
    const ageSeconds = Math.max(0, (Date.now() - processedAt.getTime()) / 1000);
    metrics.duplicateAge.observe({ group, topic: e.topic, duplicate_class: e.duplicateClass }, ageSeconds);
  });
  events.on('message:dead-lettered', (e) => {
    // A reused id is a duplicate class of its own (a producer bug), dead-lettered rather than skipped.
    const duplicateClass = e.reason === 'key_reuse' ? 'key_reuse' : '';
    metrics.messages.inc({
      group,
      topic: e.topic,
      outcome: 'dead_lettered',
      duplicate_class: duplicateClass,
      reason: e.reason,
    });
  });
  events.on('message:skipped', (e) => {
    metrics.messages.inc({ group, topic: e.topic, outcome: 'skipped', duplicate_class: '', reason: e.reason });
  });
  events.on('message:retrying', (e) => {
    metrics.retries.inc({ group, topic: e.topic });
  });
  events.on('transaction:committed', (e) => {
    metrics.handler.observe({ group, topic: e.topic }, e.handlerMs / 1000);
    metrics.transaction.observe({ group, topic: e.topic }, e.durationMs / 1000);
  });

  const intervalMs = options.refreshIntervalMs ?? 15_000;
  let admin: Promise<KafkaAdmin> | undefined;
  const connectAdmin = (): Promise<KafkaAdmin> => {
    admin ??= (async () => {
      const created = input.kafka.admin();
      await created.connect();
      return created;
    })().catch((error: unknown) => {
      admin = undefined;
      throw error;
    });
    return admin;
  };
  const source: Source = {
    groupId: group,
    readLag:
      options.lag === false
        ? () => Promise.resolve([])
        : cached(intervalMs, 'consumer lag', input.logger, async () =>
            readConsumerLag(await connectAdmin(), group, input.topics),
          ),
    readDeadLetters: cached(intervalMs, 'open dead letters', input.logger, () =>
      countOpenDeadLetters(input.pool, group),
    ),
    // One read serves both replay gauges of a scrape (the cache answers the second).
    readReplays: cached(intervalMs, 'replay progress', input.logger, () => runningReplayTotals(input.pool, group)),
  };

  return {
    start: () => {
      metrics.sources.add(source);
    },
    stop: async () => {
      metrics.sources.delete(source);
      const current = admin;
      admin = undefined;
      await current?.then((a) => a.disconnect()).catch(() => undefined);
    },
  };
}

/**
 * At most one read per `intervalMs` (scrapes in between get the last figures), one read at a time.
 * A failed read is logged and yields no figures: a missing series is honest, a stale one is not.
 */
export function cached<T>(
  intervalMs: number,
  what: string,
  logger: Logger,
  read: () => Promise<readonly T[]>,
): () => Promise<readonly T[]> {
  let last: { at: number; value: readonly T[] } | undefined;
  let pending: Promise<readonly T[]> | undefined;
  return () => {
    if (last !== undefined && Date.now() - last.at < intervalMs) return Promise.resolve(last.value);
    pending ??= read()
      .then((value) => {
        last = { at: Date.now(), value };
        return value;
      })
      .catch((error: unknown) => {
        logger.warn({ err: error }, `could not read ${what} for metrics; the series is left out until the next read`);
        // Rate-limited like a success: a database or broker that is down is not asked on every scrape.
        last = { at: Date.now(), value: [] };
        return [];
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };
}
