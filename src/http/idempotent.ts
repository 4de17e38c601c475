import { createHash } from 'node:crypto';

import type pg from 'pg';

import { configError, OncelyError } from '../errors.js';
import {
  createTransactionBinder,
  resolvePool,
  type OncelyDatabase,
  type OncelyTransaction,
  type TransactionBinder,
} from '../inbox/database.js';
import { inTransaction, type OpenTransaction } from '../inbox/transaction.js';
import {
  attachIdempotencyMetrics,
  type IdempotencyCounter,
  type IdempotencyMetricsOptions,
  type IdempotencyOutcome,
} from '../metrics/idempotency.js';
import { type OutboxMessage, publish, type PublishedEvent } from '../outbox/publish.js';
import { createStepRunner, type StepFunction, type StepRunner } from '../steps/runner.js';
import { isNullBodyStatus, readLimited } from './body.js';
import { defaultFingerprint, InvalidJsonBodyError, type Fingerprint } from './fingerprint.js';
import { problemResponse, type IdempotencyProblem } from './problem.js';
import { findKey, isLockTimeout, storeKey, tryLockAndFindKey, waitLockKey, type StoredKey } from './store.js';
import type { StoredResponseHeader } from './tables.js';

/** The request header that carries the key (compared case-insensitively, as all header names). */
export const IDEMPOTENCY_KEY_REQUEST_HEADER = 'Idempotency-Key';
/** Set to `true` on a response that is a stored one played back. */
export const IDEMPOTENT_REPLAYED_HEADER = 'Idempotent-Replayed';
/** The longest key accepted; longer keys are refused, never truncated. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

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
 * Options of {@link idempotent}. `R` is the request type `scope` receives: the Web `Request` here,
 * the framework's own request in `oncely/express` and `oncely/fastify`.
 */
