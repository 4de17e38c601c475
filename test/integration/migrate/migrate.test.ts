import { randomUUID } from 'node:crypto';

import { getTableConfig } from 'drizzle-orm/pg-core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';

import {
  deadLettersTable,
  groupScopesTable,
  inboxTable,
  migrate,
  migrationStatus,
  offsetsTable,
} from '../../../src/index.js';
import { loadMigrations } from '../../../src/migrate/migrate.js';
import { databaseUrlFor, testPool } from '../../support/settings.js';

let admin: pg.Client;
const created: string[] = [];

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('databaseUrl') });
  await admin.connect();
});

afterAll(async () => {
  for (const database of created) await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin.end();
});

async function emptyDatabase(): Promise<string> {
  const database = `oncely_migrate_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  await admin.query(`CREATE DATABASE ${database}`);
  created.push(database);
  return databaseUrlFor(inject('databaseUrl'), database);
}

describe('migrate', () => {
  it('applies each file exactly once when ten processes migrate at the same time', async () => {
    const url = await emptyDatabase();
    const pools = Array.from({ length: 10 }, () => testPool(url, 1));
    try {
      const results = await Promise.all(pools.map((pool) => migrate(pool)));
      const files = (await loadMigrations()).map((m) => m.name);
      // Exactly one caller applied the files; the others found them applied.
      expect(results.flatMap((r) => r.applied)).toEqual(files);
      const status = await migrationStatus(url);
      expect(status.pending).toEqual([]);
      expect(status.applied.map((m) => m.name)).toEqual(files);
    } finally {
      await Promise.all(pools.map((pool) => pool.end()));
    }
  });

  it('reports pending migrations on an empty database and applies nothing on a second run', async () => {
    const url = await emptyDatabase();
    const files = await loadMigrations();
    expect((await migrationStatus(url)).pending.map((m) => m.id)).toEqual(files.map((m) => m.id));
    expect((await migrate(url)).applied).toEqual(files.map((m) => m.name));
    expect((await migrate(url)).applied).toEqual([]);
  });

  it('matches the exported drizzle tables to the migrated columns', async () => {
    const url = await emptyDatabase();
    await migrate(url);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      for (const table of [inboxTable, offsetsTable, deadLettersTable, groupScopesTable]) {
        const config = getTableConfig(table);
        const { rows } = await client.query<{ column_name: string; is_nullable: string }>(
          `SELECT column_name, is_nullable FROM information_schema.columns
            WHERE table_schema = 'oncely' AND table_name = $1 ORDER BY ordinal_position`,
          [config.name],
        );
        expect(config.columns.map((c) => [c.name, c.notNull ? 'NO' : 'YES']).sort()).toEqual(
          rows.map((r) => [r.column_name, r.is_nullable]).sort(),
        );
      }
    } finally {
      await client.end();
    }
  });
});
