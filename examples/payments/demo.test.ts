/**
 * `npm run demo -- --json` as a machine reads it: one JSON document on stdout, each figure once,
 * with what it should be beside it. A smaller workload (`--events 200`) than the demo's default
 * keeps the run short; the acts are the same: the HTTP clients, the SIGKILL, the provider, the checks.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';

import pg from 'pg';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';

import type { DemoSummary } from './demo.js';

let admin: pg.Client;
const database = `payments_demo_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
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

function runDemo(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(new URL('./demo.ts', import.meta.url)), ...args],
    {
      env: { ...process.env, KAFKA_BROKERS: inject('kafkaBrokers').join(','), DATABASE_URL: databaseUrl },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

it('prints the demo summary as one JSON document, every figure once and as expected', async () => {
  const { code, stdout, stderr } = await runDemo(['--json', '--events', '200', '--seed', '11']);
  expect(code, stderr).toBe(0);
  // stdout is the document alone: progress went to stderr.
  const summary = JSON.parse(stdout) as DemoSummary;
  expect(stderr).toContain('Killed the consumer (SIGKILL)');
  expect(summary).toMatchObject({ seed: 11, ok: true, problems: [] });

  // Every figure that has a right value has it.
  const { http, consumer, provider } = summary;
  expect(http).toMatchObject(http.expected);
  expect(consumer).toMatchObject(consumer.expected);
  expect(provider).toMatchObject(provider.expected);
  expect(consumer.ledgerEntries).toBe(200);
  expect(consumer.deadLettered).toEqual({ invalid_payload: 5, key_reuse: 5, handler_failed: 3 });
  expect(consumer.duplicatesSent).toBe(20);
  expect(consumer.duplicatesSkipped.republish + consumer.duplicatesSkipped.redelivery).toBeGreaterThanOrEqual(16);
  expect(consumer.killedAfter).toBeGreaterThan(0);
  expect(http.requests).toBeGreaterThan(http.executions);

  // The shape a script relies on: these keys, each once.
  expect(Object.keys(summary).sort()).toEqual(['consumer', 'http', 'ok', 'problems', 'provider', 'run', 'seed']);
  expect(Object.keys(provider).sort()).toEqual([
    'charges',
    'expected',
    'paymentsChargedTwice',
    'refunds',
    'repeatedCalls',
  ]);
});

it('refuses an --events it cannot build the workload from, in one line', async () => {
  const { code, stdout, stderr } = await runDemo(['--json', '--events', '20']);
  expect(code).toBe(1);
  expect(stdout).toBe('');
  expect(stderr).toContain('--events must be an integer of at least 100, not 20');
});
