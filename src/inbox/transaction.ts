import type pg from 'pg';

import { OncelyError } from '../errors.js';
import type { BoundTransaction, OncelyTransaction, TransactionBinder } from './database.js';

/** One open transaction on one pooled connection, as the pipeline sees it. */
export interface OpenTransaction {
  readonly client: pg.PoolClient;
  /** The drizzle transaction handed to the handler; built on first use. */
  readonly tx: OncelyTransaction;
  /** Stops `tx` from accepting queries (called as soon as the handler returns); the next read of `tx` binds a new one. */
  closeTx(): void;
  /** True once the connection reported an error while this transaction held it. */
  connectionLost(): boolean;
  /**
   * What the user code given `tx` did to the transaction itself, if anything: a transaction-control
   * statement that `tx` refused, or — for one it could not see (hidden in a multi-statement text) —
   * the connection found outside a transaction. Read right after the handler returned.
   */
  transactionControl(): string | undefined;
}

/**
 * The transaction status pg keeps from the ReadyForQuery message that ends every statement
 * (`'I'` idle, `'T'` in a transaction, `'E'` in a failed one): reading it costs no round trip.
 * Undefined on a pg too old to keep it.
 */
function transactionStatus(client: pg.PoolClient): string | undefined {
  const status = (client as { getTransactionStatus?: () => string | null }).getTransactionStatus?.();
  return status ?? undefined;
}

export interface TransactionSettings {
  /** `SET LOCAL statement_timeout`, sent with BEGIN in one round trip. */
  readonly statementTimeoutMs?: number;
}

/**
 * A transaction failed on a connection that was lost meanwhile (the socket closed, the backend was
 * terminated, the ROLLBACK could not be sent): whatever the error says, the database is the cause.
 */
export class ConnectionLostError extends Error {
  override readonly name = 'ConnectionLostError';
  constructor(cause: unknown) {
    super('the database connection was lost during the transaction', { cause });
  }
}

/** Something that runs work in a transaction: a one-off ({@link inTransaction}) or a chain. */
export interface Transactions {
  run<T>(work: (transaction: OpenTransaction) => Promise<T>): Promise<T>;
  /** Says whether another transaction will follow the next one (a chain may then send its BEGIN early). */
  expectMore?(more: boolean): void;
}

/**
 * Runs `work` inside BEGIN … COMMIT on a connection of its own, and always gives the connection
 * back: destroyed when it failed, returned to the pool otherwise.
 */
export async function inTransaction<T>(
  pool: pg.Pool,
  bind: TransactionBinder,
  work: (transaction: OpenTransaction) => Promise<T>,
  settings: TransactionSettings = {},
): Promise<T> {
  const chain = new TransactionChain(pool, bind, settings);
  try {
    return await chain.run(work);
  } finally {
    await chain.close();
  }
}

/**
 * Consecutive transactions on one held connection (one partition's records, one after another).
 * When another transaction is known to follow, the COMMIT of one and the BEGIN of the next travel
 * as one simple query — one round trip fewer per message. Under READ COMMITTED a snapshot is taken
 * per statement, not at BEGIN, so starting the next transaction early shows it nothing stale.
 *
 * COMMIT is checked, not assumed: when a statement inside the transaction failed and the error was
 * swallowed, PostgreSQL answers COMMIT with ROLLBACK and no error. Treating that as success would
 * move the offset past a message whose effects were thrown away.
 *
 * The connection is always given back by `close()`: destroyed when it failed, returned to the pool
 * otherwise; a transaction begun ahead for a message that did not come is rolled back first.
 */
