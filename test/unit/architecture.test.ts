import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

function sourceFiles(dir: string = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** Every module specifier a file imports or re-exports (static and dynamic). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found = [
    ...text.matchAll(
      /(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm,
    ),
  ];
  return found.map((m) => m[1] ?? m[2] ?? m[3] ?? '');
}

const files = sourceFiles();
const rel = (file: string): string => relative(SRC, file);
const localTarget = (file: string, specifier: string): string =>
  resolve(dirname(file), specifier.replace(/\.js$/, '.ts'));
/** A file's room: its top folder under src/, or the file's own name for files at the top. */
const roomOf = (file: string): string => {
  const parts = rel(file).split('/');
  return parts.length > 1 ? (parts[0] ?? '') : (parts[0] ?? '').replace(/\.ts$/, '');
};

/**
 * The intended structure (docs/architecture.md): a room imports only rooms on lower floors, never
 * a room beside it (inbox and kafka, metrics and tracing, pipeline and http).
 */
const FLOORS: Readonly<Record<string, number>> = {
  errors: 0,
  identity: 0,
  inbox: 1,
  kafka: 1,
  // Validates every options object (src/options.ts); builds on errors, so it cannot sit beside it.
  options: 1,
  dev: 2,
  events: 2,
  migrate: 2,
  operator: 2,
  metrics: 3,
  tracing: 3,
  outbox: 4,
  retention: 4,
  steps: 4,
  http: 5,
  pipeline: 5,
  replay: 6,
  console: 7,
  testing: 7,
  cli: 8,
  index: 9,
};

describe('architecture', () => {
  it('reads the imports it checks (the checks below are not vacuous)', () => {
    expect(files.length).toBeGreaterThan(15);
    expect(importsOf(join(SRC, 'kafka/runner.ts'))).toContain('kafkajs');
    expect(importsOf(join(SRC, 'pipeline/consumer.ts'))).toContain('../kafka/runner.js');
    expect(importsOf(join(SRC, 'inbox/claims.ts'))).toContain('pg');
  });

  it('keeps Kafka out of inbox/: it knows SQL, not Kafka', () => {
    const offenders = files
      .filter((f) => rel(f).startsWith('inbox/'))
      .flatMap((f) =>
        importsOf(f)
          .filter((s) => s === 'kafkajs' || s.includes('/kafka/'))
          .map((s) => `${rel(f)} → ${s}`),
      );
    expect(offenders).toEqual([]);
  });

  it('keeps SQL out of kafka/: it knows Kafka, not the database', () => {
    const offenders = files
      .filter((f) => rel(f).startsWith('kafka/'))
      .flatMap((f) =>
        importsOf(f)
          .filter((s) => s === 'pg' || s.startsWith('drizzle-orm') || s.includes('/inbox/'))
          .map((s) => `${rel(f)} → ${s}`),
      );
    expect(offenders).toEqual([]);
  });

  it('keeps steps/ framework-neutral: no Kafka, no pipeline (HTTP handlers run steps too)', () => {
    const offenders = files
      .filter((f) => rel(f).startsWith('steps/'))
      .flatMap((f) =>
        importsOf(f)
          .filter((s) => s === 'kafkajs' || s.includes('/kafka/') || s.includes('/pipeline/'))
          .map((s) => `${rel(f)} → ${s}`),
      );
    expect(files.some((f) => rel(f) === 'steps/runner.ts')).toBe(true);
    expect(offenders).toEqual([]);
  });

  it('keeps outbox/ below pipeline/: the pipeline publishes through the outbox, never the reverse', () => {
    const offenders = files
      .filter((f) => rel(f).startsWith('outbox/'))
      .flatMap((f) =>
        importsOf(f)
          .filter((s) => s.includes('/pipeline/'))
          .map((s) => `${rel(f)} → ${s}`),
      );
    expect(offenders).toEqual([]);
  });

  it('keeps SQL and Kafka in separate modules of replay/ and retention/ (composers import both, run neither)', () => {
    const ours = files.filter((f) => /^(replay|retention)\//.test(rel(f)));
    expect(ours.map(rel)).toEqual(expect.arrayContaining(['replay/store.ts', 'replay/plan.ts', 'retention/purge.ts']));
    const offenders = ours.flatMap((f) => {
      const text = readFileSync(f, 'utf8');
      const imports = importsOf(f);
      // Value imports of kafkajs only: a type-only import carries no Kafka calls.
      const talksKafka =
        /^import\s+(?!type\s)[^;]*from\s+'kafkajs'/m.test(text) || imports.some((s) => s.includes('/kafka/runner'));
      const writesSql =
        /\.query(<[^>]*>)?\(/.test(text) ||
        imports.some((s) => s.startsWith('drizzle-orm') && !rel(f).endsWith('tables.ts'));
      const problems: string[] = [];
      if (talksKafka && writesSql) problems.push(`${rel(f)} both runs SQL and talks to Kafka`);
      if (rel(f).endsWith('store.ts') && imports.some((s) => s === 'kafkajs' || s.includes('kafka'))) {
        problems.push(`${rel(f)} is a SQL module but imports Kafka code`);
      }
      return problems;
    });
    expect(offenders).toEqual([]);
  });

  it('resolves Kafka offsets only in pipeline/', () => {
    const offenders = files
      .filter((f) => !rel(f).startsWith('pipeline/') && !rel(f).startsWith('kafka/'))
      .filter((f) => /\.resolve\(\s*record\.offset|resolveOffset\(/.test(readFileSync(f, 'utf8')))
      .map(rel);
    expect(offenders).toEqual([]);
  });

  it('keeps Kafka out of http/, and express and fastify in their own adapter files', () => {
    const offenders = files
      .filter((f) => rel(f).startsWith('http/'))
      .flatMap((f) =>
        importsOf(f)
          .filter(
            (s) =>
              s === 'kafkajs' ||
              s.includes('/kafka/') ||
              (s === 'express' && rel(f) !== 'http/express.ts') ||
              (s === 'fastify' && rel(f) !== 'http/fastify.ts'),
          )
          .map((s) => `${rel(f)} → ${s}`),
      );
    expect(offenders).toEqual([]);
    // The root entry must load without the optional peers installed.
    const reachable = importsOf(join(SRC, 'index.ts')).filter((s) => s.includes('/http/'));
    expect(reachable.length).toBeGreaterThan(0);
    expect(reachable.filter((s) => s.endsWith('/express.js') || s.endsWith('/fastify.js'))).toEqual([]);
  });

  it('keeps console/ at the top: only cli/ imports it, and it loads neither express nor fastify at run time', () => {
    const ours = files.filter((f) => rel(f).startsWith('console/'));
    expect(ours.map(rel)).toEqual(
      expect.arrayContaining(['console/app.ts', 'console/express.ts', 'console/fastify.ts']),
    );
    const importers = files
      .filter((f) => !rel(f).startsWith('console/') && !rel(f).startsWith('cli/'))
      .flatMap((f) =>
        importsOf(f)
          .filter((s) => s.includes('/console/'))
          .map((s) => `${rel(f)} → ${s}`),
      );
    expect(importers).toEqual([]);
    // `oncely/console` must load with only one of the two frameworks installed (or none).
    const valueImports = ours.flatMap((f) =>
      [...readFileSync(f, 'utf8').matchAll(/^import\s+(?!type\s)[^;]*?from\s+'(express|fastify)'/gm)].map(
        (m) => `${rel(f)} → ${m[1] ?? ''}`,
      ),
    );
    expect(valueImports).toEqual([]);
  });

  it('lets every room import only rooms on lower floors (docs/architecture.md)', () => {
    const offenders = files.flatMap((f) => {
      const from = roomOf(f);
      return importsOf(f)
        .filter((s) => s.startsWith('.'))
        .map((s) => roomOf(localTarget(f, s)))
        .filter((to) => to !== from && !((FLOORS[to] ?? Infinity) < (FLOORS[from] ?? -Infinity)))
        .map((to) => `${rel(f)} (${from}, floor ${FLOORS[from] ?? '?'}) → ${to} (floor ${FLOORS[to] ?? '?'})`);
    });
    // A new room needs a floor before it can import or be imported.
    expect(new Set(files.map(roomOf)).size).toBeGreaterThan(15);
    expect(offenders).toEqual([]);
  });

  it('has no loops between rooms', () => {
    const rooms = new Map<string, Set<string>>();
    for (const f of files) {
      const edges = rooms.get(roomOf(f)) ?? new Set<string>();
      for (const s of importsOf(f).filter((x) => x.startsWith('.'))) edges.add(roomOf(localTarget(f, s)));
      edges.delete(roomOf(f));
      rooms.set(roomOf(f), edges);
    }
    const loops: string[] = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (room: string, path: string[]): void => {
      if (state.get(room) === 'done') return;
      if (state.get(room) === 'visiting') {
        loops.push([...path.slice(path.indexOf(room)), room].join(' → '));
        return;
      }
      state.set(room, 'visiting');
      for (const next of rooms.get(room) ?? []) visit(next, [...path, room]);
      state.set(room, 'done');
    };
    for (const room of rooms.keys()) visit(room, []);
    expect(rooms.get('pipeline')?.has('inbox')).toBe(true);
    expect(loops).toEqual([]);
  });

  it('lets only kafka/ import kafkajs: every other room reaches Kafka through its interfaces', () => {
    const offenders = files
      .filter((f) => !rel(f).startsWith('kafka/'))
      .filter((f) => importsOf(f).includes('kafkajs'))
      .map(rel);
    expect(files.filter((f) => importsOf(f).includes('kafkajs')).length).toBeGreaterThan(0);
    expect(offenders).toEqual([]);
  });

  it('gives every exported name to one module only', () => {
    const owners = new Map<string, string[]>();
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      const declared =
        /^export\s+(?:declare\s+)?(?:async\s+)?(?:abstract\s+)?(?:function\*?|const|let|class|interface|type|enum)\s+(\w+)/gm;
      for (const m of text.matchAll(declared)) owners.set(m[1] ?? '', [...(owners.get(m[1] ?? '') ?? []), rel(f)]);
    }
    // `idempotent` is one API per framework, each behind its own package entry point
    // (`oncely`, `oncely/express`, `oncely/fastify`): an application imports one of them.
    const twice = [...owners]
      .filter(([name, where]) => where.length > 1 && name !== 'idempotent')
      .map(([name, where]) => `${name}: ${where.join(', ')}`);
    expect(owners.size).toBeGreaterThan(100);
    expect(twice).toEqual([]);
  });

  it('has no import cycles', () => {
    const graph = new Map(
      files.map(
        (f) =>
          [
            f,
            importsOf(f)
              .filter((s) => s.startsWith('.'))
              .map((s) => localTarget(f, s)),
          ] as const,
      ),
    );
    const cycles: string[] = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (file: string, path: string[]): void => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'visiting') {
        cycles.push([...path.slice(path.indexOf(file)), file].map(rel).join(' → '));
        return;
      }
      state.set(file, 'visiting');
      for (const next of graph.get(file) ?? []) visit(next, [...path, file]);
      state.set(file, 'done');
    };
    for (const file of files) visit(file, []);
    expect(cycles).toEqual([]);
  });

  it('imports optional peers (prom-client, @opentelemetry/*) for types only: they load when enabled', () => {
    const optional = /^(prom-client|@opentelemetry\/)/;
    const offenders = files.flatMap((f) =>
      [...readFileSync(f, 'utf8').matchAll(/^(import|export)\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]/gm)]
        .filter((m) => optional.test(m[3] ?? '') && m[2] === undefined)
        .map((m) => `${rel(f)} → ${m[3] ?? ''}`),
    );
    expect(files.some((f) => importsOf(f).includes('prom-client'))).toBe(true);
    expect(offenders).toEqual([]);
  });

  it('exports no name twice from the public entry points', async () => {
    const index = await import('../../src/index.js');
    const dev = await import('../../src/dev/index.js');
    const shared = Object.keys(index).filter((name) => name in dev);
    expect(shared).toEqual([]);
    // Loading both module graphs takes seconds on a busy machine: no timing is asserted here.
  }, 60_000);
});
