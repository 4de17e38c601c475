import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { afterEach } from 'vitest';

export interface ChildConsumer {
  readonly process: ChildProcess;
  /** Every JSON line the child printed so far. */
  readonly lines: Record<string, unknown>[];
  /** Resolves with the first line matching `predicate`. */
  waitForLine(
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  kill(signal: NodeJS.Signals): Promise<void>;
}

const running = new Set<ChildProcess>();

/** Children a test started are killed after it, also when it fails. */
afterEach(async () => {
  await Promise.all(
    [...running].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
  running.clear();
});

/** Runs a TypeScript fixture under test/integration/fixtures in its own Node process. */
export function spawnFixture(name: string, env: Record<string, string>): ChildConsumer {
  const script = fileURLToPath(new URL(`../integration/fixtures/${name}`, import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  running.add(child);
  const lines: Record<string, unknown>[] = [];
  const waiters: {
    predicate: (line: Record<string, unknown>) => boolean;
    resolve: (line: Record<string, unknown>) => void;
  }[] = [];
  createInterface({ input: child.stdout }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    lines.push(line);
    for (const waiter of [...waiters]) {
      if (waiter.predicate(line)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  return {
    process: child,
    lines,
    waitForLine(predicate, timeoutMs = 60_000) {
      const seen = lines.find(predicate);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`child ${name} printed no matching line within ${timeoutMs} ms`)),
          timeoutMs,
        );
        const onExit = (): void =>
          reject(new Error(`child ${name} exited (code ${child.exitCode}) before printing a matching line`));
        child.once('exit', onExit);
        waiters.push({
          predicate,
          resolve: (line) => {
            clearTimeout(timer);
            child.off('exit', onExit);
            resolve(line);
          },
        });
      });
    },
    kill(signal) {
      return new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => {
          running.delete(child);
          resolve();
        });
        child.kill(signal);
      });
    },
  };
}