export class TransactionChain implements Transactions {
  readonly #pool: pg.Pool;
  readonly #bind: TransactionBinder;
  readonly #begin: string;
  #client: pg.PoolClient | undefined;
  #lost: Error | undefined;
  /** A BEGIN already ran on #client for the next transaction. */
  #begun = false;
  /** Whether the next COMMIT should begin another transaction in the same round trip. */
  #beginNext = false;
  // pg-pool removes its own error listener from a checked-out client: without this one, a backend
  // terminated while we hold the client (pg_terminate_backend, a failover) crashes the process.
  readonly #onError = (error: Error): void => {
    this.#lost ??= error;
  };

  constructor(pool: pg.Pool, bind: TransactionBinder, settings: TransactionSettings = {}) {
    this.#pool = pool;
    this.#bind = bind;
    this.#begin = beginStatement(settings);
  }

  /** Says whether another transaction will follow the next one (so its BEGIN can ride along). */
  expectMore(more: boolean): void {
    this.#beginNext = more;
  }

  async run<T>(work: (transaction: OpenTransaction) => Promise<T>): Promise<T> {
    const client = await this.#acquire();
    const lost = (): boolean => this.#lost !== undefined;
    const bind = this.#bind;
    let bound: BoundTransaction | undefined;
    const transaction: OpenTransaction = {
      client,
      get tx() {
        bound ??= bind(client);
        return bound.tx;
      },
      // The next handler of a commit group gets a drizzle transaction of its own: whatever the last
      // one kept of its ctx.tx stays refused.
      closeTx: () => {
        bound?.close();
        bound = undefined;
      },
      connectionLost: lost,
      transactionControl: () => {
        const refused = bound?.refusedControl();
        if (refused !== undefined) return `sent ${refused}`;
        // Idle inside work(): BEGIN ran, so a statement of the handler's ended the transaction;
        // whatever it ran after that ran in autocommit.
        return transactionStatus(client) === 'I'
          ? 'ended the transaction (the connection was found outside any transaction after the handler returned)'
          : undefined;
      },
    };
    let finished = false;
    try {
      if (!this.#begun) await client.query(this.#begin);
      this.#begun = false;
      const result = await work(transaction);
      transaction.closeTx();
      const beginNext = this.#beginNext;
      const answer = await client.query<Record<string, unknown>>(beginNext ? `COMMIT; ${this.#begin}` : 'COMMIT');
      finished = true;
      // A multi-statement query answers with one result per statement; the COMMIT's comes first.
      const commit = (Array.isArray(answer) ? answer[0] : answer) as pg.QueryResult | undefined;
      this.#begun = beginNext;
      if (commit?.command !== 'COMMIT') {
        throw new OncelyError(
          'ONCELY_COMMIT_FAILED',
          'PostgreSQL rolled the transaction back at COMMIT because a statement in it had failed. ' +
            'A handler must not catch and ignore database errors: let them propagate so the message is retried.',
          { retriable: true },
        );
      }
      return result;
    } catch (error) {
      if (!finished) {
        this.#begun = false;
        // A failed ROLLBACK means the connection is gone; PostgreSQL rolls back on its own then.
        await client.query('ROLLBACK').catch((rollbackError: unknown) => {
          this.#lost ??= rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
        });
      }
      if (this.#lost !== undefined) {
        this.#release();
        throw new ConnectionLostError(error);
      }
      throw error;
    } finally {
      transaction.closeTx();
    }
  }

  /** Ends a transaction begun ahead and gives the connection back. Idempotent. */
  async close(): Promise<void> {
    const client = this.#client;
    if (client === undefined) return;
    if (this.#begun && this.#lost === undefined) {
      this.#begun = false;
      await client.query('ROLLBACK').catch((error: unknown) => {
        this.#lost ??= error instanceof Error ? error : new Error(String(error));
      });
    }
    this.#release();
  }

  async #acquire(): Promise<pg.PoolClient> {
    if (this.#client !== undefined) return this.#client;
    const client = await this.#pool.connect();
    client.on('error', this.#onError);
    this.#client = client;
    this.#lost = undefined;
    this.#begun = false;
    return client;
  }

  #release(): void {
    const client = this.#client;
    if (client === undefined) return;
    this.#client = undefined;
    this.#begun = false;
    client.off('error', this.#onError);
    // Passing an error destroys the client instead of returning a broken one to the pool.
    client.release(this.#lost);
  }
}

const beginStatements = new Map<number, string>();

/** BEGIN, with the settings in the same simple-query round trip (no parameters: plain integers). */
function beginStatement({ statementTimeoutMs }: TransactionSettings): string {
  if (statementTimeoutMs === undefined || statementTimeoutMs <= 0) return 'BEGIN';
  let text = beginStatements.get(statementTimeoutMs);
  if (text === undefined) {
    text = `BEGIN; SET LOCAL statement_timeout = ${Math.trunc(statementTimeoutMs)}`;
    beginStatements.set(statementTimeoutMs, text);
  }
  return text;
}