export interface IdempotentOptions<R = Request> {
  /**
   * The drizzle node-postgres database (over a `pg` Pool) the key and the effects are written to.
   * Each request holds one pooled connection for its whole transaction: size the pool for the
   * requests you serve at once (waiting requests with `concurrent: 'wait'` hold one too).
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
}

/** What an idempotent handler gets besides the request. */
export interface IdempotentContext {
  /** The request's transaction: write the effects through it; they commit with the stored response. */
  readonly tx: OncelyTransaction;
  /** The request's `Idempotency-Key`; undefined only on a route with `required: false` and no key. */
  readonly key: string | undefined;
  /** The request's scope. */
  readonly scope: string;
  /**
   * Publishes an event through the outbox in the request's transaction: sent only if the request's
   * effects commit. Its `message-id` is derived from (scope, key) and the publish order, so a
   * request run again after a rollback publishes under the same ids (a UUIDv7 without a key).
   */
  readonly publish: (message: OutboxMessage) => Promise<PublishedEvent>;
  /**
   * Runs an external call at most once per (scope, key) (see "Calling other services"); the
   * idempotency key handed to `fn` is `<scope>:<key>:<name>`. Needs an Idempotency-Key.
   */
  readonly step: StepFunction;
}

/** The route's own work, run at most once per (scope, key). */
export type IdempotentHandler<C extends IdempotentContext = IdempotentContext> = (
  request: Request,
  ctx: C,
) => Promise<Response> | Response;

interface ContextBase {
  readonly pool: pg.Pool;
  readonly transaction: OpenTransaction;
  readonly key: string | undefined;
  readonly scope: string;
}

/** Builds `ctx` for one request. The one place `ctx` members are created. */
function createContext({ pool, transaction, key, scope }: ContextBase): IdempotentContext {
  // Scope and key can each be 255 characters: the event ids use a digest of both, so they stay
  // short, and two callers' equal keys never give the same event id.
  const owner = key === undefined ? undefined : createHash('sha256').update(`${scope}\u0000${key}`).digest('hex');
  let published = 0;
  let steps: StepRunner | undefined;
  return {
    tx: transaction.tx,
    key,
    scope,
    publish: (message) =>
      publish(transaction.tx, message, owner === undefined ? {} : { messageId: `http:${owner}:${published++}` }),
    step: (name, fn, options) => {
      if (key === undefined) {
        throw configError(
          'idempotent.step',
          "ctx.step needs the request's Idempotency-Key to know the call across retries; require the key on this route",
        );
      }
      steps ??= createStepRunner({ pool, scope, ownerId: key });
      return steps.step(name, fn, options);
    },
  };
}

interface Resolved {
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
}

function positive(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw configError(option, `expected a positive number, got ${value}.`);
  return value;
}

function resolveOptions<R>(options: IdempotentOptions<R>): Resolved {
  if (typeof options !== 'object' || options === null) throw configError('options', 'expected an options object.');
  if (typeof options.scope !== 'function' && (typeof options.scope !== 'string' || !validScope(options.scope))) {
    throw configError(
      'scope',
      'required: a string of 1–255 characters or a function of the request returning one (the API key, account ' +
        "or tenant), so that one caller's key never replays another caller's response.",
    );
  }
  if (options.concurrent !== undefined && options.concurrent !== 'reject' && options.concurrent !== 'wait') {
    throw configError('concurrent', `expected 'reject' or 'wait', got ${String(options.concurrent)}.`);
  }
  const { pool } = resolvePool(options.db);
  return {
    pool,
    bind: createTransactionBinder(options.db),
    required: options.required ?? true,
    ttl: positive('ttl', options.ttl, DAY_MS),
    concurrent: options.concurrent ?? 'reject',
    waitTimeoutMs: positive('waitTimeoutMs', options.waitTimeoutMs, 10_000),
    retryAfterSeconds: Math.ceil(positive('retryAfterSeconds', options.retryAfterSeconds, 1)),
    fingerprint: options.fingerprint ?? defaultFingerprint,
    maxBodyBytes: positive('maxBodyBytes', options.maxBodyBytes, 1024 * 1024),
    maxResponseBytes: positive('maxResponseBytes', options.maxResponseBytes, 1024 * 1024),
    storedHeaders: new Set((options.storedHeaders ?? DEFAULT_STORED_RESPONSE_HEADERS).map((h) => h.toLowerCase())),
    storeServerErrors: options.storeServerErrors ?? false,
    problemTypeBase: options.problemTypeBase ?? 'urn:oncely:problem:',
    statementTimeoutMs: options.statementTimeoutMs,
    count: options.metrics === undefined ? undefined : attachIdempotencyMetrics(options.metrics),
  };
}

function validScope(scope: string): boolean {
  return scope.length >= 1 && scope.length <= 255;
}

/** Why a key header value is refused, or undefined when it is fine. */
export function invalidIdempotencyKey(key: string): string | undefined {
  if (key.length === 0) return 'The Idempotency-Key header is empty.';
  if (key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    return `The Idempotency-Key header is ${key.length} characters long; the limit is ${MAX_IDEMPOTENCY_KEY_LENGTH}.`;
  }
  // Printable ASCII only: a key must read back byte for byte through every proxy and log.
  if (!/^[\x20-\x7e]+$/.test(key)) {
    return 'The Idempotency-Key header must be printable ASCII (a UUID is a good key).';
  }
  return undefined;
}

/** A finished answer that ends the transaction with a ROLLBACK (thrown out of the transaction). */
class RollbackWith extends Error {
  constructor(readonly response: Response) {
    super('rolled back with a response');
  }
}

/**
 * The engine shared by {@link idempotent} and the framework adapters: `run(request, scope,
 * handler)` for one request whose scope the caller has resolved.
 */
export interface IdempotencyEngine {
  run<C extends IdempotentContext>(
    request: Request,
    scope: string,
    handler: IdempotentHandler<C>,
    extend: (ctx: IdempotentContext) => C,
  ): Promise<Response>;
  resolveScope<R>(scope: IdempotentOptions<R>['scope'], request: R): Promise<string>;
}

/** Validates `options` once and returns the engine adapters build on. */
export function createIdempotencyEngine<R>(options: IdempotentOptions<R>): IdempotencyEngine {
  const settings = resolveOptions(options);
  const problem = (name: IdempotencyProblem, detail: string, headers?: Record<string, string>): Response =>
    problemResponse(name, detail, settings.problemTypeBase, headers);

  const inUse = (): Response =>
    problem(
      'idempotency_key_in_use',
      'Another request with this Idempotency-Key is being processed. Retry after it finishes, with the same key.',
      { 'retry-after': String(settings.retryAfterSeconds) },
    );

  const transact = <T>(work: (transaction: OpenTransaction) => Promise<T>): Promise<T> =>
    inTransaction(settings.pool, settings.bind, work, { statementTimeoutMs: settings.statementTimeoutMs });

  /** Buffers the handler's response, refusing one too large to store (the transaction then rolls back). */
  const bufferResponse = async (response: Response): Promise<{ response: Response; body: Uint8Array }> => {
    const body = await readLimited(response.body, settings.maxResponseBytes);
    if (body === undefined) {
      throw new RollbackWith(
        problem(
          'response_too_large',
          `The response is larger than maxResponseBytes (${settings.maxResponseBytes}); nothing was stored or committed. ` +
            'Raise maxResponseBytes or return less.',
        ),
      );
    }
    const copy = new Response(isNullBodyStatus(response.status) || body.byteLength === 0 ? null : body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
    return { response: copy, body };
  };

  const replay = (stored: StoredKey): Response => {
    const headers = new Headers(stored.headers as [string, string][]);
    headers.set(IDEMPOTENT_REPLAYED_HEADER, 'true');
    return new Response(isNullBodyStatus(stored.status) || stored.body.byteLength === 0 ? null : stored.body, {
      status: stored.status,
      headers,
    });
  };

  async function run<C extends IdempotentContext>(
    request: Request,
    scope: string,
    handler: IdempotentHandler<C>,
    extend: (ctx: IdempotentContext) => C,
  ): Promise<Response> {
    if (!validScope(scope)) {
      throw configError(
        'scope',
        `scope(request) returned ${scope.length === 0 ? 'an empty string' : 'over 255 characters'}; expected 1–255 characters.`,
      );
    }
    const key = request.headers.get(IDEMPOTENCY_KEY_REQUEST_HEADER);
    if (key === null) {
      if (settings.required) {
        return problem(
          'idempotency_key_missing',
          'This endpoint requires an Idempotency-Key header: a unique value (a UUID) per operation, reused on its retries.',
        );
      }
      // No key on an optional route: the handler still gets its transaction, nothing is stored.
      return await runWithoutKey(request, scope, handler, extend);
    }
    const invalid = invalidIdempotencyKey(key);
    if (invalid !== undefined) return problem('idempotency_key_invalid', invalid);

    const url = new URL(request.url);
    const body = await readLimited(request.body, settings.maxBodyBytes);
    if (body === undefined) {
      return problem('request_body_too_large', `The request body is larger than ${settings.maxBodyBytes} bytes.`);
    }
    let material: string | Uint8Array;
    try {
      material = await settings.fingerprint({ method: request.method, url, headers: request.headers, body });
    } catch (error) {
      if (error instanceof InvalidJsonBodyError) {
        return problem(
          'request_body_invalid_json',
          'The request declares a JSON content type but its body is not valid JSON.',
        );
      }
      throw error;
    }
    const fingerprint = createHash('sha256').update(material).digest();
    const path = `${url.pathname}${url.search}`;
    const handlerRequest = new Request(request.url, {
      method: request.method,
      headers: request.headers,
      body: request.method === 'GET' || request.method === 'HEAD' || body.byteLength === 0 ? null : body,
      signal: request.signal,
    });

    // Counted once the transaction is over: a `created` whose COMMIT failed stored nothing.
    let outcome: IdempotencyOutcome | undefined;
    try {
      const response = await transact(async (transaction) => {
        // The key's lock before its row: whoever holds it is the only request that may run the
        // handler for (scope, key) until its transaction ends, so the row read after it is final.
        let stored: StoredKey | undefined;
        if (settings.concurrent === 'wait') {
          try {
            await waitLockKey(transaction.client, scope, key, settings.waitTimeoutMs);
          } catch (error) {
            if (isLockTimeout(error)) {
              outcome = 'conflict';
              throw new RollbackWith(inUse());
            }
            throw error;
          }
          stored = await findKey(transaction.client, scope, key);
        } else {
          const attempt = await tryLockAndFindKey(transaction.client, scope, key);
          stored = attempt.stored;
          // Held by another request: a finished one's live row is still answered (replay or 422);
          // without one, the key is in use.
          if (!attempt.locked && stored?.live !== true) {
            outcome = 'conflict';
            return inUse();
          }
        }
        if (stored?.live === true) {
          if (stored.fingerprint.equals(fingerprint)) {
            outcome = 'replayed';
            return replay(stored);
          }
          outcome = 'mismatch';
          return problem(
            'idempotency_key_reused',
            `This Idempotency-Key was used with another request (${stored.method} ${stored.path} with other content). ` +
              'Use a new key for a new operation.',
          );
        }
        const answered = await handler(
          handlerRequest,
          extend(createContext({ pool: settings.pool, transaction, key, scope })),
        );
        if (!(answered instanceof Response)) {
          throw new OncelyError(
            'ONCELY_CONFIG',
            'An idempotent handler must return a Web Response (e.g. `Response.json(body, { status: 201 })`).',
          );
        }
        const { response, body: responseBody } = await bufferResponse(answered);
        if (response.status >= 500 && !settings.storeServerErrors) {
          // A server error is not an answer to store: roll the effects back so a retry runs again.
          throw new RollbackWith(response);
        }
        const headers: StoredResponseHeader[] = [];
        response.headers.forEach((value, name) => {
          if (settings.storedHeaders.has(name)) headers.push([name, value]);
        });
        // Stored in the same transaction as the effects: COMMIT makes both durable or neither.
        await storeKey(transaction.client, {
          scope,
          key,
          fingerprint,
          method: request.method,
          path,
          status: response.status,
          headers,
          body: responseBody,
          ttlMs: settings.ttl,
        });
        outcome = 'created';
        return response;
      });
      if (outcome !== undefined) settings.count?.(outcome);
      return response;
    } catch (error) {
      if (error instanceof RollbackWith) {
        if (outcome === 'conflict') settings.count?.(outcome);
        return error.response;
      }
      throw error;
    }
  }

  async function runWithoutKey<C extends IdempotentContext>(
    request: Request,
    scope: string,
    handler: IdempotentHandler<C>,
    extend: (ctx: IdempotentContext) => C,
  ): Promise<Response> {
    try {
      return await transact(async (transaction) => {
        const answered = await handler(
          request,
          extend(createContext({ pool: settings.pool, transaction, key: undefined, scope })),
        );
        const { response } = await bufferResponse(answered);
        if (response.status >= 500 && !settings.storeServerErrors) throw new RollbackWith(response);
        return response;
      });
    } catch (error) {
      if (error instanceof RollbackWith) return error.response;
      throw error;
    }
  }

  return {
    run,
    async resolveScope(scopeOption, request) {
      return typeof scopeOption === 'function' ? await scopeOption(request) : scopeOption;
    },
  };
}

/**
 * Makes a Web `Request` → `Response` handler idempotent per (scope, `Idempotency-Key`): the first
 * request runs `handler` in a transaction (`ctx.tx`) and stores its response in that same
 * transaction; a retry with the same key and request gets the stored response byte for byte with
 * `Idempotent-Replayed: true`; the same key with another request gets 422; a concurrent request
 * with the key gets 409 (or waits, with `concurrent: 'wait'`). A handler that throws rolls
 * everything back, stores nothing, and the error propagates to the caller (the framework's 500).
 */
export function idempotent(
  options: IdempotentOptions,
  handler: IdempotentHandler,
): (request: Request) => Promise<Response> {
  const engine = createIdempotencyEngine(options);
  return async (request) =>
    engine.run(request, await engine.resolveScope(options.scope, request), handler, (ctx) => ctx);
}
