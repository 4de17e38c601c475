/**
 * Prometheus metrics of idempotent HTTP routes (`idempotent({ metrics })` and the Express and
 * Fastify adapters): requests with an Idempotency-Key by what became of their key. Labels: the
 * route name you give and the outcome — never the key, the scope or the path.
 */
import type * as PromClient from 'prom-client';

import { configError } from '../errors.js';
import { assertRegistry, loadPromClient, registeredOnce } from './registry.js';

/** The `metrics` option of `idempotent()`. */
export interface IdempotencyMetricsOptions {
  /** The prom-client `Registry` to register in (never prom-client's global one). Required. */
  readonly registry: PromClient.Registry;
  /**
   * The `route` label of this route's series: a fixed name of your choosing (`'create-payment'`),
   * never derived from the request, so the number of series stays bounded. Default `''`.
   */
  readonly route?: string;
}

export const IDEMPOTENCY_METRIC_NAMES = ['oncely_idempotency_requests_total'] as const;

/**
 * What became of a request's key: `created` (the handler ran and its response was stored),
 * `replayed` (a stored response was played back), `conflict` (409: the key was in use by a request
 * still running), `mismatch` (422: the key was used with other parameters).
 */
export type IdempotencyOutcome = 'created' | 'replayed' | 'conflict' | 'mismatch';

/** Counts one request's outcome; made once per route. */
export type IdempotencyCounter = (outcome: IdempotencyOutcome) => void;

export function attachIdempotencyMetrics(options: IdempotencyMetricsOptions): IdempotencyCounter {
  if (typeof options !== 'object' || options === null) throw configError('metrics', 'pass { registry }');
  assertRegistry('metrics', options.registry);
  const route = options.route ?? '';
  if (typeof route !== 'string' || route.length > 100) {
    throw configError('metrics.route', 'must be a fixed route name of at most 100 characters');
  }
  const client = loadPromClient('metrics');
  const registry = options.registry;
  const counter = registeredOnce<PromClient.Counter<'route' | 'outcome'>>(
    registry,
    'oncely_idempotency_requests_total',
    () =>
      new client.Counter({
        name: 'oncely_idempotency_requests_total',
        help: 'Requests with an Idempotency-Key by outcome: created (ran and stored), replayed (a stored response played back), conflict (409, key in use), mismatch (422, key used with other parameters).',
        labelNames: ['route', 'outcome'] as const,
        registers: [registry],
      }),
  );
  // Zero series for every outcome: a rate() over a counter that appears late misses its first count.
  for (const outcome of ['created', 'replayed', 'conflict', 'mismatch'] as const) counter.inc({ route, outcome }, 0);
  return (outcome) => {
    counter.inc({ route, outcome });
  };
}
