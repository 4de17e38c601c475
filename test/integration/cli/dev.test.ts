/**
 * `oncely dev` with fixed ports and a kept data directory: the addresses a user writes into their
 * configuration once stay right on every start, and the database keeps its tables between runs.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';

import { freePorts } from '../../../src/dev/processes.js';
import { probeDocker } from '../../../src/dev/probe.js';

const cli = fileURLToPath(new URL('../../../src/cli/main.ts', import.meta.url));
// With a Docker engine, oncely dev starts containers instead; these tests are about the local path.
const { dockerAvailable } = await probeDocker();
const children: ChildProcess[] = [];
let dataDir: string;

beforeAll(async () => {
  const parent = await mkdtemp(path.join(tmpdir(), 'oncely-dev-cli-'));
  // Run as root, PostgreSQL runs as the user postgres, who must be able to enter the directory.
  await chmod(parent, 0o755);
  dataDir = path.join(parent, 'postgres');
});

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGINT');
});

afterAll(async () => {
  await rm(path.dirname(dataDir), { recursive: true, force: true });
});

interface Dev {
  readonly child: ChildProcess;
  readonly lines: string[];
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
}

function dev(args: string[], env: Record<string, string>): Dev {
  const child = spawn(process.execPath, ['--import', 'tsx', cli, 'dev', ...args], {
    // Empty counts as unset: oncely dev starts the service itself.
    env: { ...process.env, ONCELY_LOG_LEVEL: 'warn', KAFKA_BROKERS: '', DATABASE_URL: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines: string[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => lines.push(line));
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { child, lines, stderr: () => stderr, exited };
}

/** Resolves once the three address lines are out; fails with its stderr if it exits instead. */
async function ready(run: Dev): Promise<void> {
  const exited = run.exited.then((code) => {
    throw new Error(`oncely dev exited (${code}) before it was ready:\n${run.stderr()}`);
  });
  exited.catch(() => undefined);
  await Promise.race([exited, expect.poll(() => run.lines.length, { timeout: 180_000 }).toBeGreaterThanOrEqual(3)]);
}

async function stop(run: Dev): Promise<void> {
  run.child.kill('SIGINT');
  expect(await run.exited).toBe(0);
  expect(run.lines.at(-1)).toBe('Stopped.');
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

describe.skipIf(dockerAvailable)('oncely dev --kafka-port --pg-port --data-dir', () => {
  it('listens on the ports given and keeps the PostgreSQL data between runs', async () => {
    const [kafkaPort, pgPort] = await freePorts(2);
    const ports = ['--kafka-port', String(kafkaPort), '--pg-port', String(pgPort), '--data-dir', dataDir];
    const url = `postgres://postgres@127.0.0.1:${pgPort}/postgres`;

    const first = dev(ports, {});
    await ready(first);
    expect(first.lines.slice(0, 2)).toEqual([`KAFKA_BROKERS=127.0.0.1:${kafkaPort}`, `DATABASE_URL=${url}`]);
    const kafka = new Kafka({ brokers: [`127.0.0.1:${kafkaPort}`], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: [{ topic: 'dev-fixed-port' }], waitForLeaders: true });
      expect(await admin.listTopics()).toContain('dev-fixed-port');
    } finally {
      await admin.disconnect();
    }
    await query(url, 'CREATE TABLE kept (note text); INSERT INTO kept VALUES ($$still here$$)');
    await stop(first);
    expect(existsSync(path.join(dataDir, 'data', 'PG_VERSION'))).toBe(true);

    // Again, PostgreSQL only (the run's broker serves as Kafka): same address, same data.
    const second = dev(['--pg-port', String(pgPort), '--data-dir', dataDir], {
      KAFKA_BROKERS: inject('kafkaBrokers').join(','),
    });
    await ready(second);
    expect(second.lines[1]).toBe(`DATABASE_URL=${url}`);
    expect(await query<{ note: string }>(url, 'SELECT note FROM kept')).toEqual([{ note: 'still here' }]);
    await stop(second);
    expect(existsSync(path.join(dataDir, 'data', 'PG_VERSION'))).toBe(true);
    // A JVM and two PostgreSQL starts (the first with initdb) on a shared machine.
  }, 300_000);
});

describe('oncely dev refuses what it cannot honour, before starting anything', () => {
  it('a port that is not a port', async () => {
    const run = dev(['--pg-port', '70000'], {});
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toContain("option '--pg-port <port>' argument '70000' is invalid");
  });

  it('a fixed port for a service whose variable is set (that server is used as it is)', async () => {
    const run = dev(['--kafka-port', '9092'], {
      KAFKA_BROKERS: inject('kafkaBrokers').join(','),
      DATABASE_URL: inject('databaseUrl'),
    });
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toContain('KAFKA_BROKERS is set, so that server is used as it is and none is started');
  });

  it('a port another process listens on, naming it', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const port = (holder.address() as { port: number }).port;
    try {
      const run = dev(['--pg-port', String(port)], { KAFKA_BROKERS: inject('kafkaBrokers').join(',') });
      expect(await run.exited).toBe(1);
      expect(run.stderr()).toContain(`Port ${port} on 127.0.0.1 is in use, so PostgreSQL cannot listen there`);
    } finally {
      holder.close();
    }
  });
});
