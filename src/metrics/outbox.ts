/**
 * Prometheus metrics of an outbox relay (`createOutboxRelay({ metrics })`): how many events wait
 * in `oncely.outbox`, how old the oldest one is, and how long events took from their publishing
 * transaction to the broker's acknowledgement. Labels: topic and status only, never a key or id.
 */
import type { Logger } from 'pino';
import type * as PromClient from 'prom-client';

import { assertRegistry, loadPromClient, registeredOnce } from './registry.js';

/** The `metrics` option of `createOutboxRelay()` (and of a consumer's `relay`). */
export interface RelayMetricsOptions {
  /** The prom-client `Registry` to register in (never prom-client's global one). Required. */
  readonly registry: PromClient.Registry;
  /**
   * The least time between two reads of the backlog figures, which a scrape asks the database
   * for; scrapes in between get the last figures. Default 15 000 ms.
   */
  readonly refreshIntervalMs?: number;
}

export const RELAY_METRIC_NAMES = [
  'oncely_outbox_backlog',
  'oncely_outbox_oldest_pending_age_seconds',
  'oncely_relay_latency_seconds',
] as const;

/** What the relay's backlog read returns: counts per topic and status, and the oldest pending row's age. */
export interface OutboxBacklog {
  readonly counts: readonly { readonly topic: string; readonly status: 'pending' | 'parked'; readonly rows: number }[];
  /** Seconds since the oldest pending row was written; null when none is pending. */
  readonly oldestPendingAgeSeconds: number | null;
}

/** From 10 ms (a relay woken by NOTIFY) to an hour (a relay that was down). */
const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

export interface RelayMetrics {
  /** Observes `sent_at − created_at` of rows just marked sent. */
  observeSent(rows: readonly { readonly topic: string; readonly latencySeconds: number }[]): void;
  /** Starts answering the backlog gauges from this relay's database. */
  start(): void;
  stop(): void;
}

interface Shared {
  readonly latency: PromClient.Histogram<'topic'>;
  readonly sources: Set<() => Promise<OutboxBacklog | undefined>>;
}

const byRegistry = new WeakMap<PromClient.Registry, Shared>();

function sharedOf(registry: PromClient.Registry): Shared {
  const existing = byRegistry.get(registry);
  if (existing !== undefined) return existing;
  const client = loadPromClient('relay.metrics');
  const registers = [registry];
  const sources = new Set<() => Promise<OutboxBacklog | undefined>>();
  // Every relay of a database reports the same backlog, standbys included: a backlog that grows
  // because the active relay died is seen from the relays that remain. The first answer wins.
  const read = async (): Promise<OutboxBacklog | undefined> => {
    for (const source of sources) {
      const backlog = await source();
      if (backlog !== undefined) return backlog;
    }
    return undefined;
  };
  registeredOnce(
    registry,
    'oncely_outbox_backlog',
    () =>
      new client.Gauge({
        name: 'oncely_outbox_backlog',
        help: 'Outbox events not sent yet, per topic and status: pending (the relay will send them) or parked (waiting for `oncely outbox retry` or `discard`).',
        labelNames: ['topic', 'status'] as const,
        registers,
        async collect() {
          this.reset();
          for (const row of (await read())?.counts ?? []) this.set({ topic: row.topic, status: row.status }, row.rows);
        },
      }),
  );
  registeredOnce(
    registry,
    'oncely_outbox_oldest_pending_age_seconds',
    () =>
      new client.Gauge({
        name: 'oncely_outbox_oldest_pending_age_seconds',
        help: 'Age of the oldest pending outbox event (0 when none is pending): grows when no relay sends.',
        registers,
        async collect() {
          const backlog = await read();
          this.reset();
          if (backlog !== undefined) this.set(backlog.oldestPendingAgeSeconds ?? 0);
        },
      }),
  );
  const shared: Shared = {
    latency: registeredOnce(
      registry,
      'oncely_relay_latency_seconds',
      () =>
        new client.Histogram({
          name: 'oncely_relay_latency_seconds',
          help: "Per event sent, sent_at − created_at: from the publishing transaction's start to the broker's acknowledgement being recorded.",
          labelNames: ['topic'] as const,
          buckets: LATENCY_BUCKETS,
          registers,
        }),
    ),
    sources,
  };
  byRegistry.set(registry, shared);
  return shared;
}

/**
 * Registers the relay metrics in `options.registry` (once per registry). `readBacklog` is called
 * at most once per `refreshIntervalMs`, whatever the scrape rate: its cost stays bounded.
 */
export function attachRelayMetrics(
  options: RelayMetricsOptions,
  readBacklog: () => Promise<OutboxBacklog>,
  logger: Logger,
): RelayMetrics {
  assertRegistry('relay.metrics', options.registry);
  const shared = sharedOf(options.registry);
  const intervalMs = options.refreshIntervalMs ?? 15_000;
  let last: { at: number; value: OutboxBacklog | undefined } | undefined;
  let pending: Promise<OutboxBacklog | undefined> | undefined;
  const source = (): Promise<OutboxBacklog | undefined> => {
    if (last !== undefined && Date.now() - last.at < intervalMs) return Promise.resolve(last.value);
    pending ??= readBacklog()
      .catch((error: unknown) => {
        logger.warn({ err: error }, 'could not read the outbox backlog for metrics; the series is left out');
        return undefined;
      })
      .then((value) => {
        last = { at: Date.now(), value };
        return value;
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };
  return {
    observeSent(rows) {
      for (const row of rows) shared.latency.observe({ topic: row.topic }, Math.max(0, row.latencySeconds));
    },
    start() {
      shared.sources.add(source);
    },
    stop() {
      shared.sources.delete(source);
    },
  };
}
