/**
 * docs/getting-started.md, step by step, as a new user runs it: its files (examples/getting-started,
 * which test/unit/docs.test.ts holds equal to the page's blocks) in a fresh folder outside the
 * repository, run with `tsx`, against this test's database and the shared broker.
 *
 * The folder's node_modules links the repository's, plus an `oncely` package that points at the
 * source (the import map tsc and vitest use): the install step itself (`npm pack`, `npm install`)
 * needs the registry and is not run here.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();
const root = fileURLToPath(new URL('../../../', import.meta.url));
const children: ChildProcess[] = [];
let folder: string;

/** An empty folder, then what the guide's install step leaves in it: package.json, node_modules, src/. */
function prepareFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'oncely-getting-started-'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'shop', type: 'module', private: true }));
  const modules = join(dir, 'node_modules');
  mkdirSync(modules);
  for (const entry of readdirSync(join(root, 'node_modules'))) {
    if (entry !== '.bin' && entry !== 'oncely') symlinkSync(join(root, 'node_modules', entry), join(modules, entry));
  }
  // `oncely` as a package whose entry points are the TypeScript sources, taken from the tsconfig
  // paths the repository type-checks with (so they follow the sources when files move).
  const paths = (
    JSON.parse(readFileSync(join(root, 'tsconfig.json'), 'utf8')) as {
      compilerOptions: { paths: Record<string, [string]> };
    }
  ).compilerOptions.paths;
  const oncely = join(modules, 'oncely');
  mkdirSync(oncely);
  symlinkSync(join(root, 'src'), join(oncely, 'src'));
  const exports = Object.fromEntries(
    Object.entries(paths).map(([name, [target]]) => [name.replace(/^oncely/, '.'), target.replace(/^\.\//, './')]),
  );
  writeFileSync(join(oncely, 'package.json'), JSON.stringify({ name: 'oncely', type: 'module', exports }));
  mkdirSync(join(dir, 'src'));
  for (const file of readdirSync(join(root, 'examples/getting-started/src'))) {
    writeFileSync(join(dir, 'src', file), readFileSync(join(root, 'examples/getting-started/src', file)));
  }
  return dir;
}

/** A TCP port free right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

/** `npx tsx src/<file>` in the folder, with the variables the guide exports. */
function run(file: string, extraEnv: Record<string, string>): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', `src/${file}`], {
    cwd: folder,
    env: {
      ...process.env,
      DATABASE_URL: env.databaseUrl,
      KAFKA_BROKERS: env.brokers.join(','),
      ONCELY_LOG_LEVEL: 'warn',
      KAFKAJS_NO_PARTITIONER_WARNING: '1',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  children.push(child);
  return { child, output: () => output };
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

beforeAll(() => {
  folder = prepareFolder();
});

afterEach(() => {
  for (const child of children.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

afterAll(() => {
  if (folder !== undefined) rmSync(folder, { recursive: true, force: true });
});

describe('docs/getting-started.md runs as written', () => {
  it('an order posted twice with one key is stored once, sent once through the relay, charged once by the worker and counted in its metrics', async () => {
    // Step 4: migrations, the service's tables and its topic.
    const setup = run('setup.ts', {});
    expect(await exited(setup.child), setup.output()).toEqual({ code: 0, signal: null });
    expect(setup.output()).toContain('database migrated, topic "orders" ready');

    // Steps 5–7: the API with its relay, the stand-in provider, the worker with its metrics.
    const [port, providerPort, metricsPort] = await Promise.all([freePort(), freePort(), freePort()]);
    const providerUrl = `http://127.0.0.1:${providerPort}`;
    // In the guide's order: the provider first, so the worker's first charge finds it.
    const provider = run('provider.ts', { PROVIDER_PORT: String(providerPort) });
    const api = run('api.ts', { PORT: String(port) });
    await waitFor(
      'the provider to listen',
      () =>
        fetch(`${providerUrl}/charges`).then(
          () => true,
          () => false,
        ),
      {
        timeoutMs: 90_000,
      },
    );
    const worker = run('worker.ts', { PROVIDER_URL: providerUrl, METRICS_PORT: String(metricsPort) });
    await waitFor('the worker to start', () => worker.output().includes('worker started') || undefined, {
      timeoutMs: 90_000,
    });

    // Step 8: the order, its retry (replayed), and the key reused for another order (refused).
    const orderId = `o-${randomUUID()}`;
    const amountCents = 1_000 + Math.floor(Math.random() * 100_000);
    const post = (amount: number) =>
      fetch(`http://127.0.0.1:${port}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': 'shop-1', 'idempotency-key': `key-${orderId}` },
        body: JSON.stringify({ orderId, customerId: 'c-1', amountCents: amount }),
      });
    await waitFor('the API to listen', () =>
      fetch(`http://127.0.0.1:${port}/`).then(
        () => true,
        () => false,
      ),
    );
    const first = await post(amountCents);
    expect(first.status, api.output()).toBe(201);
    expect(await first.json()).toEqual({ orderId, status: 'placed' });
    const retry = await post(amountCents);
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect((await post(amountCents + 1)).status).toBe(422);

    const charge = await waitFor('the worker to charge the order', async () => {
      const { rows } = await env.pool.query<{ charge_id: string }>(
        'SELECT charge_id FROM shop.charges WHERE order_id = $1',
        [orderId],
      );
      return rows[0]?.charge_id;
    }).catch((error: unknown) => {
      throw new Error(`${String(error)}\nworker: ${worker.output()}\napi: ${api.output()}`);
    });
    const charges = (await (await fetch(`${providerUrl}/charges`)).json()) as { id: string; amountCents: number }[];
    expect(charges.filter((c) => c.amountCents === amountCents)).toEqual([{ id: charge, amountCents }]);
    const { rows } = await env.pool.query<{ orders: number; events: number }>(
      `SELECT (SELECT count(*)::int FROM shop.orders WHERE order_id = $1) AS orders,
              (SELECT count(*)::int FROM oncely.outbox
                WHERE topic = 'orders' AND key = convert_to($1, 'UTF8') AND status = 'sent') AS events`,
      [orderId],
    );
    expect(rows[0]).toEqual({ orders: 1, events: 1 });
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toMatch(
      /^oncely_messages_total\{group="shop-worker",topic="orders",outcome="processed",duplicate_class="",reason=""\} [1-9]\d*$/m,
    );

    // Ctrl-C / SIGTERM: each process ends cleanly (the worker by its signal, after leaving the group).
    for (const { child } of [api, worker, provider]) child.kill('SIGTERM');
    expect(await exited(worker.child)).toEqual({ code: null, signal: 'SIGTERM' });
    expect(await exited(api.child), api.output()).toEqual({ code: 0, signal: null });
    expect(await exited(provider.child)).toEqual({ code: null, signal: 'SIGTERM' });
  });
});
