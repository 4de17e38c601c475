/**
 * The ctx an idempotent handler gets, and the call of the handler: the request owns its
 * transaction and its ctx for exactly the call, and leaves the transaction as it found it.
 */
import type pg from 'pg';

import { configError, OncelyError } from '../errors.js';
import type { OncelyTransaction } from '../inbox/database.js';
import type { OpenTransaction } from '../inbox/transaction.js';
import { httpEventId } from '../outbox/message-id.js';
import { type OutboxMessage, publish, type PublishedEvent } from '../outbox/publish.js';
import { createStepRunner, type StepFunction, type StepRunner } from '../steps/runner.js';
import type { ResolvedAdmission } from './admission.js';

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

/** What a request's ctx is built from. */
export interface ContextBase {
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
export async function callHandler<C extends IdempotentContext>(
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
