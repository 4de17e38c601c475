import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');
const LIMIT = 120;

function sourceFiles(dir: string = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

interface Measured {
  /** `file name`, e.g. `outbox/relay.ts createOutboxRelay`. */
  readonly id: string;
  readonly lines: number;
}

/** Every function with a body (declarations, methods, arrows, function expressions) and its length in lines. */
function measure(file: string): Measured[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const found: Measured[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
      const first = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
      const last = source.getLineAndCharacterOfPosition(node.getEnd()).line;
      found.push({ id: `${relative(SRC, file)} ${nameOf(node)}`, lines: last - first + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** A function's own name, or the name it is assigned to; `<anonymous>` for a callback. */
function nameOf(node: ts.Node): string {
  const own = (node as { name?: ts.Node }).name;
  if (own !== undefined) return own.getText();
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) {
    return parent.name.getText();
  }
  return '<anonymous>';
}

const measured = sourceFiles().flatMap(measure);

describe('function length', () => {
  it('measures every function in src/ (the check below is not vacuous)', () => {
    expect(measured.length).toBeGreaterThan(500);
    expect(measured.find((m) => m.id === 'options.ts editDistance')?.lines).toBeGreaterThan(5);
  });

  it(`keeps every function in src/ within ${LIMIT} lines: a long closure becomes a class or named functions`, () => {
    const tooLong = measured.filter((m) => m.lines > LIMIT).map((m) => `${m.id}: ${m.lines} lines`);
    expect(tooLong).toEqual([]);
  });
});
