import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { withFileLock } from '../../../src/dev/file-lock.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'oncely-lock-test-'));
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

/** The pid of a process that has exited. */
function deadPid(): number {
  const result = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(result.stdout);
}

describe('withFileLock', () => {
  it('lets one holder in at a time', async () => {
    const lock = path.join(root, 'x.lock');
    let inside = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 5 }, () =>
        withFileLock(
          lock,
          async () => {
            inside += 1;
            most = Math.max(most, inside);
            await new Promise((resolve) => setTimeout(resolve, 20));
            inside -= 1;
          },
          { pollMs: 5 },
        ),
      ),
    );
    expect(most).toBe(1);
    expect(existsSync(lock)).toBe(false);
  });

  it('takes over a lock whose owner process has died', async () => {
    const lock = path.join(root, 'x.lock');
    mkdirSync(lock);
    writeFileSync(
      path.join(lock, 'owner.json'),
      JSON.stringify({ pid: deadPid(), hostname: hostname(), createdAt: Date.now() }),
    );
    expect(await withFileLock(lock, async () => 'ran', { timeoutMs: 2_000 })).toBe('ran');
  });

  it('times out waiting for a live owner, naming its pid', async () => {
    const lock = path.join(root, 'x.lock');
    mkdirSync(lock);
    writeFileSync(
      path.join(lock, 'owner.json'),
      JSON.stringify({ pid: process.pid, hostname: hostname(), createdAt: Date.now() }),
    );
    const attempt = withFileLock(lock, async () => 'ran', { timeoutMs: 200, pollMs: 20 });
    await expect(attempt).rejects.toHaveProperty('code', 'ONCELY_DEV_SERVICES_FAILED');
    await expect(attempt).rejects.toThrow(`held by pid ${process.pid}`);
  });

  it('takes over a lock from another host only after it is old', async () => {
    const lock = path.join(root, 'x.lock');
    mkdirSync(lock);
    const owner = { pid: process.pid, hostname: 'elsewhere', createdAt: Date.now() - 10_000 };
    writeFileSync(path.join(lock, 'owner.json'), JSON.stringify(owner));
    await expect(
      withFileLock(lock, async () => 'ran', { timeoutMs: 100, pollMs: 20, foreignStaleMs: 60_000 }),
    ).rejects.toMatchObject({
      code: 'ONCELY_DEV_SERVICES_FAILED',
    });
    expect(await withFileLock(lock, async () => 'ran', { timeoutMs: 1_000, foreignStaleMs: 5_000 })).toBe('ran');
  });

  it('releases the lock when the task throws', async () => {
    const lock = path.join(root, 'x.lock');
    await expect(withFileLock(lock, async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(existsSync(lock)).toBe(false);
  });
});
