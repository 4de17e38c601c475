import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

import { drizzle } from 'drizzle-orm/node-postgres';
import express from 'express';
import Fastify from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';

import { idempotent as expressIdempotent } from 'oncely/express';
import { idempotent as fastifyIdempotent } from 'oncely/fastify';

import type { IdempotentContext, IdempotentOptions, OncelyDatabase } from '../../../src/index.js';
import { databaseUrlFor, testPool } from '../../support/settings.js';

export type Framework = 'express' | 'fastify';

/** A route of the test server: its path, its options (db and scope are filled in) and handler. */
export interface TestRoute {
  readonly path: string;
  readonly options?: Omit<IdempotentOptions, 'db' | 'scope'>;
  /** The route's scope from the request's headers. Default: its `x-api-key` header. */
  readonly scope?: (headers: IncomingHttpHeaders) => string;
  readonly handler: (request: Request, ctx: IdempotentContext) => Promise<Response>;
}

export interface TestServer {
  readonly url: string;
  close(): Promise<void>;
}

/** The scope of a request: its `x-api-key` header, as an API would use its caller's API key. */
const scopeOf = (apiKey: string | string[] | undefined): string =>
  (Array.isArray(apiKey) ? apiKey[0] : apiKey) ?? 'anonymous';
const defaultScope = (headers: IncomingHttpHeaders): string => scopeOf(headers['x-api-key']);

/** A real Express or Fastify server on a free port, with the routes mounted through the adapter. */
export async function startServer(
  framework: Framework,
  db: OncelyDatabase,
  routes: readonly TestRoute[],
): Promise<TestServer> {
  if (framework === 'express') {
    const app = express();
    for (const route of routes) {
      app.post(
        route.path,
        expressIdempotent(
          { ...route.options, db, scope: (req) => (route.scope ?? defaultScope)(req.headers) },
          route.handler,
        ),
      );
    }
    app.use((error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).json({ error: error instanceof Error ? error.message : String(error) });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      server.once('listening', resolve);
      server.once('error', reject);
    });
    const { port } = server.address() as AddressInfo;
    return {
      url: `http://127.0.0.1:${port}`,
      close: () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    };
  }
  const app = Fastify({ logger: false });
  // Bodies other than JSON and text reach the route as bytes (Fastify refuses them with 415 otherwise).
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
  for (const route of routes) {
    app.post(
      route.path,
      fastifyIdempotent(
        { ...route.options, db, scope: (request) => (route.scope ?? defaultScope)(request.headers) },
        route.handler,
      ),
    );
  }
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { url, close: () => app.close() };
}

export interface HttpTestDatabase {
  readonly pool: pg.Pool;
  readonly db: OncelyDatabase;
  /** A connection outside the pool (close it): for watching while the pool is busy. */
  connect(): Promise<pg.Client>;
  /** The database's connection string (for a pool of another size). */
  readonly url: string;
}

/** A database of this file's own, cloned from the run's migrated template, with a payments table. */
export function useHttpDatabase(): HttpTestDatabase {
  const state: { admin?: pg.Client; pool?: pg.Pool; db?: OncelyDatabase; database?: string; url?: string } = {};
  beforeAll(async () => {
    const serverUrl = inject('databaseUrl');
    const database = `oncely_http_${randomUUID().replaceAll('-', '').slice(0, 16)}`;
    state.admin = new pg.Client({ connectionString: serverUrl });
    await state.admin.connect();
    await state.admin.query(`CREATE DATABASE ${database} TEMPLATE ${inject('templateDatabase')}`);
    state.database = database;
    state.url = databaseUrlFor(serverUrl, database);
    state.pool = testPool(databaseUrlFor(serverUrl, database), 12);
    state.db = drizzle(state.pool);
    await state.pool.query(`
      CREATE TABLE http_payments (
        id           bigserial PRIMARY KEY,
        idem_key     text,
        account_id   text NOT NULL,
        amount_cents bigint NOT NULL,
        status       text NOT NULL
      )`);
  });
  afterAll(async () => {
    await state.pool?.end();
    if (state.admin !== undefined) {
      if (state.database !== undefined)
        await state.admin.query(`DROP DATABASE IF EXISTS ${state.database} WITH (FORCE)`);
      await state.admin.end();
    }
  });
  return {
    get pool() {
      if (state.pool === undefined) throw new Error('database not ready');
      return state.pool;
    },
    get db() {
      if (state.db === undefined) throw new Error('database not ready');
      return state.db;
    },
    get url() {
      if (state.url === undefined) throw new Error('database not ready');
      return state.url;
    },
    async connect() {
      const client = new pg.Client({ connectionString: state.url });
      await client.connect();
      return client;
    },
  };
}

/** A promise with its resolve, for holding a handler until the test lets it go. */
export function gate(): { readonly promise: Promise<void>; open(): void } {
  let open = (): void => undefined;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}
