import { createHash } from 'node:crypto';

import type pg from 'pg';

import { configError, hasErrorCode, OncelyError } from '../errors.js';
import {
  createTransactionBinder,
  resolvePool,
  type OncelyDatabase,
  type OncelyTransaction,
  type TransactionBinder,
} from '../inbox/database.js';
import { inTransaction, type OpenTransaction, TransactionChain } from '../inbox/transaction.js';
import { isWellFormedText } from '../identity.js';
import {
  attachIdempotencyMetrics,
  type IdempotencyCounter,
  type IdempotencyMetricsOptions,
  type IdempotencyOutcome,
} from '../metrics/idempotency.js';
import { httpEventId } from '../outbox/message-id.js';
import { type OutboxMessage, publish, type PublishedEvent } from '../outbox/publish.js';
import { createStepRunner, type StepFunction, type StepRunner } from '../steps/runner.js';
import { type AdmissionOptions, type Permit, resolveAdmission, type ResolvedAdmission } from './admission.js';
import { isNullBodyStatus, readLimited } from './body.js';
import { defaultFingerprint, InvalidJsonBodyError, type Fingerprint } from './fingerprint.js';
import { problemResponse, type IdempotencyProblem } from './problem.js';
import {
  findKey,
  isLockTimeout,
  startGeneration,
  storeResponse,
  tryLockAndFindKey,
  waitLockKey,
  type StoredKey,
} from './store.js';
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
/** How long a request waits for its key's lock between its two transactions (see `run`). */
const RESUME_LOCK_WAIT_MS = 1_000;

/**
 * Options of {@link idempotent}. `R` is the request type `scope` receives: the Web `Request` here,
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
   * How many requests hold connections at once (README "Under load"): every idempotent route on a
   * pool shares one limit of `connections` (default the pool's max), each request takes
   * `connectionsPerRequest` (default 2: its transaction and a step record) before its transaction
   * and waits at most `queueTimeoutMs` (default 5 000) for them; past that, or beyond `maxQueue`
   * waiting requests (default 1 000), it is answered 503 `server_busy` with `Retry-After`.
   */
  readonly admission?: AdmissionOptions;
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
   * effects commit. Its `message-id` is derived from (scope, key, the key's generation) and the
   * publish order, so a request run again after a rollback publishes under the same ids, and a key
   * reused after it expired under new ones (a UUIDv7 without a key).
   */
  readonly publish: (message: OutboxMessage) => Promise<PublishedEvent>;
  /**
   * Runs an external call at most once per (scope, key, generation) (see "Calling other
   * services"): a retry of the request, even after a crash, gets the recorded result; a key reused
   * after it expired is a new generation and calls again. The idempotency key handed to `fn` is
   * `oncely-step.<name>~<digest of scope, key, generation, name>`. Needs an Idempotency-Key.
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
  readonly admission: ResolvedAdmission;
  readonly transaction: OpenTransaction;
  readonly scope: string;
  /** The key and its generation, or undefined on a route with `required: false` and no key. */
  readonly owner: { readonly key: string; readonly generation: bigint } | undefined;
}

/**
 * Builds `ctx` for one request. The one place `ctx` members are created. The request owns its
 * transaction and its ctx until `ended()`: after that `ctx.publish` and `ctx.step` refuse with
 * `ONCELY_ATTEMPT_ENDED`, and `ctx.tx` (read once here, so never re-bound) refuses every query — a
 * late, un-awaited call must not land in whatever transaction holds the pooled connection next.
 */
function createContext(
  { pool, admission, transaction, scope, owner }: ContextBase,
  ended: () => boolean,
): IdempotentContext {
  let published = 0;
  let steps: StepRunner | undefined;
  const tx = transaction.tx;
  return {
    tx,
    key: owner?.key,
    scope,
    publish: (message) =>
      ended()
        ? Promise.reject(requestEnded('ctx.publish'))
        : publish(
            tx,
            message,
            owner === undefined ? {} : { messageId: httpEventId(scope, owner.key, owner.generation, published++) },
          ),
    step: (name, fn, options) => {
      if (ended()) return Promise.reject(requestEnded('ctx.step'));
      if (owner === undefined) {
        throw configError(
          'idempotent.step',
          "ctx.step needs the request's Idempotency-Key to know the call across retries; require the key on this route",
        );
      }
      // The steps belong to the key's generation: a retry of this generation replays them, a key
      // reused after it expired (a new generation) runs them again under new provider keys.
      if (admission.connectionsPerRequest < 2) {
        // Admitted with one connection: a step record's second one was not counted for it.
        throw configError(
          'admission.connectionsPerRequest',
          'ctx.step records each step on a second pooled connection; this route admits requests with one. ' +
            'Set admission: { connectionsPerRequest: 2 } (the default) on a route whose handler calls ctx.step.',
        );
      }
      // The request's turn counted a second connection for this: it comes at once, unless the pool
      // is shared with work the gate does not see; then the wait is bounded (503, never a wedge).
      steps ??= createStepRunner({
        pool,
        scope,
        ownerId: owner.key,
        generation: owner.generation,
        acquireTimeoutMs: admission.queueTimeoutMs,
      });
      return steps.step(name, fn, options);
    },
  };
}

