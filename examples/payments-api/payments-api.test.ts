/**
 * The HTTP act of the demo as a test: timeouts, retries, races and reused keys against the real
 * Fastify API and a real PostgreSQL end with every payment charged exactly once.
 */
import { randomUUID } from 'node:crypto';

import pg from 'pg';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';

import { runHttpDemo } from './demo-http.js';

let admin: pg.Client;
const database = `payments_api_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
let databaseUrl: string;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('databaseUrl') });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database} TEMPLATE ${inject('templateDatabase')}`);
  const url = new URL(inject('databaseUrl'));
  url.pathname = `/${database}`;
  databaseUrl = url.toString();
});

afterAll(async () => {
  await admin?.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin?.end();
});

it('G7: clients that time out, retry, race, reuse keys and burst past the pool are charged exactly once', async () => {
  const lines: string[] = [];
  const report = await runHttpDemo({ databaseUrl, operations: 16, seed: 3, log: (line) => lines.push(line) });
  expect(report.chargedTwice).toBe(0);
  expect(report.wrongAmounts).toBe(0);
  expect(report.burst).toBe(36);
  expect(report.paymentsCreated).toBe(16 + 36);
  expect(report.executions).toBe(16 + 36);
  expect(report.clientTimeouts).toBeGreaterThan(0);
  expect(report.replays).toBeGreaterThan(0);
  expect(report.conflicts409).toBeGreaterThan(0);
  expect(report.reused422).toBeGreaterThan(0);
  // Each figure is printed once: the database's count of operations charged twice is one row.
  expect(lines.filter((line) => line.startsWith('charged twice'))).toEqual([
    expect.stringMatching(/^charged twice\s+0\s+from the database$/),
  ]);
});
