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
  readonly where: string;
  readonly lines: number;
}

/** Every function, method, constructor and arrow function in src/, with its length in lines. */
function functionLengths(): Measured[] {
  const measured: Measured[] = [];
  for (const file of sourceFiles()) {
    const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node): void => {
      if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
        const start = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
        const end = source.getLineAndCharacterOfPosition(node.getEnd()).line;
        const name = node.name !== undefined && ts.isIdentifier(node.name) ? node.name.text : '(anonymous)';
        measured.push({ where: `${relative(SRC, file)}:${start + 1} ${name}`, lines: end - start + 1 });
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return measured.sort((a, b) => b.lines - a.lines);
}

describe('function length', () => {
  it(`keeps every function in src/ at ${LIMIT} lines or fewer: long closures become named parts`, () => {
    const all = functionLengths();
    // The measure sees the code: a file full of functions yields many, a nested one counts too.
    expect(all.length).toBeGreaterThan(500);
    expect(all.filter((f) => f.lines > LIMIT).map((f) => `${f.where}: ${f.lines} lines`)).toEqual([]);
    // Parsing every file takes seconds on a busy machine: no timing is asserted here.
  }, 60_000);
});
