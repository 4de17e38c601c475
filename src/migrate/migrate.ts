import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Pool, PoolClient } from 'pg';

import { OncelyError } from '../errors.js';
import { type DatabaseInput, resolvePool } from '../inbox/database.js';

/** The bundled SQL files, shipped in the package next to `dist/` (and next to `src/`). */
const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));

/**
 * A fixed key for `pg_advisory_lock`. Every process that migrates takes the same lock, so ten
 * processes starting at once apply each file exactly once, one after another.
 */
const MIGRATION_LOCK_KEY = 0x6f6e63656c79n; // "oncely" in ASCII

export interface MigrationFile {
  readonly id: number;
  readonly name: string;
  readonly sql: string;
}

export interface MigrationStatus {
  readonly applied: readonly { id: number; name: string; appliedAt: Date }[];
  readonly pending: readonly { id: number; name: string }[];
}

export interface MigrateResult {
  /** Files applied by this call, in order (empty when the schema was already current). */
  readonly applied: readonly string[];
}

/** Reads `migrations/NNNN_name.sql` in order. */
export async function loadMigrations(dir: string = MIGRATIONS_DIR): Promise<MigrationFile[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f)).sort();
  return Promise.all(
    files.map(async (file, index) => {
      const id = Number(file.slice(0, 4));
      if (id !== index + 1) {
        throw new OncelyError(
          'ONCELY_MIGRATION_FAILED',
          `Migration files must be numbered 0001, 0002, … without gaps; found ${file} at position ${index + 1}.`,
        );
      }
      return { id, name: file.replace(/\.sql$/, ''), sql: await readFile(`${dir}/${file}`, 'utf8') };
    }),
  );
}

/** The id of the newest bundled migration: the schema version this oncely needs. */
export async function latestMigrationId(): Promise<number> {
  const migrations = await loadMigrations();
  return migrations.at(-1)?.id ?? 0;
}

/**
 * Applies the pending bundled migrations, in order, each in its own transaction, under a session
 * advisory lock. Safe to call from many processes at once. Accepts a drizzle node-postgres
 * database, a `pg` Pool, or a connection string.
 */
export async function migrate(db: DatabaseInput): Promise<MigrateResult> {
  const { pool, owned } = resolvePool(db);
  try {
    const migrations = await loadMigrations();
    const client = await pool.connect();
    let unlockError: unknown;
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY.toString()]);
      try {
        return { applied: await applyPending(client, migrations) };
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY.toString()]).catch((error: unknown) => {
          unlockError = error;
        });
      }
    } finally {
      // A session that may still hold the lock must not go back to the pool: destroying it releases
      // the lock. (pg-pool already destroys clients whose connection died.)
      client.release(unlockError instanceof Error ? unlockError : undefined);
    }
  } finally {
    if (owned) await pool.end();
  }
}

/** What is applied and what is pending, without changing anything. */
export async function migrationStatus(db: DatabaseInput): Promise<MigrationStatus> {
  const { pool, owned } = resolvePool(db);
  try {
    const migrations = await loadMigrations();
    const applied = await readApplied(pool);
    const appliedIds = new Set(applied.map((m) => m.id));
    return {
      applied,
      pending: migrations.filter((m) => !appliedIds.has(m.id)).map(({ id, name }) => ({ id, name })),
    };
  } finally {
    if (owned) await pool.end();
  }
}

async function applyPending(client: PoolClient, migrations: readonly MigrationFile[]): Promise<string[]> {
  // Created under the lock: CREATE … IF NOT EXISTS is not safe against a concurrent creator.
  await client.query(`
    CREATE SCHEMA IF NOT EXISTS oncely;
    CREATE TABLE IF NOT EXISTS oncely.migrations (
      id integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    );`);
  const { rows } = await client.query<{ id: number }>('SELECT id FROM oncely.migrations');
  const done = new Set(rows.map((r) => r.id));
  const applied: string[] = [];
  for (const migration of migrations) {
    if (done.has(migration.id)) continue;
    try {
      // The migration row is inserted first, in the same transaction as the file: a concurrent
      // migrator that somehow got past the lock would fail on the primary key, not apply twice.
      await client.query('BEGIN');
      await client.query('INSERT INTO oncely.migrations (id, name) VALUES ($1, $2)', [migration.id, migration.name]);
      await client.query(migration.sql);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw new OncelyError(
        'ONCELY_MIGRATION_FAILED',
        `Migration ${migration.name} failed and was rolled back: ${(error as Error).message}. ` +
          'Fix the cause (permissions: the role needs CREATE on the database) and run `oncely migrate` again.',
        { cause: error },
      );
    }
    applied.push(migration.name);
  }
  return applied;
}

async function readApplied(pool: Pool): Promise<{ id: number; name: string; appliedAt: Date }[]> {
  const { rows } = await pool
    .query<{ id: number; name: string; applied_at: Date }>(
      'SELECT id, name, applied_at FROM oncely.migrations ORDER BY id',
    )
    .catch((error: unknown) => {
      // 42P01 undefined_table / 3F000 invalid_schema_name: nothing applied yet.
      const code = (error as { code?: string }).code;
      if (code === '42P01' || code === '3F000') return { rows: [] };
      throw error;
    });
  return rows.map((r) => ({ id: r.id, name: r.name, appliedAt: r.applied_at }));
}
