/**
 * `oncely/express`: the idempotent core as an Express request handler.
 *
 * ```ts
 * app.post('/v1/payments', idempotent({ db, scope: (req) => req.get('x-api-key') ?? '' }, async (request, ctx) => …));
 * ```
 * Works with or without a body parser in front: the raw body is read from the request stream when
 * nothing consumed it; a body a parser already read is re-encoded (a Buffer or string as is, a
 * parsed object as JSON, which the default fingerprint canonicalises anyway).
 */
import { Readable } from 'node:stream';

import type { NextFunction, Request as ExpressRequest, RequestHandler, Response as ExpressResponse } from 'express';

import {
  createIdempotencyEngine,
  type IdempotentContext,
  type IdempotentHandler,
  type IdempotentOptions,
} from './idempotent.js';
import { encodeParsedBody, webHeaders } from './native.js';

/** `ctx` of an Express route: the core's, plus Express's own request (for `req.user`, `res.locals`…). */
export interface ExpressIdempotentContext extends IdempotentContext {
  readonly req: ExpressRequest;
}

/**
 * An Express handler that runs `handler` at most once per (scope, `Idempotency-Key`); see
 * `idempotent` in `oncely` for the semantics. A handler that throws is passed to `next(error)`
 * after its transaction rolled back (Express's error handler answers 500).
 */
export function idempotent(
  options: IdempotentOptions<ExpressRequest>,
  handler: IdempotentHandler<ExpressIdempotentContext>,
): RequestHandler {
  const engine = createIdempotencyEngine(options);
  return (req: ExpressRequest, res: ExpressResponse, next: NextFunction): void => {
    const handle = async (): Promise<void> => {
      const scope = await engine.resolveScope(options.scope, req);
      const response = await engine.run(toWebRequest(req), scope, handler, (ctx) => ({ ...ctx, req }));
      await sendWebResponse(res, response);
    };
    handle().catch(next);
  };
}

function toWebRequest(req: ExpressRequest): Request {
  const headers = webHeaders(req.headers);
  const url = `${req.protocol}://${req.get('host') ?? 'localhost'}${req.originalUrl}`;
  const method = req.method.toUpperCase();
  if (method === 'GET' || method === 'HEAD') return new Request(url, { method, headers });
  const parsed: unknown = req.body;
  if (parsed === undefined) {
    // Nothing read the body yet: stream it (the core stops reading past maxBodyBytes).
    return new Request(url, {
      method,
      headers,
      body: Readable.toWeb(req) as ReadableStream<Uint8Array>,
      duplex: 'half',
    });
  }
  // A body parser already consumed the stream; its content-length no longer describes the copy.
  headers.delete('content-length');
  return new Request(url, { method, headers, body: encodeParsedBody(parsed) });
}

async function sendWebResponse(res: ExpressResponse, response: Response): Promise<void> {
  res.status(response.status);
  response.headers.forEach((value, name) => {
    if (name !== 'set-cookie') res.setHeader(name, value);
  });
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) res.setHeader('set-cookie', cookies);
  res.end(Buffer.from(await response.arrayBuffer()));
}
