/**
 * `oncely/express`: the idempotent core as an Express request handler.
 *
 * ```ts
 * app.post('/v1/payments', idempotent({ db, scope: (req) => req.get('x-api-key') ?? '' }, async (request, ctx) => …));
 * app.use(problemErrors()); // after the routes: body-parser's refusals as RFC 9457 problems
 * ```
 * The request's fingerprint is of the bytes received. Without a body parser in front (the best
 * setup) the raw body is read from the request stream, up to `maxBodyBytes` (a declared
 * `Content-Length` past it is refused with 413 before the upload is read). A body a parser did not
 * read (body-parser leaves `req.body = {}` for types it skips) is still read from the stream: the
 * stand-in is never fingerprinted. A body a parser did read is taken from `req.rawBody` when the
 * parser kept it (`express.json({ verify: captureRawBody })`); otherwise an empty one is known
 * from `Content-Length: 0`, and anything else is re-encoded from the parsed value (a parsed object
 * as JSON, which the default fingerprint canonicalises anyway).
 */
import { Readable } from 'node:stream';

import type {
  ErrorRequestHandler,
  NextFunction,
  Request as ExpressRequest,
  RequestHandler,
  Response as ExpressResponse,
} from 'express';

import { bodyParserRefusal, refusalResponse } from './framework-errors.js';

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
  if (!bodyConsumed(req)) {
    // Nothing read the body yet (whatever `req.body` says: a parser that skipped the type may have
    // left a stand-in there): stream it; the core stops reading past maxBodyBytes.
    return new Request(url, {
      method,
      headers,
      body: Readable.toWeb(req) as ReadableStream<Uint8Array>,
      duplex: 'half',
    });
  }
  // A body parser already consumed the stream: the bytes it kept, else what the headers prove,
  // else the parsed value re-encoded. Its content-length no longer describes a re-encoded copy.
  const raw = (req as { rawBody?: unknown }).rawBody;
  const declared = req.headers['content-length'];
  headers.delete('content-length');
  if (raw instanceof Uint8Array) return new Request(url, { method, headers, body: raw.byteLength === 0 ? null : raw });
  if (declared === '0') return new Request(url, { method, headers });
  return new Request(url, { method, headers, body: encodeParsedBody(req.body) });
}

/** Whether something (a body parser) has read the request stream already, as body-parser tells. */
function bodyConsumed(req: ExpressRequest): boolean {
  return req.readableEnded || (req.complete && !req.readable);
}

/**
 * A body parser's `verify` hook that keeps the bytes received as `req.rawBody`, so the fingerprint
 * is of them: `app.use(express.json({ verify: captureRawBody }))`.
 */
export function captureRawBody(req: unknown, _res: unknown, buffer: Buffer): void {
  (req as { rawBody?: Buffer }).rawBody = buffer;
}

/** Options of {@link problemErrors}. */
export interface ProblemErrorsOptions {
  /** Prefix of the problem `type` URIs. Default `'urn:oncely:problem:'` (as `idempotent`'s). */
  readonly problemTypeBase?: string;
}

/**
 * An Express error middleware that answers body-parser's refusals (malformed or empty JSON 400
 * `request_body_invalid_json`, over its limit 413 `request_body_too_large`, an unsupported charset
 * or encoding 415 `request_body_unsupported`, others 400 `request_invalid`) as RFC 9457 problems.
 * Install it after the routes: `app.use(problemErrors())`. A parser in front of a route refuses
 * before the route runs, so only an error middleware can answer for it; errors of any other kind
 * (a handler's) are passed on untouched.
 */
export function problemErrors(options: ProblemErrorsOptions = {}): ErrorRequestHandler {
  const typeBase = options.problemTypeBase ?? 'urn:oncely:problem:';
  return (error: unknown, _req: ExpressRequest, res: ExpressResponse, next: NextFunction): void => {
    const refused = bodyParserRefusal(error);
    if (refused === undefined || res.headersSent) {
      next(error);
      return;
    }
    sendWebResponse(res, refusalResponse(refused, typeBase)).catch(next);
  };
}

async function sendWebResponse(res: ExpressResponse, response: Response): Promise<void> {
  res.status(response.status);
  // A body refused unread (413): close the connection after the answer instead of letting Node
  // read the rest of the upload to keep it alive.
  if (response.status === 413 && !bodyConsumed(res.req)) res.setHeader('connection', 'close');
  response.headers.forEach((value, name) => {
    if (name !== 'set-cookie') res.setHeader(name, value);
  });
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) res.setHeader('set-cookie', cookies);
  res.end(Buffer.from(await response.arrayBuffer()));
}
