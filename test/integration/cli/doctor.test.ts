import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';

import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';
import { databaseUrlFor } from '../../support/settings.js';

const cli = fileURLToPath(new URL('../../../src/cli/main.ts', import.meta.url));
const env = useTestEnvironment();

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the CLI; with `closeStdout` the reader goes away at once, as `| head` does. */
function oncely(args: string[], { closeStdout = false } = {}): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', cli, ...args], {
    env: { ...process.env, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  if (closeStdout) child.stdout.destroy();
  else child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}

describe('the CLI as an operator meets it', () => {
  it('prints its version with --version', async () => {
    const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    const run = await oncely(['--version']);
    expect(run).toMatchObject({ code: 0, stdout: `${version}\n` });
  });

  it('refuses a dead-letter id that is not a number before asking the database', async () => {
    const run = await oncely(['dead-letters', 'show', 'abc', '--database-url', env.databaseUrl]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('"abc" is not a dead-letter id');
    expect(run.stderr).not.toMatch(/invalid input syntax|bigint/);
  });

  it('exits quietly when the reader closes the pipe (`oncely migrate --dry-run | head`)', async () => {
    const admin = new pg.Client({ connectionString: inject('databaseUrl') });
    await admin.connect();
    const database = `oncely_epipe_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    await admin.query(`CREATE DATABASE ${database}`);
    try {
      const run = await oncely(
        ['migrate', '--dry-run', '--database-url', databaseUrlFor(inject('databaseUrl'), database)],
        {
          closeStdout: true,
        },
      );
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await admin.end();
    }
  });

  it('doctor: OK for the schema, a warning with its fix for open dead letters, the lag of the group', async () => {
    const topic = await env.createTopic('doctor');
    const groupId = env.groupId('doctor');
    await env.produce(topic, [jsonMessage('a', { n: 1 }), { value: 'not json', headers: { 'message-id': 'bad' } }]);
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2);
    await waitFor('offsets committed', async () => (await env.committedOffsetsOf(groupId, topic)).get(0) === 2n);

    const run = await oncely([
      'doctor',
      '--database-url',
      env.databaseUrl,
      '--brokers',
      env.brokers.join(','),
      '--group',
      groupId,
    ]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^OK {4}migrations: \d+ applied, schema current$/m);
    expect(run.stdout).toContain(`WARN  ${groupId}: dead letters: 1 open`);
    expect(run.stdout).toContain(`fix: inspect with \`oncely dead-letters list --group ${groupId}\``);
    expect(run.stdout).toContain(`OK    ${groupId}: topics: ${topic}`);
    expect(run.stdout).toContain(`OK    ${groupId}: group: Stable, 1 member`);
    expect(run.stdout).toContain(`OK    ${groupId}: lag: 0 records behind`);
  });

  it('G7: doctor warns of sessions held idle in a transaction, the mark of a wedged pool', async () => {
    const held = new pg.Client({ connectionString: env.databaseUrl });
    await held.connect();
    try {
      await held.query('BEGIN');
      await held.query('SELECT 1');
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const run = await oncely([
        'doctor',
        '--database-url',
        env.databaseUrl,
        '--max-idle-in-transaction',
        '1',
        '--json',
      ]);
      const { checks } = JSON.parse(run.stdout) as { checks: { name: string; verdict: string; detail: string }[] };
      expect(checks.find((c) => c.name === 'connections')).toMatchObject({
        verdict: 'WARN',
        detail: expect.stringMatching(/idle in a transaction for over 1 s/),
      });
    } finally {
      await held.end();
    }
  });

  it('doctor: FAIL with the fix, and exit code 1, when the database cannot be reached', async () => {
    const run = await oncely(['doctor', '--database-url', 'postgres://nobody@127.0.0.1:1/none', '--json']);
    expect(run.code).toBe(1);
    const { checks } = JSON.parse(run.stdout) as { checks: { name: string; verdict: string; fix?: string }[] };
    expect(checks[0]).toMatchObject({
      name: 'database',
      verdict: 'FAIL',
      fix: expect.stringContaining('DATABASE_URL'),
    });
  });
});

describe('oncely status', () => {
  it('shows one screen per group: recorded outcomes, open dead letters by reason, state and lag per partition', async () => {
    const topic = await env.createTopic('status');
    const groupId = env.groupId('status');
    await env.produce(topic, [jsonMessage('a', { n: 1 }), { value: 'not json', headers: { 'message-id': 'bad' } }]);
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('two outcomes', () => outcomes.total === 2);
    await waitFor('offsets committed', async () => (await env.committedOffsetsOf(groupId, topic)).get(0) === 2n);

    const args = ['status', '--database-url', env.databaseUrl, '--brokers', env.brokers.join(',')];
    const run = await oncely(args);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`Group ${groupId} · Stable · lag 0`);
    expect(run.stdout).toContain(`  ${topic}: processed 1 · dead letters 1 (open 1, retried 0, discarded 0)`);
    expect(run.stdout).toMatch(/partition 0: next offset 2, log end 2, lag 0/);
    expect(run.stdout).toContain(`dead letters: 1 open (${topic} invalid_payload: 1)`);
    expect(run.stdout).toMatch(/Outbox: \d+ pending, \d+ parked, \d+ sent, \d+ discarded/);

    const json = JSON.parse((await oncely([...args, '--json'])).stdout) as {
      groups: { groupId: string; lag: { partition: number; lag: number }[] }[];
    };
    expect(json.groups.find((g) => g.groupId === groupId)?.lag).toEqual([
      expect.objectContaining({ partition: 0, lag: 0 }),
    ]);
  });
});
