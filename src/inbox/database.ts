import type { ExtractTablesWithRelations, RelationalSchemaConfig, TablesRelationalConfig } from 'drizzle-orm';
import { NodePgSession, NodePgTransaction, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import type { PgDialect } from 'drizzle-orm/pg-core';
import pg from 'pg';

import { configError, OncelyError } from '../errors.js';

/**
 * Declaration merging hook that types `ctx.tx` with your drizzle schema:
 *
 * ```ts
 * declare module 'oncely' {
 *   interface Register { schema: typeof schema }
 * }
 * ```
 * Without it `ctx.tx` is still a full drizzle transaction; only the relational `tx.query.*` API
 * needs the schema type.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface Register {}

export type RegisteredSchema = Register extends { schema: infer S extends Record<string, unknown> }
  ? S
  : Record<string, never>;

/** The drizzle transaction a handler writes through: `ctx.tx`. */
export type OncelyTransaction = NodePgTransaction<RegisteredSchema, ExtractTablesWithRelations<RegisteredSchema>>;

/** A drizzle node-postgres database created over a `pg` Pool: `drizzle(pool, { schema })`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type OncelyDatabase = NodePgDatabase<any> & { $client: pg.Pool };

/** What `migrate()` and the CLI accept: a drizzle database, a `pg` Pool, or a connection string. */
export type DatabaseInput = OncelyDatabase | pg.Pool | string;

function isPool(value: unknown): value is pg.Pool {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as pg.Pool).connect === 'function' &&
    typeof (value as pg.Pool).totalCount === 'number'
  );
}

/** The pool behind `db`; `owned` when oncely created it (from a connection string) and must end it. */
export function resolvePool(db: DatabaseInput): { pool: pg.Pool; owned: boolean } {
  if (typeof db === 'string') {
    const pool = new pg.Pool({ connectionString: db, max: 2 });
    // An idle connection that dies is re-emitted on the pool; unheard, that would throw.
    pool.on('error', () => undefined);
    return { pool, owned: true };
  }
  if (isPool(db)) return { pool: db, owned: false };
  const client = (db as { $client?: unknown } | undefined)?.$client;
  if (isPool(client)) return { pool: client, owned: false };
  throw configError(
    'db',
    'expected a drizzle node-postgres database created over a pg Pool, e.g. ' +
      '`drizzle(new Pool({ connectionString }), { schema })`. A single pg Client cannot be used: ' +
      'oncely needs one connection per partition it processes concurrently.',
  );
}

/** The configured `max` of a pg Pool (pg's default is 10). */
export function poolMax(pool: pg.Pool): number {
  return (pool as unknown as { options?: { max?: number } }).options?.max ?? 10;
}

interface DrizzleInternals {
  readonly dialect: PgDialect;
  readonly _: {
    readonly schema: TablesRelationalConfig | undefined;
    readonly fullSchema: Record<string, unknown>;
    readonly tableNamesMap: Record<string, string>;
    readonly session: unknown;
  };
}

/** The part of a pg client drizzle's prepared queries call. */
interface QueryableClient {
  query: pg.PoolClient['query'];
}

/** A `ctx.tx` for one transaction, and the switch that disables it when the transaction ends. */
export interface BoundTransaction {
  readonly tx: OncelyTransaction;
  close(): void;
}

export type TransactionBinder = (client: pg.PoolClient) => BoundTransaction;

/**
 * Prepares drizzle transactions over connections oncely has already opened a transaction on.
 *
 * oncely issues BEGIN and COMMIT itself (drizzle's own `transaction()` leaks the pooled connection
 * when BEGIN fails, and cannot be told to set `synchronous_commit` or check the COMMIT tag), so the
 * handler gets a drizzle transaction built from the user's own dialect (casing), logger and
 * relational schema, over the connection oncely holds. Its client refuses queries once the
 * transaction has ended: a query fired late (an un-awaited promise, a timer) must not land in the
 * next message's transaction on the same pooled connection.
 */
export function createTransactionBinder(db: OncelyDatabase): TransactionBinder {
  const internals = db as unknown as Partial<DrizzleInternals>;
  const dialect = internals.dialect;
  const meta = internals._;
  if (dialect === undefined || typeof dialect.sqlToQuery !== 'function' || meta === undefined) {
    throw configError(
      'db',
      'expected a drizzle-orm node-postgres database (`drizzle(pool, { schema })` from drizzle-orm/node-postgres).',
    );
  }
  const relational: RelationalSchemaConfig<TablesRelationalConfig> | undefined =
    meta.schema === undefined
      ? undefined
      : { schema: meta.schema, fullSchema: meta.fullSchema, tableNamesMap: meta.tableNamesMap };
  const sessionOptions = (meta.session as { options?: ConstructorParameters<typeof NodePgSession>[3] }).options ?? {};

  return (client) => {
    let open = true;
    const guarded: QueryableClient = {
      query: ((...args: Parameters<pg.PoolClient['query']>) => {
        if (!open) {
          return Promise.reject(
            new OncelyError(
              'ONCELY_TRANSACTION_CLOSED',
              'ctx.tx was used after its message transaction had ended. Await every query inside the handler; ' +
                'do not keep ctx.tx for later.',
              // A handler that raced its own transaction may well finish in time on another attempt.
              { retriable: true },
            ),
          );
        }
        return (client.query as (...a: unknown[]) => unknown)(...args);
      }) as pg.PoolClient['query'],
    };
    const session = new NodePgSession(guarded as pg.PoolClient, dialect, relational, sessionOptions);
    const tx = new NodePgTransaction(dialect, session, relational) as unknown as OncelyTransaction;
    return {
      tx,
      close: () => {
        open = false;
      },
    };
  };
}
