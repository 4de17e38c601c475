import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

/**
 * The real `oncely` CLI in a child process, as a user runs it. `env` is laid over this process's
 * environment; a variable given as undefined is removed.
 */
export function spawnOncely(args: readonly string[], env: Record<string, string | undefined> = {}): ChildProcess {
  const merged: Record<string, string> = {};
  for (const [name, value] of Object.entries({ ...process.env, ...env })) {
    if (value !== undefined) merged[name] = value;
  }
  return spawn(process.execPath, ['--import', 'tsx', cli, ...args], {
    env: merged,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Waits for a spawned CLI to exit: its exit code and everything it wrote. */
export async function outputOf(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr };
}
