/** The options of an idempotent route (`idempotent()`, `oncely/express`, `oncely/fastify`), their schema, and the values a route runs with. */
import type pg from 'pg';
import { z } from 'zod';

import {
  createTransactionBinder,
  resolvePool,
  type OncelyDatabase,
  type TransactionBinder,
} from '../inbox/database.js';
import { isWellFormedText } from '../identity.js';
import {
  attachIdempotencyMetrics,
  type IdempotencyCounter,
  type IdempotencyMetricsOptions,
} from '../metrics/idempotency.js';
import { registrySchema } from '../metrics/registry.js';
import { parseOptions } from '../options.js';
import { type AdmissionOptions, resolveAdmission, type ResolvedAdmission } from './admission.js';
import { defaultFingerprint, type Fingerprint } from './fingerprint.js';

/** Response headers stored and replayed by default (names in lower case). */
export const DEFAULT_STORED_RESPONSE_HEADERS: readonly string[] = [
  'content-type',
  'content-language',
  'content-location',
  'location',
  'etag',
  'last-modified',
];

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Options of `idempotent()`. `R` is the request type `scope` receives: the Web `Request` here,
 * the framework's own request in `oncely/express` and `oncely/fastify`.
 */
export interface IdempotentOptions<R = Request> {
  /**
   * The drizzle node-postgres database (over a `pg` Pool) the key and the effects are written to.
   * Each request holds one pooled connection for its whole transaction, and a second one while it
   * records a step: pool max ≥ 2 × the requests you serve at once (waiting requests with
   * `concurrent: 'wait'` hold one too).
   */
  readonly db: OncelyDatabase;
  /**
   * Whose keys these are: the API key, account or tenant, a string of 1–255 characters. Required:
   * a key is looked up within its scope only, so one caller's key never replays another caller's
   * response. A string applies one scope to every request (a single-tenant service).
   */
  readonly scope: string | ((request: R) => string | Promise<string>);
  /** Refuse a request without an `Idempotency-Key` header (400). Default `true`. */
  readonly required?: boolean;
  /** How long a key is kept and replayed, in milliseconds; after that it is new again. Default 24 h. */
  readonly ttl?: number;
  /**
   * A request whose key is in use by a running request: `'reject'` answers 409
   * `idempotency_key_in_use` with `Retry-After`; `'wait'` waits up to `waitTimeoutMs` for it to
   * finish and then replays its response (or runs, if it rolled back). Default `'reject'`.
   */
  readonly concurrent?: 'reject' | 'wait';
  /** With `concurrent: 'wait'`: the longest wait before answering 409. Default 10 000 ms. */
  readonly waitTimeoutMs?: number;
  /** The `Retry-After` (seconds) sent with 409 `idempotency_key_in_use`. Default 1. */
  readonly retryAfterSeconds?: number;
  /** What makes two requests "the same" for one key. Default {@link defaultFingerprint}. */
  readonly fingerprint?: Fingerprint;
  /** Largest request body read, in bytes; larger → 413 `request_body_too_large`. Default 1 MiB. */
  readonly maxBodyBytes?: number;
  /**
   * Largest response body stored, in bytes; larger → the transaction rolls back and the client
   * gets 500 `response_too_large` (nothing is stored, nothing committed). Default 1 MiB.
   */
  readonly maxResponseBytes?: number;
  /**
   * Response headers stored and replayed (case-insensitive). Others (`set-cookie`, `date`, trace
   * ids) are sent on first use only. Default {@link DEFAULT_STORED_RESPONSE_HEADERS}.
   */
  readonly storedHeaders?: readonly string[];
  /**
   * Whether a 5xx response the handler returns is committed and stored like any other. Default
   * `false`: a 5xx rolls the transaction back and stores nothing, so a retry runs again — the
   * effects are transactional, so unlike Stripe there is no half-done work a replay must report.
   */
  readonly storeServerErrors?: boolean;
  /** Prefix of the problem `type` URIs (`<prefix><problem name>`). Default `'urn:oncely:problem:'`. */
  readonly problemTypeBase?: string;
  /** `SET LOCAL statement_timeout` for the request's transaction, in ms. Default: none. */
  readonly statementTimeoutMs?: number;
  /**
   * Prometheus metrics (needs the optional peer `prom-client`): `{ registry, route? }` counts
   * requests with a key in `oncely_idempotency_requests_total{route, outcome}` (`created`,
   * `replayed`, `conflict`, `mismatch`). `route` is a fixed name for this route. Default: none.
   */
  readonly metrics?: IdempotencyMetricsOptions;
  /**
   * How many requests hold connections at once (docs/http.md, "Under load"): every idempotent route on a
   * pool shares one limit of `connections` (default the pool's max), each request takes
   * `connectionsPerRequest` (default 2: its transaction and a step record) before its transaction
   * and waits at most `queueTimeoutMs` (default 5 000) for them; past that, or beyond `maxQueue`
   * waiting requests (default 1 000), it is answered 503 `server_busy` with `Retry-After`.
   */
  readonly admission?: AdmissionOptions;
}

