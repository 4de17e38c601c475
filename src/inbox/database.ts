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
  /** The first transaction-control statement refused on this `tx` (`ROLLBACK`, `COMMIT`, …), if any. */
  refusedControl(): string | undefined;
}

/**
 * A statement that ends or begins a transaction (`COMMIT`, `END`, `ROLLBACK` — not `ROLLBACK TO
 * SAVEPOINT` —, `ABORT`, `BEGIN`, `START TRANSACTION`, `PREPARE TRANSACTION`), after any leading
 * whitespace and comments. Anchored at the start: it fails at the first letter of the `insert` or
 * `select` a handler sends, so it costs next to nothing per query. A statement hidden after a `;`
 * in one text is not seen here; the pipeline's check of the connection's transaction status after
 * the handler catches what it ended.
 */
const TRANSACTION_CONTROL =
  /^(?:\s|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*(begin|start\s+transaction|commit|end|abort|prepare\s+transaction|rollback(?!(?:\s+(?:work|transaction))?\s+to\b))\b/i;

/**
 * What a later statement of a multi-statement text cannot hide: literals, quoted names,
 * dollar-quoted bodies (a `DO $$ BEGIN …; END $$` block) and comments, blanked out before the
 * text is split at its semicolons.
 */
const QUOTED = /\$([A-Za-z_][A-Za-z_0-9]*)?\$[\s\S]*?\$\1\$|'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|\/\*[\s\S]*?\*\//g;

/**
 * The transaction-control statement `text` starts with (`ROLLBACK`, `START TRANSACTION`, …, in
 * upper case), or undefined for any other statement — savepoints included. In a multi-statement
 * text (only a text without parameters can be one), a later statement that would commit or begin
 * a transaction (`COMMIT`, `END`, `BEGIN`, `START TRANSACTION`, `PREPARE TRANSACTION`) is found
 * too: what it commits could not be taken back. A later `ROLLBACK` commits nothing and is left to
 * the check of the connection's transaction status after the handler returns.
 */
export function transactionControlStatement(text: string): string | undefined {
  // The regex only for a text that can start with control: `insert`, `update`, `delete`, `with`
  // (nearly every statement a handler sends) are passed over by one table lookup.
  const code = text.charCodeAt(0);
  if (!(code < 128 && MAY_START_CONTROL[code] === 1)) return text.includes(';') ? laterControl(text) : undefined;
  const first = TRANSACTION_CONTROL.exec(text);
  if (first !== null) return controlName(first[1]);
  // Statements oncely's handlers send hold no semicolon: the common path ends here.
  return text.includes(';') ? laterControl(text) : undefined;
}

/** A later statement of a multi-statement text that would commit or begin a transaction. */
function laterControl(text: string): string | undefined {
  const parts = text.replace(QUOTED, ' ').split(';');
  for (let i = 1; i < parts.length; i++) {
    const later = TRANSACTION_CONTROL.exec(parts[i] ?? '');
    const name = later === null ? undefined : controlName(later[1]);
    if (name !== undefined && name !== 'ROLLBACK' && name !== 'ABORT') return name;
  }
  return undefined;
}

/** First characters (ASCII) a transaction-control statement can have: its keywords', spaces, comments. */
const MAY_START_CONTROL = ((): Uint8Array => {
  const table = new Uint8Array(128);
  for (const c of 'abceprsABCEPRS \t\n\r\f\v-/') table[c.charCodeAt(0)] = 1;
  return table;
})();

function controlName(keyword: string | undefined): string {
  return (keyword ?? '').replace(/\s+/g, ' ').toUpperCase();
}

/** The statement's text, as drizzle passes it: a query config object, or the text itself. */
function statementText(query: unknown): string | undefined {
  if (typeof query === 'string') return query;
  const text = (query as { text?: unknown } | null | undefined)?.text;
  return typeof text === 'string' ? text : undefined;
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
    let refused: string | undefined;
    const guarded: QueryableClient = {
      query: ((...args: Parameters<pg.PoolClient['query']>) => {
        if (!open) {
          return Promise.reject(
            new OncelyError(
              'ONCELY_ATTEMPT_ENDED',
              'ctx.tx was used after its handler attempt had ended (returned, failed or timed out): the query was ' +
                "not sent, so it cannot land in another message's transaction on the same connection. Await every " +
                'query inside the handler; do not keep ctx.tx for later.',
              // A handler that raced its own transaction may well finish in time on another attempt.
              { retriable: true },
            ),
          );
        }
        const text = statementText(args[0]);
        const statement = text === undefined ? undefined : transactionControlStatement(text);
        if (statement !== undefined) {
          // Never sent: a COMMIT would make the claim (and a commit group's other claims) durable
          // apart from the outcome oncely records, a ROLLBACK would throw them away and leave the
          // handler's later statements in autocommit. The attempt fails for it once it returns.
          refused ??= statement;
          return Promise.reject(
            new OncelyError(
              'ONCELY_TX_CONTROL',
              `A handler sent ${statement} through ctx.tx; transaction control in a handler is refused (not sent). ` +
                'oncely owns the transaction: throw to roll back, or use ctx.tx.transaction() for a savepoint.',
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
      refusedControl: () => refused,
    };
  };
}
