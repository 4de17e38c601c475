/**
 * `oncely/fastify`: the idempotent core as a Fastify route.
 *
 * ```ts
 * app.post('/v1/payments', idempotent({ db, scope: (request) => String(request.headers['x-api-key']) }, handler));
 * ```
 * `idempotent()` returns route options with the handler (`app.post(path, route)`, or spread it into
 * `app.route({ method, url, ...route })`): with them come an `errorHandler` that answers Fastify's
 * own refusals of the body — malformed or empty JSON, a body over the limit, a content type no
 * parser reads — as RFC 9457 problems like oncely's (other errors go on to the app's error
 * handler), and `bodyLimit: maxBodyBytes`, so an oversized upload is refused with 413 by Fastify
 * before it is read (on its `Content-Length`) or as soon as it passes the limit.
 *
 * Fastify has parsed the body by the time the handler runs; the adapter re-encodes it (a parsed
 * object as JSON, which the default fingerprint canonicalises anyway; a Buffer or string as is).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';

import { fastifyRefusal, refusalResponse } from './framework-errors.js';

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

/** What {@link idempotent} returns: Fastify route options with their handler. */
export interface IdempotentRoute {
  readonly handler: (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply>;
  /** Fastify's refusals of the body as problems; any other error is thrown on to the app's handler. */
  readonly errorHandler: (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply>;
  /** The route's `maxBodyBytes`, enforced by Fastify while it reads the body. */
  readonly bodyLimit: number;
}

/**
 * Route options whose handler runs `handler` at most once per (scope, `Idempotency-Key`); see
 * `idempotent` in `oncely` for the semantics. A handler that throws rejects after its transaction
 * rolled back (the app's error handler answers, Fastify's default a 500).
 */
export function idempotent(
  options: IdempotentOptions<FastifyRequest>,
  handler: IdempotentHandler<FastifyIdempotentContext>,
): IdempotentRoute {
  const engine = createIdempotencyEngine(options);
  const typeBase = options.problemTypeBase ?? 'urn:oncely:problem:';
  return {
    bodyLimit: options.maxBodyBytes ?? 1024 * 1024,
    handler: async (request, reply) => {
      const scope = await engine.resolveScope(options.scope, request);
      const response = await engine.run(toWebRequest(request), scope, handler, (ctx) => ({ ...ctx, request }));
      return await sendWebResponse(reply, response);
    },
    errorHandler: async (error, _request, reply) => {
      const refused = fastifyRefusal(error);
      // Not a refusal of the request: the app's own error handler (Fastify's default) answers it.
      if (refused === undefined) throw error;
      if (refused.problem === 'request_body_too_large') void reply.header('connection', 'close');
      return await sendWebResponse(reply, refusalResponse(refused, typeBase));
    },
  };
}

async function sendWebResponse(reply: FastifyReply, response: Response): Promise<FastifyReply> {
  reply.code(response.status);
  response.headers.forEach((value, name) => {
    if (name !== 'set-cookie') void reply.header(name, value);
  });
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) void reply.header('set-cookie', cookies);
  return reply.send(Buffer.from(await response.arrayBuffer()));
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