/** A route's options resolved once, when the route is made. */
export interface ResolvedRouteOptions {
  readonly pool: pg.Pool;
  readonly bind: TransactionBinder;
  readonly required: boolean;
  readonly ttl: number;
  readonly concurrent: 'reject' | 'wait';
  readonly waitTimeoutMs: number;
  readonly retryAfterSeconds: number;
  readonly fingerprint: Fingerprint;
  readonly maxBodyBytes: number;
  readonly maxResponseBytes: number;
  readonly storedHeaders: ReadonlySet<string>;
  readonly storeServerErrors: boolean;
  readonly problemTypeBase: string;
  readonly statementTimeoutMs: number | undefined;
  readonly count: IdempotencyCounter | undefined;
  readonly admission: ResolvedAdmission;
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null;

/** "expected …, got <what was given>." */
const gotInstead =
  (expected: string) =>
  (issue: { readonly input?: unknown }): string =>
    `${expected}, got ${String(issue.input)}.`;

const positiveNumber = (fallback: number) =>
  z
    .number({ error: gotInstead('expected a positive number') })
    .positive({ error: gotInstead('expected a positive number') })
    .default(fallback);

const routeSchema = z.strictObject(
  {
    db: z.custom<OncelyDatabase>(isObject, {
      message: 'expected a drizzle node-postgres database: `drizzle(new Pool({ connectionString }), { schema })`',
    }),
    scope: z.custom<string | ((request: never) => string | Promise<string>)>(
      (v) => typeof v === 'function' || (typeof v === 'string' && validScope(v)),
      {
        message:
          'required: a well-formed string of 1–255 characters or a function of the request returning one (the API ' +
          "key, account or tenant), so that one caller's key never replays another caller's response.",
      },
    ),
    required: z.boolean('expected true or false').default(true),
    ttl: positiveNumber(DAY_MS),
    concurrent: z.enum(['reject', 'wait'], { error: gotInstead("expected 'reject' or 'wait'") }).default('reject'),
    waitTimeoutMs: positiveNumber(10_000),
    retryAfterSeconds: positiveNumber(1),
    // Not a .default(): zod calls a function default to make the value.
    fingerprint: z
      .custom<Fingerprint>((v) => typeof v === 'function', {
        message: 'expected a function of { method, url, headers, body } (see defaultFingerprint)',
      })
      .optional(),
    maxBodyBytes: positiveNumber(1024 * 1024),
    maxResponseBytes: positiveNumber(1024 * 1024),
    storedHeaders: z
      .array(z.string('expected a header name'), 'expected an array of header names')
      .default(DEFAULT_STORED_RESPONSE_HEADERS as string[]),
    storeServerErrors: z.boolean('expected true or false').default(false),
    problemTypeBase: z
      .string('expected a URI prefix such as https://example.com/problems/')
      .default('urn:oncely:problem:'),
    statementTimeoutMs: z
      .number({ error: gotInstead('expected a number of milliseconds (0: none)') })
      .min(0, { error: gotInstead('expected a number of milliseconds (0: none)') })
      .optional(),
    metrics: z
      .strictObject({
        registry: registrySchema,
        route: z.string().max(100, 'must be a fixed route name of at most 100 characters').optional(),
      })
      .optional(),
    // Its values are checked against the pool by resolveAdmission; here only its names.
    admission: z
      .strictObject({
        connectionsPerRequest: z.unknown().optional(),
        connections: z.unknown().optional(),
        queueTimeoutMs: z.unknown().optional(),
        maxQueue: z.unknown().optional(),
      })
      .optional(),
  },
  { error: (issue) => (issue.code === 'invalid_type' ? 'expected an options object.' : undefined) },
);

/** Validates a route's options once (see src/options.ts) and resolves every default. */
export function resolveRouteOptions<R>(options: IdempotentOptions<R>): ResolvedRouteOptions {
  const o = parseOptions(routeSchema, options);
  const { pool } = resolvePool(o.db);
  return {
    pool,
    bind: createTransactionBinder(o.db),
    required: o.required,
    ttl: o.ttl,
    concurrent: o.concurrent,
    waitTimeoutMs: o.waitTimeoutMs,
    retryAfterSeconds: Math.ceil(o.retryAfterSeconds),
    fingerprint: o.fingerprint ?? defaultFingerprint,
    maxBodyBytes: o.maxBodyBytes,
    maxResponseBytes: o.maxResponseBytes,
    storedHeaders: new Set(o.storedHeaders.map((h) => h.toLowerCase())),
    storeServerErrors: o.storeServerErrors,
    problemTypeBase: o.problemTypeBase,
    statementTimeoutMs: o.statementTimeoutMs,
    count: options.metrics === undefined ? undefined : attachIdempotencyMetrics(options.metrics),
    admission: resolveAdmission(pool, options.admission),
  };
}

/** Whether a scope may key records: well-formed text of 1–255 characters. */
export function validScope(scope: string): boolean {
  return scope.length >= 1 && scope.length <= 255 && isWellFormedText(scope);
}

/** Why a scope is refused (for the ONCELY_CONFIG message). */
export function invalidScopeReason(scope: string): string {
  if (scope.length === 0) return 'an empty string';
  if (scope.length > 255) return 'over 255 characters';
  return 'text with a lone surrogate (PostgreSQL would store it as U+FFFD, the same as other such scopes)';
}
