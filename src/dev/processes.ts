/**
 * Small process helpers shared by the local Kafka and PostgreSQL runners.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';

import { OncelyError } from '../errors.js';

/**
 * True while `pid` names a running process. A zombie counts as gone: after a parent is killed its
 * orphans are reaped by PID 1 whenever PID 1 gets to it, and a zombie serves no one meanwhile.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: it exists but belongs to someone else (e.g. postgres run as another user).
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (process.platform === 'linux') {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state === 'Z' || state === 'X') return false;
    } catch {
      return false;
    }
  }
  return true;
}

/** Sends `signal` to the process group of `pid` (spawned `detached`), or to `pid` alone. */
export function signalProcess(pid: number, signal: NodeJS.Signals, group: boolean): void {
  try {
    process.kill(group ? -pid : pid, signal);
  } catch {
    // Already gone.
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until `pid` is gone or `timeoutMs` passes; resolves to whether it is gone. */
export async function waitForPidExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
  return true;
}

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/**
 * Resolves when `child` has exited. The child is ref'd while we wait: a child that was unref'd (so
 * a forgotten stop() does not keep a script alive) would otherwise let Node end the event loop with
 * this promise still pending.
 */
export function waitForChildExit(child: ChildProcess): Promise<ExitInfo> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  child.ref();
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      child.unref();
      resolve({ code, signal });
    });
  });
}

/**
 * Distinct ports that were free on 127.0.0.1 a moment ago, allocated while holding the others so
 * they cannot coincide. Another process may still take one before we bind it; callers retry.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const server = createServer();
          server.unref();
          server.once('error', reject);
          server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => {
    const address = server.address();
    if (address === null || typeof address !== 'object') throw new Error('no port allocated');
    return address.port;
  });
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

/**
 * Fails with a clear message when `port` on 127.0.0.1 is taken, before a server is started on it
 * (whose own failure would be buried in its log).
 */
export async function assertPortFree(port: number, service: string, option: string): Promise<void> {
  const free = await new Promise<boolean>((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)));
  });
  if (!free) {
    throw new OncelyError(
      'ONCELY_DEV_SERVICES_FAILED',
      `Port ${port} on 127.0.0.1 is in use, so ${service} cannot listen there: stop what holds it ` +
        `(is another \`oncely dev\` running?) or choose another ${option}.`,
      { context: { port } },
    );
  }
}

/** The last `lines` lines of a text file, or '' when it does not exist. */
export async function tailFile(file: string, lines = 30): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export interface RunResult extends ExitInfo {
  /** stdout and stderr interleaved, the last 64 KB. */
  readonly output: string;
}

export interface RunOptions extends Omit<SpawnOptions, 'stdio'> {
  /** Called with the pid right after spawning (to tell the watchdog). */
  readonly onSpawn?: (child: ChildProcess) => void;
  /** Kill the process (group, when `detached`) after this long. */
  readonly timeoutMs?: number;
}

const OUTPUT_LIMIT = 64 * 1024;

/** Runs a command to completion, capturing its output; never rejects for a non-zero exit. */
export function runCommand(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const { onSpawn, timeoutMs, ...spawnOptions } = options;
  return new Promise((resolve, reject) => {
    let output = '';
    const child = spawn(command, args, { ...spawnOptions, stdio: ['ignore', 'pipe', 'pipe'] });
    const collect = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_LIMIT);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.once('error', reject);
    if (child.pid !== undefined) onSpawn?.(child);
    let timer: NodeJS.Timeout | undefined;
    if (timeoutMs !== undefined && child.pid !== undefined) {
      const pid = child.pid;
      timer = setTimeout(() => {
        output += `\n[oncely] killed after ${timeoutMs} ms`;
        signalProcess(pid, 'SIGKILL', spawnOptions.detached === true);
      }, timeoutMs);
    }
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

/** Opens `file` for appending and returns its descriptor, to hand to a child as stdout/stderr. */
export async function openLogFile(file: string): Promise<{ fd: number; close(): Promise<void> }> {
  const handle = await open(file, 'a');
  return { fd: handle.fd, close: () => handle.close() };
}

/** Quotes one argument for /bin/sh (pg_ctl passes `-o` through a shell). */
export function shellQuote(value: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}
