import { describe, expect, it } from 'vitest';

import { transactionControlStatement } from '../../../src/inbox/database.js';

describe('transactionControlStatement', () => {
  it('names every statement that ends or begins a transaction, whatever its case, spacing or leading comments', () => {
    expect(transactionControlStatement('ROLLBACK')).toBe('ROLLBACK');
    expect(transactionControlStatement('rollback and chain')).toBe('ROLLBACK');
    expect(transactionControlStatement('  commit;')).toBe('COMMIT');
    expect(transactionControlStatement('/* retry */ -- by hand\n COMMIT WORK')).toBe('COMMIT');
    expect(transactionControlStatement('end')).toBe('END');
    expect(transactionControlStatement('ABORT')).toBe('ABORT');
    expect(transactionControlStatement('begin isolation level serializable')).toBe('BEGIN');
    expect(transactionControlStatement('START\n  TRANSACTION')).toBe('START TRANSACTION');
    expect(transactionControlStatement("PREPARE TRANSACTION 'x'")).toBe('PREPARE TRANSACTION');
    expect(transactionControlStatement("COMMIT PREPARED 'x'")).toBe('COMMIT');
  });

  it('lets savepoints (ctx.tx.transaction()) and every other statement through', () => {
    for (const text of [
      'savepoint sp1',
      'release savepoint sp1',
      'rollback to savepoint sp1',
      'ROLLBACK TO sp1',
      'rollback work to savepoint sp1',
      'ROLLBACK TRANSACTION TO SAVEPOINT sp1',
      'insert into "ledger" ("end", "commit") values ($1, $2)',
      'select "begin" from periods',
      'endpoint',
      'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
      // A later ROLLBACK commits nothing: left to the transaction-status check.
      'SELECT 1; ROLLBACK',
      'DO $$ BEGIN UPDATE t SET a = 1; END $$',
      'DO $body$ BEGIN PERFORM 1; COMMIT; END $body$',
      "SELECT '; commit'; SELECT 2",
      'SELECT 1 /* ; begin */; -- ; end\n SELECT 2',
      'SELECT "x;commit" FROM t',
    ]) {
      expect(transactionControlStatement(text)).toBeUndefined();
    }
  });

  it('finds a later statement of a multi-statement text that would commit or begin a transaction', () => {
    expect(transactionControlStatement('SELECT 1; COMMIT')).toBe('COMMIT');
    expect(transactionControlStatement("UPDATE t SET a = ';'; end")).toBe('END');
    expect(transactionControlStatement('SELECT 1; ROLLBACK; BEGIN')).toBe('BEGIN');
    expect(transactionControlStatement('DO $$ BEGIN NULL; END $$; /* then */ COMMIT')).toBe('COMMIT');
    expect(transactionControlStatement('select 1;start   transaction')).toBe('START TRANSACTION');
  });
});
