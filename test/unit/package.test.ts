import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url);
const json = <T>(path: string): T => JSON.parse(readFileSync(new URL(path, root), 'utf8')) as T;

interface Manifest {
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  peerDependencies: Record<string, string>;
  peerDependenciesMeta: Record<string, { optional?: boolean }>;
}
const manifest = json<Manifest>('package.json');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** The package a bare specifier names: `drizzle-orm/pg-core` → `drizzle-orm`, `@scope/x/y` → `@scope/x`. */
const packageOf = (specifier: string): string =>
  specifier
    .split('/')
    .slice(0, specifier.startsWith('@') ? 2 : 1)
    .join('/');

/** `^x.y.z`: same major (same minor below 1.0), and at least x.y.z. */
function satisfiesCaret(version: string, range: string): boolean {
  const [a = 0, b = 0, c = 0] = version.split('.').map(Number);
  const [x = 0, y = 0, z = 0] = range.replace(/^\^/, '').split('.').map(Number);
  if (a !== x || (x === 0 && b !== y)) return false;
  return a * 1e8 + b * 1e4 + c >= x * 1e8 + y * 1e4 + z;
}

describe('the package manifest', () => {
  it('makes the libraries whose types are part of the API peer dependencies, so an app gets one copy', () => {
    for (const name of ['kafkajs', 'pg', 'drizzle-orm', 'zod', 'pino']) {
      expect(manifest.peerDependencies[name], name).toBeDefined();
      expect(manifest.dependencies[name], name).toBeUndefined();
      // Installed for oncely's own tests, at a version inside the range.
      expect(manifest.devDependencies[name], name).toBeDefined();
    }
    for (const name of ['prom-client', '@opentelemetry/api']) {
      expect(manifest.peerDependenciesMeta[name]?.optional, name).toBe(true);
    }
  });

  it('tests with versions inside every peer range', () => {
    for (const [name, range] of Object.entries(manifest.peerDependencies)) {
      const { version } = json<{ version: string }>(`node_modules/${name}/package.json`);
      // A range may list alternatives (`^4.21.0 || ^5.0.0`): the installed version must fit one.
      const fits = range.split('||').some((alternative) => satisfiesCaret(version, alternative.trim()));
      expect(fits, `${name}@${version} in ${range}`).toBe(true);
    }
  });

  it('declares every package src/ imports as a dependency or a peer', () => {
    const declared = new Set([...Object.keys(manifest.dependencies), ...Object.keys(manifest.peerDependencies)]);
    const imported = new Set(
      sourceFiles(new URL('src', root).pathname).flatMap((file) =>
        [
          ...readFileSync(file, 'utf8').matchAll(
            /from\s+['"]([^'".][^'"]*)['"]|import\(\s*['"]([^'".][^'"]*)['"]\s*\)/g,
          ),
        ]
          .map((m) => m[1] ?? m[2] ?? '')
          .filter((s) => !s.startsWith('node:'))
          .map(packageOf),
      ),
    );
    // `oncely` itself: the package may name its own entry points (in docs, or self-references).
    expect([...imported].filter((name) => name !== 'oncely' && !declared.has(name))).toEqual([]);
  });

  it('builds when packed, not on every install, with source maps that carry their sources', () => {
    expect(manifest.scripts.prepare).toBeUndefined();
    expect(manifest.scripts.prepack).toBe('npm run build');
    const build = json<{ compilerOptions: { sourceMap?: boolean; inlineSources?: boolean } }>('tsconfig.build.json');
    expect(build.compilerOptions).toMatchObject({ sourceMap: true, inlineSources: true });
  });
});
