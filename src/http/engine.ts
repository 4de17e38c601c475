/**
 * The engine of an idempotent route, shared by `idempotent()` and the framework adapters: one
 * request at a time, from its key to its stored response. A request with a key runs in two
 * transactions on one connection: the key's recovery point ({@link RouteEngine.claimKey}), then
 * the request's own ({@link RouteEngine.runGeneration}).
 */
import { createHash } from 'node:crypto';

import { configError, hasErrorCode } from '../errors.js';
import { inTransaction, type OpenTransaction, TransactionChain } from '../inbox/transaction.js';
import type { IdempotencyOutcome } from '../metrics/idempotency.js';
import type { Permit } from './admission.js';
import { isNullBodyStatus, readLimited } from './body.js';
import { InvalidJsonBodyError } from './fingerprint.js';
import {
  type IdempotentOptions,
  invalidScopeReason,
  type ResolvedRouteOptions,
  validScope,
} from './idempotent-options.js';
import {
  decideKey,
  IDEMPOTENCY_KEY_REQUEST_HEADER,
  IDEMPOTENT_REPLAYED_HEADER,
  invalidIdempotencyKey,
  type KeyDecision,
} from './keys.js';
import { problemResponse, type IdempotencyProblem } from './problem.js';
import { callHandler, type ContextBase, type IdempotentContext, type IdempotentHandler } from './request-context.js';
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

/** How long a request waits for its key's lock between its two transactions (see `runGeneration`). */
const RESUME_LOCK_WAIT_MS = 1_000;

/**
 * The engine shared by `idempotent()` and the framework adapters: `run(request, scope, handler)`
 * for one request whose scope the caller has resolved.
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

/** A request with a valid key, read and fingerprinted, ready for its transactions. */
interface KeyedRequest {
  readonly scope: string;
  readonly key: string;
  readonly fingerprint: Buffer;
  readonly method: string;
  /** The path and query, stored with the key (named in a 422). */
  readonly path: string;
  /** The request the handler gets: its body already read, so it is given again. */
  readonly handlerRequest: Request;
}

/**
 * What became of a request's key, counted once the transactions are over: a `created` whose
 * COMMIT failed stored nothing.
 */
interface Tally {
  outcome: IdempotencyOutcome | undefined;
}

/** A finished answer that ends the transaction with a ROLLBACK (thrown out of the transaction). */
class RollbackWith extends Error {
  constructor(readonly response: Response) {
    super('rolled back with a response');
  }
}

export class RouteEngine implements IdempotencyEngine {
  constructor(private readonly settings: ResolvedRouteOptions) {}

  async resolveScope<R>(scopeOption: IdempotentOptions<R>['scope'], request: R): Promise<string> {
    return typeof scopeOption === 'function' ? await scopeOption(request) : scopeOption;
  }

