/**
 * The module a user names with `--handlers`: JavaScript as it is; TypeScript through tsx (an
 * optional peer dependency) when the CLI itself runs on plain Node, or directly when a loader is
 * already there (`node --import tsx`, Node's own type stripping).
 */
import { access } from 'node:fs/promises';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

import { configError } from '../errors.js';

const TYPESCRIPT = new Set(['.ts', '.mts', '.cts', '.tsx']);

/** How to load a TypeScript module without tsx installed: said in full, as it is easy to get wrong. */
export function typeScriptHelp(modulePath: string): string {
  return (
    `${modulePath} is TypeScript, which Node cannot load by itself. Either install tsx next to oncely ` +
    '(npm install --save-dev tsx), which oncely then uses to load it; or run the CLI under a loader: ' +
    '`node --import tsx ./node_modules/oncely/dist/cli/main.js …`; or pass the compiled .js module'
  );
}

export async function importUserModule(modulePath: string, option = 'handlers'): Promise<Record<string, unknown>> {
  const file = resolve(modulePath);
  try {
    await access(file);
  } catch {
    throw configError(option, `${modulePath} does not exist (looked for ${file})`);
  }
  const url = pathToFileURL(file).href;
  if (!TYPESCRIPT.has(extname(file))) return (await import(url)) as Record<string, unknown>;
  try {
    return (await import(url)) as Record<string, unknown>;
  } catch (error) {
    // Anything but "no loader for .ts" is the module's own failure: reported as it is.
    if ((error as { code?: unknown }).code !== 'ERR_UNKNOWN_FILE_EXTENSION') throw error;
  }
  let tsImport: (specifier: string, parentURL: string) => Promise<unknown>;
  try {
    ({ tsImport } = await import('tsx/esm/api'));
  } catch {
    throw configError(option, typeScriptHelp(modulePath));
  }
  return (await tsImport(url, import.meta.url)) as Record<string, unknown>;
}
