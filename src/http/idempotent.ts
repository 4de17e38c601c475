/**
 * Idempotent HTTP endpoints: `idempotent(options, handler)` over Web `Request` and `Response`.
 * The parts: the options (idempotent-options.ts), the key and what its state decides (keys.ts),
 * the handler's ctx (request-context.ts) and the engine that runs one request (engine.ts).
 */
import { type IdempotencyEngine, RouteEngine } from './engine.js';
import { type IdempotentOptions, resolveRouteOptions } from './idempotent-options.js';
import type { IdempotentHandler } from './request-context.js';

export type { IdempotencyEngine } from './engine.js';
export { DEFAULT_STORED_RESPONSE_HEADERS, type IdempotentOptions } from './idempotent-options.js';
export {
  IDEMPOTENCY_KEY_REQUEST_HEADER,
  IDEMPOTENT_REPLAYED_HEADER,
  invalidIdempotencyKey,
  MAX_IDEMPOTENCY_KEY_LENGTH,
} from './keys.js';
export type { IdempotentContext, IdempotentHandler } from './request-context.js';

/** Validates `options` once and returns the engine adapters build on. */
export function createIdempotencyEngine<R>(options: IdempotentOptions<R>): IdempotencyEngine {
  return new RouteEngine(resolveRouteOptions(options));
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
