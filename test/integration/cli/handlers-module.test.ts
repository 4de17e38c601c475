/**
 * The dead-letter commands as a user of the published package meets them: the CLI runs as plain
 * JavaScript on plain Node (no loader), `--handlers` names a TypeScript module, and validation
 * failures read as `path: message` (JSON only with --json).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { effectHandler, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const handlers = fileURLToPath(new URL('../fixtures/ledger-handlers.ts', import.meta.url));
const env = useTestEnvironment();
// Inside the repository, so that the build resolves its dependencies from node_modules as an
// installed package does.
const build = path.join(root, 'node_modules', '.cache', `oncely-plain-cli-${randomUUID().slice(0, 8)}`);

/** src/ as the package ships it: every file transpiled to JavaScript, next to package.json and migrations/. */
async function transpile(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    if (entry.isDirectory()) await transpile(source, path.join(to, entry.name));
    else if (entry.name.endsWith('.ts')) {
      const { outputText } = ts.transpileModule(await readFile(source, 'utf8'), {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        fileName: source,
      });
      await writeFile(path.join(to, entry.name.replace(/\.ts$/, '.js')), outputText);
    }
  }
}

beforeAll(async () => {
  await transpile(path.join(root, 'src'), path.join(build, 'dist'));
  await writeFile(path.join(build, 'package.json'), await readFile(path.join(root, 'package.json')));
  await symlink(path.join(root, 'migrations'), path.join(build, 'migrations'));
});

afterAll(async () => {
  await rm(build, { recursive: true, force: true });
});

/** `node …/dist/cli/main.js`: no tsx, no loader. */
function oncely(args: string[], extra: Record<string, string> = {}) {
  const child = spawn(process.execPath, [path.join(build, 'dist', 'cli', 'main.js'), ...args], {
    env: { ...process.env, NO_COLOR: '1', NODE_OPTIONS: '', ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once('exit', (code) => resolve({ code, stdout, stderr })),
  );
}

describe('dead letters from the plain-JavaScript CLI', () => {
  it('retries with a TypeScript --handlers module, and prints validation issues as path: message', async () => {
    const topic = await env.createTopic('cli-ts');
    const groupId = env.groupId('cli-ts');
    const schema = z.object({ amountCents: z.number().int() });
    let down = true;
    const consumer = env.consumer({
      groupId,
      handlers: [
        effectHandler(
          topic,
          () => {
            if (down) throw new Error('ledger service down');
          },
          schema,
        ),
      ],
      retry: { attempts: 1 },
    });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await env.produce(topic, [
      { value: JSON.stringify({ amountCents: 5 }), headers: { 'message-id': 'to-retry' } },
      { value: JSON.stringify({ amountCents: 'five' }), headers: { 'message-id': 'invalid' } },
    ]);
    await waitFor('two dead letters', () => outcomes.deadLettered.length === 2);
    await consumer.stop();
    down = false;
    const url = env.databaseUrl;

    const listed = JSON.parse(
      (await oncely(['dead-letters', 'list', '--group', groupId, '--json', '--database-url', url])).stdout,
    ) as { id: string; messageId: string; reason: string }[];
    const idOf = (messageId: string): string => listed.find((l) => l.messageId === messageId)?.id ?? '';
    expect(listed.find((l) => l.messageId === 'invalid')?.reason).toBe('invalid_payload');

    // A TypeScript module, loaded by a CLI that runs on plain Node.
    const retried = await oncely(
      ['dead-letters', 'retry', idOf('to-retry'), '--handlers', handlers, '--database-url', url],
      { TOPIC: topic },
    );
    expect(retried.stderr).toBe('');
    expect(retried).toMatchObject({ code: 0, stdout: expect.stringContaining('processed on attempt 2') });
    expect((await env.effectsOf(topic)).map((e) => e.messageId)).toEqual(['to-retry']);

    // The validation issue, readable, once; no JSON of it, no stack repeating it.
    const issue = 'amountCents: Invalid input: expected number, received string';
    const table = await oncely(['dead-letters', 'list', '--group', groupId, '--database-url', url]);
    expect(table.stdout).toContain(issue);
    expect(table.stdout).not.toContain('"code"');
    const shown = await oncely(['dead-letters', 'show', idOf('invalid'), '--database-url', url]);
    expect(shown.stdout.split(issue)).toHaveLength(2);
    expect(shown.stdout).not.toMatch(/"code"|"path"|at .*\.js:\d+/);
    const again = await oncely(
      ['dead-letters', 'retry', idOf('invalid'), '--handlers', handlers, '--database-url', url],
      { TOPIC: topic },
    );
    expect(again.code).toBe(1);
    expect(again.stdout).toContain(`does not match the handler's schema\n  ${issue}`);
    expect(again.stdout).not.toContain('"code"');
    // JSON for scripts only when asked.
    const json = await oncely(['dead-letters', 'show', idOf('invalid'), '--json', '--database-url', url]);
    expect(JSON.parse(json.stdout)).toMatchObject({
      error: { issues: [expect.objectContaining({ path: ['amountCents'] })] },
    });
  });

  it('says that the --handlers module must not start a consumer on import', async () => {
    const help = await oncely(['dead-letters', 'retry', '--help']);
    expect(help.stdout).toMatch(/must not start a consumer when imported/);
  });
});