/** What every member of an ended request's ctx answers with. */
function requestEnded(member: string): OncelyError {
  return new OncelyError(
    'ONCELY_ATTEMPT_ENDED',
    `${member} was used after its request's handler had returned or thrown, and was refused: nothing of an ended ` +
      'request may commit. Await everything the handler starts before it returns.',
    { retriable: true },
  );
}

/**
 * Runs the route's handler with a ctx that belongs to this request only, then checks that the
 * handler left the transaction as it found it: a COMMIT or ROLLBACK of its own (refused by ctx.tx,
 * or hidden in a multi-statement text and seen in the status the driver reports) would have let
 * go of the key's locks while the handler still ran, or left its writes in autocommit. Then the
 * request fails (500, nothing stored) before any response is recorded.
 */
async function callHandler<C extends IdempotentContext>(
  handler: IdempotentHandler<C>,
  request: Request,
  extend: (ctx: IdempotentContext) => C,
  base: ContextBase,
): Promise<Response> {
  let ended = false;
  try {
    const answered = await handler(request, extend(createContext(base, () => ended)));
    const control = base.transaction.transactionControl();
    if (control !== undefined) {
      throw new OncelyError(
        'ONCELY_TX_CONTROL',
        `The handler ${control}. Transaction control in an idempotent handler is refused: oncely owns the request's ` +
          "transaction, in which the handler's writes, the stored response and the key's locks commit together. " +
          'Throw to roll back, or use ctx.tx.transaction() for a savepoint the handler can roll back itself.',
      );
    }
    if (!(answered instanceof Response)) {
      throw new OncelyError(
        'ONCELY_CONFIG',
        'An idempotent handler must return a Web Response (e.g. `Response.json(body, { status: 201 })`).',
      );
    }
    return answered;
  } finally {
    ended = true;
  }
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
  readonly admission: ResolvedAdmission;
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
      'required: a well-formed string of 1–255 characters or a function of the request returning one (the API key, account ' +
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
    admission: resolveAdmission(pool, options.admission),
  };
}

function validScope(scope: string): boolean {
  return scope.length >= 1 && scope.length <= 255 && isWellFormedText(scope);
}

