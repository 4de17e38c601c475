/**
 * The console as an Express middleware (or a plain `node:http` request listener):
 *
 * ```ts
 * app.use('/ops/oncely', requireOperator, consoleMiddleware({ db, kafka, identify: (req) => req.user?.email }));
 * ```
 * It reads its own form bodies (or takes what `express.urlencoded()` parsed) and answers every
 * request below its mount path; nothing is passed on to `next` but errors.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

import type { NextFunction, Request as ExpressRequest } from 'express';

import { createConsole, type ConsoleResponse } from './app.js';
import { formFrom, MAX_FORM_BYTES } from './form.js';
import type { ConsoleOptions } from './options.js';

/** An Express middleware (also a `node:http` listener) with a `close()` for the console's pool and Kafka admin. */
export interface ConsoleMiddleware {
  (req: IncomingMessage, res: ServerResponse, next?: NextFunction): void;
  close(): Promise<void>;
}

export function consoleMiddleware(options: ConsoleOptions<ExpressRequest>): ConsoleMiddleware {
  const core = createConsole<ExpressRequest>(options);
  const middleware = (req: IncomingMessage, res: ServerResponse, next?: NextFunction): void => {
    const express = req as IncomingMessage & Partial<ExpressRequest>;
    const handle = async (): Promise<void> => {
      const url = new URL(req.url ?? '/', 'http://console.invalid');
      const method = (req.method ?? 'GET').toUpperCase();
      const body = method === 'POST' ? await readForm(express) : undefined;
      const response = await core.handle({
        method,
        path: url.pathname === '' ? '/' : url.pathname,
        query: url.searchParams,
        headers: req.headers,
        body,
        base: express.baseUrl ?? '',
        remoteAddress: express.ip ?? req.socket.remoteAddress,
        secure: express.secure ?? ('encrypted' in req.socket && req.socket.encrypted === true),
        native: express as ExpressRequest,
      });
      send(res, response);
    };
    handle().catch((error: unknown) => {
      if (next !== undefined) next(error);
      else if (!res.headersSent) {
        res.statusCode = 400;
        res.end('oncely console: the request could not be read');
      }
    });
  };
  return Object.assign(middleware, { close: () => core.close() });
}

async function readForm(req: IncomingMessage & { body?: unknown }): Promise<URLSearchParams | undefined> {
  // A body parser in front already read it: take what it parsed.
  if (req.readableEnded || (req.body !== undefined && Object.keys(req.body as object).length > 0)) {
    return formFrom(req.body);
  }
  const type = req.headers['content-type'] ?? '';
  if (!type.startsWith('application/x-www-form-urlencoded')) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res: ServerResponse, response: ConsoleResponse): void {
  res.statusCode = response.status;
  for (const [name, value] of Object.entries(response.headers)) res.setHeader(name, value);
  res.end(response.body);
}