  async run<C extends IdempotentContext>(
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
      if (this.settings.required) {
        return this.problem(
          'idempotency_key_missing',
          'This endpoint requires an Idempotency-Key header: a unique value (a UUID) per operation, reused on its retries.',
        );
      }
      // No key on an optional route: the handler still gets its transaction, nothing is stored.
      return await this.runWithoutKey(request, scope, handler, extend);
    }
    const invalid = invalidIdempotencyKey(key);
    if (invalid !== undefined) return this.problem('idempotency_key_invalid', invalid);
    const keyed = await this.readKeyedRequest(request, scope, key);
    return keyed instanceof Response ? keyed : await this.runWithKey(keyed, handler, extend);
  }

  /** Reads the body (within `maxBodyBytes`) and fingerprints the request; a problem response when it cannot. */
  private async readKeyedRequest(request: Request, scope: string, key: string): Promise<KeyedRequest | Response> {
    const { maxBodyBytes, fingerprint } = this.settings;
    const url = new URL(request.url);
    // A declared length past the limit is refused before a byte of the upload is read.
    const body = declaredTooLarge(request, maxBodyBytes) ? undefined : await readLimited(request.body, maxBodyBytes);
    if (body === undefined) {
      return this.problem('request_body_too_large', `The request body is larger than ${maxBodyBytes} bytes.`);
    }
    let material: string | Uint8Array;
    try {
      material = await fingerprint({ method: request.method, url, headers: request.headers, body });
    } catch (error) {
      if (error instanceof InvalidJsonBodyError) {
        return this.problem(
          'request_body_invalid_json',
          'The request declares a JSON content type but its body is not valid JSON.',
        );
      }
      throw error;
    }
    return {
      scope,
      key,
      fingerprint: createHash('sha256').update(material).digest(),
      method: request.method,
      path: `${url.pathname}${url.search}`,
      handlerRequest: new Request(request.url, {
        method: request.method,
        headers: request.headers,
        body: request.method === 'GET' || request.method === 'HEAD' || body.byteLength === 0 ? null : body,
        signal: request.signal,
      }),
    };
  }

  /** The two transactions of a request with a key, on one connection taken within the request's turn. */
  private async runWithKey<C extends IdempotentContext>(
    keyed: KeyedRequest,
    handler: IdempotentHandler<C>,
    extend: (ctx: IdempotentContext) => C,
  ): Promise<Response> {
    const { count } = this.settings;
    const tally: Tally = { outcome: undefined };
    const turn = await this.takeTurn();
    if (turn === undefined) return this.refusedTurn();
    // Both transactions on one connection, one after the other: a request never holds two.
    const chain = new TransactionChain(this.settings.pool, this.settings.bind, {
      statementTimeoutMs: this.settings.statementTimeoutMs,
    });
    try {
      const first = await chain.run((transaction) => this.claimKey(chain, transaction, keyed));
      if (first.kind !== 'run') {
        const response = this.answer(first, tally);
        if (tally.outcome !== undefined) count?.(tally.outcome);
        return response;
      }
      chain.expectMore(false);
      const response = await chain.run((transaction) =>
        this.runGeneration(transaction, keyed, first.generation, { handler, extend }, tally),
      );
      if (tally.outcome !== undefined) count?.(tally.outcome);
      return response;
    } catch (error) {
      if (error instanceof RollbackWith) {
        if (tally.outcome === 'conflict') count?.(tally.outcome);
        return error.response;
      }
      const exhausted = this.poolExhausted(error);
      if (exhausted !== undefined) return exhausted;
      throw error;
    } finally {
      await chain.close();
      turn.release();
    }
  }

  /**
   * 1. The key's recovery point (Stripe's): a short transaction that decides what this request
   *    is — a replay, a refusal, or a run of the key's generation — and on a first use commits
   *    the key's row, in progress, with this request's fingerprint, before any step or publish.
   *    A run that throws or crashes later leaves that row: the key stays bound to these
   *    parameters (another request is 422) and the next request with them continues it.
   */
  private async claimKey(
    chain: TransactionChain,
    transaction: OpenTransaction,
    keyed: KeyedRequest,
  ): Promise<Exclude<KeyDecision, { kind: 'start' }>> {
    const waitMs = this.settings.concurrent === 'wait' ? this.settings.waitTimeoutMs : undefined;
    const decision = decideKey(
      await this.lockAndRead(transaction, keyed, { waitMs, forUpdate: false }),
      keyed.fingerprint,
    );
    if (decision.kind === 'start') {
      const generation = await startGeneration(transaction.client, {
        scope: keyed.scope,
        key: keyed.key,
        fingerprint: keyed.fingerprint,
        method: keyed.method,
        path: keyed.path,
        ttlMs: this.settings.ttl,
        previous: decision.previous,
      });
      // The request's transaction follows at once: its BEGIN rides with this COMMIT.
      chain.expectMore(true);
      return { kind: 'run', generation };
    }
    if (decision.kind === 'run') chain.expectMore(true);
    return decision;
  }

  /**
   * 2. The request's transaction. The key's lock was let go at the first COMMIT, so it is taken
   *    again and the row read again (and locked, so the ttl purge skips it however long the
   *    handler runs): only a holder that still finds this generation in progress runs it.
   */
  private async runGeneration<C extends IdempotentContext>(
    transaction: OpenTransaction,
    keyed: KeyedRequest,
    generation: bigint,
    route: { readonly handler: IdempotentHandler<C>; readonly extend: (ctx: IdempotentContext) => C },
    tally: Tally,
  ): Promise<Response> {
    // Here even a 'reject' route waits a moment: the lock is usually held only by another
    // request's first transaction reading the row, and a 409 would send away the one request
    // that is about to run the key. A request that really runs it keeps the lock: after the
    // wait this one replays its response, or answers 409.
    const waitMs = this.settings.concurrent === 'wait' ? this.settings.waitTimeoutMs : RESUME_LOCK_WAIT_MS;
    const decision = decideKey(
      await this.lockAndRead(transaction, keyed, { waitMs, forUpdate: true }),
      keyed.fingerprint,
    );
    if (decision.kind !== 'run' || decision.generation !== generation) {
      // Another request with the same parameters took the key in between (it finished: replay;
      // it runs: 409), or the row changed hands: 409, and the client's retry sees which.
      return this.answer(
        decision.kind === 'replay' || decision.kind === 'mismatch' ? decision : { kind: 'in-use' },
        tally,
      );
    }
    const answered = await callHandler(
      route.handler,
      keyed.handlerRequest,
      route.extend,
      this.contextBase(transaction, keyed.scope, { key: keyed.key, generation }),
    );
    const { response, body } = await this.bufferResponse(answered);
    if (response.status >= 500 && !this.settings.storeServerErrors) {
      // A server error is not an answer to store: roll the effects back so a retry runs again.
      throw new RollbackWith(response);
    }
    const headers: StoredResponseHeader[] = [];
    response.headers.forEach((value, name) => {
      if (this.settings.storedHeaders.has(name)) headers.push([name, value]);
    });
    // Stored in the same transaction as the effects: COMMIT makes both durable or neither. The
    // ttl counts from here, not from the transaction's start.
    await storeResponse(transaction.client, {
      scope: keyed.scope,
      key: keyed.key,
      generation,
      status: response.status,
      headers,
      body,
      ttlMs: this.settings.ttl,
    });
    tally.outcome = 'created';
    return response;
  }

  /**
   * Takes the key's lock — without waiting, or for up to `waitMs` (then 409) — and reads its row
   * after it. The lock comes first: whoever holds it is the only request that may run the handler
   * for (scope, key) until its transaction ends, so the row read after it is final. `forUpdate`:
   * the request's own transaction, which also locks the row.
   */
  private async lockAndRead(
    transaction: OpenTransaction,
    { scope, key }: KeyedRequest,
    { waitMs, forUpdate }: { waitMs: number | undefined; forUpdate: boolean },
  ): Promise<{ locked: boolean; stored: StoredKey | undefined }> {
    if (waitMs === undefined) return tryLockAndFindKey(transaction.client, scope, key, { forUpdate });
    try {
      await waitLockKey(transaction.client, scope, key, waitMs);
    } catch (error) {
      if (isLockTimeout(error)) {
        this.settings.count?.('conflict');
        throw new RollbackWith(this.inUse());
      }
      throw error;
    }
    return { locked: true, stored: await findKey(transaction.client, scope, key, { forUpdate }) };
  }

  /** A request without a key on a route with `required: false`: one transaction, nothing stored. */
  private async runWithoutKey<C extends IdempotentContext>(
    request: Request,
    scope: string,
    handler: IdempotentHandler<C>,
    extend: (ctx: IdempotentContext) => C,
  ): Promise<Response> {
    const turn = await this.takeTurn();
    if (turn === undefined) return this.refusedTurn();
    try {
      return await inTransaction(
        this.settings.pool,
        this.settings.bind,
        async (transaction) => {
          const answered = await callHandler(handler, request, extend, this.contextBase(transaction, scope, undefined));
          const { response } = await this.bufferResponse(answered);
          if (response.status >= 500 && !this.settings.storeServerErrors) throw new RollbackWith(response);
          return response;
        },
        { statementTimeoutMs: this.settings.statementTimeoutMs },
      );
    } catch (error) {
      if (error instanceof RollbackWith) return error.response;
      const exhausted = this.poolExhausted(error);
      if (exhausted !== undefined) return exhausted;
      throw error;
    } finally {
      turn.release();
    }
  }

  private contextBase(transaction: OpenTransaction, scope: string, owner: ContextBase['owner']): ContextBase {
    return { pool: this.settings.pool, admission: this.settings.admission, transaction, scope, owner };
  }

  /** The answer to a request that does not run: a replay, a 422 or a 409, noted in `tally`. */
  private answer(decision: Exclude<KeyDecision, { kind: 'start' | 'run' }>, tally: Tally): Response {
    if (decision.kind === 'replay') {
      tally.outcome = 'replayed';
      return replay(decision.response);
    }
    if (decision.kind === 'mismatch') {
      tally.outcome = 'mismatch';
      return this.problem(
        'idempotency_key_reused',
        `This Idempotency-Key was used with another request (${decision.stored.method} ${decision.stored.path} ` +
          'with other content). Use a new key for a new operation.',
      );
    }
    tally.outcome = 'conflict';
    return this.inUse();
  }

  /** Buffers the handler's response, refusing one too large to store (the transaction then rolls back). */
  private async bufferResponse(response: Response): Promise<{ response: Response; body: Uint8Array }> {
    const { maxResponseBytes } = this.settings;
    const body = await readLimited(response.body, maxResponseBytes);
    if (body === undefined) {
      throw new RollbackWith(
        this.problem(
          'response_too_large',
          `The response is larger than maxResponseBytes (${maxResponseBytes}); nothing was stored or committed. ` +
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
  }

  /**
   * The request's turn of the pool (src/http/admission.ts), taken before its first connection and
   * given back after its last: no request holds a connection while it waits for its turn.
   * Undefined when refused: answer {@link refusedTurn}.
   */
  private async takeTurn(): Promise<Permit | undefined> {
    const { admission } = this.settings;
    return await admission.gate.acquire(admission.connectionsPerRequest, admission.queueTimeoutMs);
  }

  private refusedTurn(): Response {
    return this.busy('Every database connection of this server is in use by other requests.');
  }

  /** The 503 of a step record's connection not obtained in time (the request rolled back). */
  private poolExhausted(error: unknown): Response | undefined {
    return hasErrorCode(error, 'ONCELY_POOL_EXHAUSTED') ||
      hasErrorCode((error as { cause?: unknown } | undefined)?.cause, 'ONCELY_POOL_EXHAUSTED')
      ? this.busy('No database connection was free for a step record in time; the request rolled back.')
      : undefined;
  }

  private busy(detail: string): Response {
    return this.problem(
      'server_busy',
      `${detail} Nothing was run or kept; retry after Retry-After, with the same key.`,
      {
        'retry-after': String(this.settings.retryAfterSeconds),
      },
    );
  }

  private inUse(): Response {
    return this.problem(
      'idempotency_key_in_use',
      'Another request with this Idempotency-Key is being processed. Retry after it finishes, with the same key.',
      { 'retry-after': String(this.settings.retryAfterSeconds) },
    );
  }

  private problem(name: IdempotencyProblem, detail: string, headers?: Record<string, string>): Response {
    return problemResponse(name, detail, this.settings.problemTypeBase, headers);
  }
}

/** A stored response played back, marked `Idempotent-Replayed: true`. */
function replay(stored: NonNullable<StoredKey['response']>): Response {
  const headers = new Headers(stored.headers as [string, string][]);
  headers.set(IDEMPOTENT_REPLAYED_HEADER, 'true');
  return new Response(isNullBodyStatus(stored.status) || stored.body.byteLength === 0 ? null : stored.body, {
    status: stored.status,
    headers,
  });
}

/** True when the request's `Content-Length` already says its body is over `limit` bytes. */
function declaredTooLarge(request: Request, limit: number): boolean {
  const declared = Number(request.headers.get('content-length') ?? Number.NaN);
  return Number.isFinite(declared) && declared > limit;
}
