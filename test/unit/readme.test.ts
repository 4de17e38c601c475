import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { ERROR_CODES } from '../../src/errors.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');

function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  expect(start, `README has a "## ${title}" section`).toBeGreaterThan(-1);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end === -1 ? undefined : end);
}

function testTitles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return testTitles(path);
    if (!entry.name.endsWith('.test.ts')) return [];
    return [...readFileSync(path, 'utf8').matchAll(/\bit\(\s*(['"`])(.+?)\1/g)].map((m) => m[2] ?? '');
  });
}

describe('README', () => {
  it('documents exactly the error codes oncely has', () => {
    const documented = [...section('Errors').matchAll(/^\| `(ONCELY_[A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect([...documented].sort()).toEqual([...ERROR_CODES].sort());
  });

  it('cites, under Guarantees, only integration tests that exist, and one for each of G1–G6', () => {
    const cited = [...section('Guarantees').matchAll(/^- `(.+)`$/gm)].map((m) => m[1] ?? '');
    const titles = new Set(testTitles(join(root, 'test/integration')).map((t) => t.replaceAll("\\'", "'")));
    expect(cited.filter((title) => !titles.has(title))).toEqual([]);
    for (const guarantee of ['G1', 'G2', 'G3', 'G4', 'G5', 'G6']) {
      expect(
        cited.some((title) => title.split(':')[0]?.split(' ').includes(guarantee)),
        guarantee,
      ).toBe(true);
    }
  });

  it('shows only TypeScript that is a file of examples/readme/, type-checked and run by the tests', () => {
    const blocks = [...readme.matchAll(/(?:<!-- (examples\/readme\/[\w.-]+) -->\n)?```ts\n([\s\S]*?)```/g)];
    expect(blocks.length).toBeGreaterThan(0);
    for (const [, file, code] of blocks) {
      expect(file, `a \`\`\`ts block must be preceded by <!-- examples/readme/<file> -->:\n${code}`).toBeDefined();
      expect(code, file).toBe(readFileSync(join(root, file ?? ''), 'utf8'));
    }
  });

  it('shows the two commands a fresh machine needs', () => {
    expect(readme).toContain('npm ci && npm run demo');
    expect(readme).toContain('npm test');
  });
});
