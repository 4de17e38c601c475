import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';

import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

/** Debian's `prometheus` package (installed by .ci/run); these tests are skipped, saying so, without it. */
function installed(binary: string): boolean {
  try {
    execFileSync(binary, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const hasPrometheus = installed('prometheus');
const hasPromtool = installed('promtool');
if (!hasPrometheus || !hasPromtool) {
  console.warn(
    'SKIPPED: the real-Prometheus tests need the `prometheus` and `promtool` binaries ' +
      '(Debian: `apt-get install -y prometheus`; .ci/run installs them).',
  );
}

const examples = fileURLToPath(new URL('../../../examples/observability/', import.meta.url));
const env = useTestEnvironment();
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function freePort(): Promise<number> {
  const probe = createServer();
  const port = await listen(probe);
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** Starts Prometheus scraping `target` every second; stopped (SIGTERM, waited for) after the test. */
async function startPrometheus(target: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'oncely-prometheus-'));
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: oncely\n    static_configs:\n      - targets: ['${target}']\n`,
  );
  const port = await freePort();
  const child: ChildProcess = spawn(
    'prometheus',
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanups.push(async () => {
    child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    `Prometheus to be ready${stderr === '' ? '' : ` (${stderr.slice(-500)})`}`,
    async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.ok === true,
    { timeoutMs: 30_000, intervalMs: 200 },
  );
  return url;
}

async function query(prometheus: string, promql: string): Promise<number | undefined> {
  const response = await fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await response.json()) as { data?: { result?: { value: [number, string] }[] } };
  const value = body.data?.result?.[0]?.value[1];
  return value === undefined ? undefined : Number(value);
}

describe.skipIf(!hasPrometheus)('a real Prometheus scraping a consumer', () => {
  it('answers a PromQL query for the processed count from the /metrics a consumer serves', async () => {
    const topic = await env.createTopic('prometheus');
    const groupId = env.groupId('prometheus');
    const registry = new Registry();
    const server = createServer((request, response) => {
      if (request.url !== '/metrics') {
        response.writeHead(404).end();
        return;
      }
      registry.metrics().then(
        (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (error: unknown) => response.writeHead(500).end(String(error)),
      );
    });
    const port = await listen(server);
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const prometheus = await startPrometheus(`127.0.0.1:${port}`);

    await env.produce(
      topic,
      [1, 2, 3, 4].map((n) => jsonMessage(`m${n}`, { n })),
    );
    const consumer = env.consumer({ groupId, handlers: [effectHandler(topic)], metrics: { registry } });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('four outcomes', () => outcomes.total === 4);

    const promql = `sum(oncely_messages_total{group="${groupId}", outcome="processed"})`;
    const processed = await waitFor(
      'Prometheus to have scraped the processed count',
      async () => ((await query(prometheus, promql)) === 4 ? 4 : undefined),
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    expect(processed).toBe(4);
  });
});

describe.skipIf(!hasPromtool)('the shipped alert rules', () => {
  it('pass `promtool check rules`', () => {
    const output = execFileSync('promtool', ['check', 'rules', join(examples, 'alerts.yml')], { encoding: 'utf8' });
    expect(output).toContain('SUCCESS');
  });

  it('fire on a growing lag and on open dead letters (`promtool test rules`)', () => {
    const output = execFileSync('promtool', ['test', 'rules', join(examples, 'alerts.test.yml')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(output).toContain('SUCCESS');
  });
});
