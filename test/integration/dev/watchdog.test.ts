/**
 * The watchdog that cleans up after a parent that cannot clean up itself (SIGKILLed), and the exit
 * handler that covers normal exits. Uses idle Node processes instead of real servers, so it is fast.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

import { isProcessAlive } from '../../../src/dev/processes.js';

interface Started {
  watchdogPid: number;
  registered: number;
  unregistered: number;
  stranger: number;
}

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const task of cleanup.splice(0)) task();
});

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
}

function startFixture(mode: 'hang' | 'exit'): Promise<{ child: ChildProcess; started: Started; dir: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'oncely-watchdog-test-'));
  const script = fileURLToPath(new URL('./fixtures/watch-and-hang.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', script, mode, dir], {
    cwd: fileURLToPath(new URL('../../../', import.meta.url)),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', (line) => {
      const started = JSON.parse(line) as Started;
      cleanup.push(() => {
        child.kill('SIGKILL');
        for (const pid of [started.registered, started.unregistered, started.stranger]) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
        rmSync(dir, { recursive: true, force: true });
      });
      resolve({ child, started, dir });
    });
    child.once('error', reject);
  });
}

describe('the dev-services watchdog', () => {
  it('stops registered processes and removes their directories after its parent is SIGKILLed', async () => {
    const { child, started, dir } = await startFixture('hang');
    expect(isProcessAlive(started.watchdogPid)).toBe(true);
    child.kill('SIGKILL');

    expect(await waitFor(() => !isProcessAlive(started.registered), 10_000), 'registered process gone').toBe(true);
    expect(await waitFor(() => !isProcessAlive(started.unregistered), 1_000), 'process found by its marker gone').toBe(
      true,
    );
    expect(await waitFor(() => !existsSync(dir) && !isProcessAlive(started.watchdogPid), 5_000)).toBe(true);
  }, 30_000);

  it('never signals a registered pid whose command line lacks the marker (a reused pid)', async () => {
    const { child, started } = await startFixture('hang');
    child.kill('SIGKILL');
    expect(await waitFor(() => !isProcessAlive(started.watchdogPid), 10_000)).toBe(true);
    expect(isProcessAlive(started.stranger)).toBe(true);
  }, 30_000);

  it('kills registered processes from the exit handler when the parent exits normally', async () => {
    const { child, started, dir } = await startFixture('exit');
    await new Promise((resolve) => child.once('exit', resolve));
    // The exit handler signals synchronously, before the watchdog even notices the parent is gone.
    expect(await waitFor(() => !isProcessAlive(started.registered), 1_000), 'registered process gone').toBe(true);
    expect(await waitFor(() => !existsSync(dir) && !isProcessAlive(started.watchdogPid), 10_000)).toBe(true);
  }, 30_000);
});