/** Why a scope is refused (for the ONCELY_CONFIG message). */
function invalidScopeReason(scope: string): string {
  if (scope.length === 0) return 'an empty string';
  if (scope.length > 255) return 'over 255 characters';
  return 'text with a lone surrogate (PostgreSQL would store it as U+FFFD, the same as other such scopes)';
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

/** What a request with a key is, given the key's lock and its row. */
type KeyDecision =
  /** The key's generation completed with this request: play its response back. */
  | { readonly kind: 'replay'; readonly response: NonNullable<StoredKey['response']> }
  /** The key is bound to another request (finished or not): 422. */
  | { readonly kind: 'mismatch'; readonly stored: StoredKey }
  /** Another request holds the key's lock and nothing is stored to answer with: 409. */
  | { readonly kind: 'in-use' }
  /** The key's generation is in progress with this request and nobody runs it: run (continue) it. */
  | { readonly kind: 'run'; readonly generation: bigint }
  /** The key is new, or expired: start a new generation (replacing `previous`). */
  | { readonly kind: 'start'; readonly previous: bigint | undefined };

/**
 * The one place a key's state decides a request's fate. A live row binds the key to its request's
 * fingerprint from first use (Stripe's rule), so another request is 422 even when the first never
 * finished; a completed one is replayed to its own request even while the lock is held. An in-
 * progress generation with the same fingerprint and a free lock is a crashed or failed attempt:
 * the request continues it, and its completed steps replay. Past its ttl a key is new again.
 */
function decideKey(
  { locked, stored }: { locked: boolean; stored: StoredKey | undefined },
  fingerprint: Buffer,
): KeyDecision {
  if (stored?.live === true) {
    if (!stored.fingerprint.equals(fingerprint)) return { kind: 'mismatch', stored };
    if (stored.response !== undefined) return { kind: 'replay', response: stored.response };
  }
  if (!locked) return { kind: 'in-use' };
  if (stored?.live === true) return { kind: 'run', generation: stored.generation };
  return { kind: 'start', previous: stored?.generation };
}

/** True when the request's `Content-Length` already says its body is over `limit` bytes. */
function declaredTooLarge(request: Request, limit: number): boolean {
  const declared = Number(request.headers.get('content-length') ?? Number.NaN);
  return Number.isFinite(declared) && declared > limit;
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

  const busy = (detail: string): Response =>
    problem('server_busy', `${detail} Nothing was run or kept; retry after Retry-After, with the same key.`, {
      'retry-after': String(settings.retryAfterSeconds),
    });
  /** The 503 of a step record's connection not obtained in time (the request rolled back). */
  const poolExhausted = (error: unknown): Response | undefined =>
    hasErrorCode(error, 'ONCELY_POOL_EXHAUSTED') ||
    hasErrorCode((error as { cause?: unknown } | undefined)?.cause, 'ONCELY_POOL_EXHAUSTED')
      ? busy('No database connection was free for a step record in time; the request rolled back.')
      : undefined;

  /**
   * The request's turn of the pool (src/http/admission.ts), taken before its first connection and
   * given back after its last: no request holds a connection while it waits for its turn.
   * Undefined when refused: answer {@link refusedTurn}.
   */
  const takeTurn = async (): Promise<Permit | undefined> =>
    await settings.admission.gate.acquire(settings.admission.connectionsPerRequest, settings.admission.queueTimeoutMs);
  const refusedTurn = (): Response => busy('Every database connection of this server is in use by other requests.');

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

  const replay = (stored: NonNullable<StoredKey['response']>): Response => {
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
    if (typeof scope !== 'string' || !validScope(scope)) {
      // The route's scope function has a bug (or returned untrusted text unchecked): nothing may be
      // looked up or stored under it. An error, not a 400: the client cannot fix it.
      throw configError(
        'scope',
        `scope(request) returned ${typeof scope === 'string' ? invalidScopeReason(scope) : typeof scope}; ` +
          'expected well-formed text of 1–255 characters.',
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
    // A declared length past the limit is refused before a byte of the upload is read.
    const body = declaredTooLarge(request, settings.maxBodyBytes)
      ? undefined
      : await readLimited(request.body, settings.maxBodyBytes);
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

    // Counted once the transactions are over: a `created` whose COMMIT failed stored nothing.
    let outcome: IdempotencyOutcome | undefined;
    const answer = (decision: Exclude<KeyDecision, { kind: 'start' | 'run' }>): Response => {
      if (decision.kind === 'replay') {
        outcome = 'replayed';
        return replay(decision.response);
      }
      if (decision.kind === 'mismatch') {
        outcome = 'mismatch';
        return problem(
          'idempotency_key_reused',
          `This Idempotency-Key was used with another request (${decision.stored.method} ${decision.stored.path} ` +
            'with other content). Use a new key for a new operation.',
        );
      }
      outcome = 'conflict';
      return inUse();
    };
    const turn = await takeTurn();
    if (turn === undefined) return refusedTurn();
    // Both transactions on one connection, one after the other: a request never holds two.
    const chain = new TransactionChain(settings.pool, settings.bind, {
      statementTimeoutMs: settings.statementTimeoutMs,
    });
    try {
      // 1. The key's recovery point (Stripe's): a short transaction that decides what this request
      //    is — a replay, a refusal, or a run of the key's generation — and on a first use commits
      //    the key's row, in progress, with this request's fingerprint, before any step or publish.
      //    A run that throws or crashes later leaves that row: the key stays bound to these
      //    parameters (another request is 422) and the next request with them continues it.
      const first = await chain.run(async (transaction) => {
        const waitMs = settings.concurrent === 'wait' ? settings.waitTimeoutMs : undefined;
        const decision = decideKey(
          await lockAndRead(transaction, scope, key, { waitMs, forUpdate: false }),
          fingerprint,
        );
        if (decision.kind === 'start') {
          const generation = await startGeneration(transaction.client, {
            scope,
            key,
            fingerprint,
            method: request.method,
            path,
            ttlMs: settings.ttl,
            previous: decision.previous,
          });
          // The request's transaction follows at once: its BEGIN rides with this COMMIT.
          chain.expectMore(true);
          return { kind: 'run', generation } as const;
        }
        if (decision.kind === 'run') chain.expectMore(true);
        return decision;
      });
      if (first.kind !== 'run') {
        const response = answer(first);
        if (outcome !== undefined) settings.count?.(outcome);
        return response;
      }

      // 2. The request's transaction. The key's lock was let go at the first COMMIT, so it is taken
      //    again and the row read again (and locked, so the ttl purge skips it however long the
      //    handler runs): only a holder that still finds this generation in progress runs it.
      chain.expectMore(false);
      const response = await chain.run(async (transaction) => {
        // Here even a 'reject' route waits a moment: the lock is usually held only by another
        // request's first transaction reading the row, and a 409 would send away the one request
        // that is about to run the key. A request that really runs it keeps the lock: after the
        // wait this one replays its response, or answers 409.
        const waitMs = settings.concurrent === 'wait' ? settings.waitTimeoutMs : RESUME_LOCK_WAIT_MS;
        const decision = decideKey(
          await lockAndRead(transaction, scope, key, { waitMs, forUpdate: true }),
          fingerprint,
        );
        if (decision.kind !== 'run' || decision.generation !== first.generation) {
          // Another request with the same parameters took the key in between (it finished: replay;
          // it runs: 409), or the row changed hands: 409, and the client's retry sees which.
          return answer(decision.kind === 'replay' || decision.kind === 'mismatch' ? decision : { kind: 'in-use' });
        }
        const answered = await callHandler(handler, handlerRequest, extend, {
          pool: settings.pool,
          admission: settings.admission,
          transaction,
          scope,
          owner: { key, generation: first.generation },
        });
        const { response, body: responseBody } = await bufferResponse(answered);
        if (response.status >= 500 && !settings.storeServerErrors) {
          // A server error is not an answer to store: roll the effects back so a retry runs again.
          throw new RollbackWith(response);
        }
        const headers: StoredResponseHeader[] = [];
        response.headers.forEach((value, name) => {
          if (settings.storedHeaders.has(name)) headers.push([name, value]);
        });
        // Stored in the same transaction as the effects: COMMIT makes both durable or neither. The
        // ttl counts from here, not from the transaction's start.
        await storeResponse(transaction.client, {
          scope,
          key,
          generation: first.generation,
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
      const exhausted = poolExhausted(error);
      if (exhausted !== undefined) return exhausted;
      throw error;
    } finally {
      await chain.close();
      turn.release();
    }
  }

  /**
   * Takes the key's lock — without waiting, or for up to `waitMs` (then 409) — and reads its row
   * after it. The lock comes first: whoever holds it is the only request that may run the handler
   * for (scope, key) until its transaction ends, so the row read after it is final. `forUpdate`:
   * the request's own transaction, which also locks the row.
   */
  async function lockAndRead(
    transaction: OpenTransaction,
    scope: string,
    key: string,
    { waitMs, forUpdate }: { waitMs: number | undefined; forUpdate: boolean },
  ): Promise<{ locked: boolean; stored: StoredKey | undefined }> {
    if (waitMs === undefined) return tryLockAndFindKey(transaction.client, scope, key, { forUpdate });
    try {
      await waitLockKey(transaction.client, scope, key, waitMs);
    } catch (error) {
      if (isLockTimeout(error)) {
        settings.count?.('conflict');
        throw new RollbackWith(inUse());
      }
      throw error;
    }
    return { locked: true, stored: await findKey(transaction.client, scope, key, { forUpdate }) };
  }

  async function runWithoutKey<C extends IdempotentContext>(
    request: Request,
    scope: string,
    handler: IdempotentHandler<C>,
    extend: (ctx: IdempotentContext) => C,
  ): Promise<Response> {
    const turn = await takeTurn();
    if (turn === undefined) return refusedTurn();
    try {
      return await transact(async (transaction) => {
        const answered = await callHandler(handler, request, extend, {
          pool: settings.pool,
          admission: settings.admission,
          transaction,
          scope,
          owner: undefined,
        });
        const { response } = await bufferResponse(answered);
        if (response.status >= 500 && !settings.storeServerErrors) throw new RollbackWith(response);
        return response;
      });
    } catch (error) {
      if (error instanceof RollbackWith) return error.response;
      const exhausted = poolExhausted(error);
      if (exhausted !== undefined) return exhausted;
      throw error;
    } finally {
      turn.release();
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
