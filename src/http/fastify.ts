/**
 * `oncely/fastify`: the idempotent core as a Fastify route handler.
 *
 * ```ts
 * app.post('/v1/payments', idempotent({ db, scope: (request) => String(request.headers['x-api-key']) }, handler));
 * ```
 * Fastify has parsed the body by the time a handler runs (its own 400 for malformed JSON and 413
 * past `bodyLimit` answer first); the adapter re-encodes it (a parsed object as JSON, which the
 * default fingerprint canonicalises anyway; a Buffer or string as is).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';

import {
  createIdempotencyEngine,
  type IdempotentContext,
  type IdempotentHandler,
  type IdempotentOptions,
} from './idempotent.js';
import { encodeParsedBody, webHeaders } from './native.js';

/** `ctx` of a Fastify route: the core's, plus Fastify's own request. */
export interface FastifyIdempotentContext extends IdempotentContext {
  readonly request: FastifyRequest;
}

/**
 * A Fastify route handler that runs `handler` at most once per (scope, `Idempotency-Key`); see
 * `idempotent` in `oncely` for the semantics. A handler that throws rejects after its transaction
 * rolled back (Fastify's error handler answers 500).
 */
export function idempotent(
  options: IdempotentOptions<FastifyRequest>,
  handler: IdempotentHandler<FastifyIdempotentContext>,
): (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply> {
  const engine = createIdempotencyEngine(options);
  return async (request, reply) => {
    const scope = await engine.resolveScope(options.scope, request);
    const response = await engine.run(toWebRequest(request), scope, handler, (ctx) => ({ ...ctx, request }));
    reply.code(response.status);
    response.headers.forEach((value, name) => {
      if (name !== 'set-cookie') void reply.header(name, value);
    });
    const cookies = response.headers.getSetCookie();
    if (cookies.length > 0) void reply.header('set-cookie', cookies);
    return reply.send(Buffer.from(await response.arrayBuffer()));
  };
}

function toWebRequest(request: FastifyRequest): Request {
  const headers = webHeaders(request.headers);
  // Fastify read the body already; its content-length no longer describes the re-encoded copy.
  headers.delete('content-length');
  const url = `${request.protocol}://${request.host}${request.url}`;
  const method = request.method.toUpperCase();
  if (method === 'GET' || method === 'HEAD') return new Request(url, { method, headers });
  return new Request(url, { method, headers, body: encodeParsedBody(request.body) });
}
