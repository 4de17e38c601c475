/**
 * A cross-process lock for one-time downloads into a shared cache directory. Several vitest workers,
 * or two `npm test` runs, may all find the Kafka jars missing at the same moment; without the lock
 * each would run Maven.
 *
 * The lock is a directory (mkdir is atomic on every file system we care about) holding an
 * `owner.json`. A lock whose owner died (same host, pid gone) is taken over. Correctness never
 * depends on the lock: the download is built in a private temporary directory and renamed into
 * place whole, so in the rare race where two processes take over the same stale lock, the worst
 * outcome is one redundant download.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';

import { OncelyError } from '../errors.js';
import { isProcessAlive, sleep } from './processes.js';

interface LockOwner {
  readonly pid: number;
  readonly hostname: string;
  readonly createdAt: number;
}

export interface FileLockOptions {
  /** Give up waiting after this long. Default 15 minutes (a first download on a slow network). */
  readonly timeoutMs?: number;
  /** How often to look again while another process holds the lock. Default 250 ms. */
  readonly pollMs?: number;
  /** A lock held by another host is considered abandoned after this long. Default 30 minutes. */
  readonly foreignStaleMs?: number;
  /** Called once, when the lock is found held by someone else. */
  readonly onWait?: (owner: LockOwner | undefined) => void;
}

async function readOwner(lockDir: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse(await readFile(path.join(lockDir, 'owner.json'), 'utf8')) as LockOwner;
  } catch {
    return undefined;
  }
}

async function isStale(lockDir: string, owner: LockOwner | undefined, foreignStaleMs: number): Promise<boolean> {
  if (owner === undefined) {
    // Created but owner.json not written yet — or its creator died in between. Give it a minute.
    try {
      return Date.now() - (await stat(lockDir)).mtimeMs > 60_000;
    } catch {
      return false; // released meanwhile; the next mkdir will tell
    }
  }
  if (owner.hostname === hostname()) return !isProcessAlive(owner.pid);
  return Date.now() - owner.createdAt > foreignStaleMs;
}

/** Runs `task` while holding the lock directory `lockDir`; always releases it. */
export async function withFileLock<T>(
  lockDir: string,
  task: () => Promise<T>,
  options: FileLockOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 15 * 60_000;
  const pollMs = options.pollMs ?? 250;
  const foreignStaleMs = options.foreignStaleMs ?? 30 * 60_000;
  const deadline = Date.now() + timeoutMs;
  await mkdir(path.dirname(lockDir), { recursive: true });
  let waited = false;
  for (;;) {
    try {
      await mkdir(lockDir);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = await readOwner(lockDir);
    if (await isStale(lockDir, owner, foreignStaleMs)) {
      // Rename first: of several processes taking over at once, only one rename succeeds.
      const graveyard = `${lockDir}.stale-${randomBytes(4).toString('hex')}`;
      try {
        await rename(lockDir, graveyard);
        await rm(graveyard, { recursive: true, force: true });
      } catch {
        // Someone else took it over first.
      }
      continue;
    }
    if (!waited) {
      waited = true;
      options.onWait?.(owner);
    }
    if (Date.now() >= deadline) {
      throw new OncelyError(
        'ONCELY_DEV_SERVICES_FAILED',
        `Timed out after ${Math.round(timeoutMs / 1000)} s waiting for the lock ${lockDir}` +
          (owner === undefined ? '' : ` held by pid ${owner.pid} on ${owner.hostname}`) +
          '. If no other oncely process is downloading, delete that directory and retry.',
        { retriable: true, context: { lockDir } },
      );
    }
    await sleep(pollMs);
  }
  const me: LockOwner = { pid: process.pid, hostname: hostname(), createdAt: Date.now() };
  await writeFile(path.join(lockDir, 'owner.json'), JSON.stringify(me));
  try {
    return await task();
  } finally {
    await rm(lockDir, { recursive: true, force: true });
  }
}
