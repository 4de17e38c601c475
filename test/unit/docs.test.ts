/**
 * The README (the front page) and docs/ (the manual) against what they describe: the error codes,
 * the tests named under Guarantees, the code shown (a file of examples/, run by a test), the links,
 * the install line and the supported Node.js versions.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { ERROR_CODES } from '../../src/errors.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string): string => readFileSync(join(root, path), 'utf8');
const pages = [
  'README.md',
  ...readdirSync(join(root, 'docs')).flatMap((f) => (f.endsWith('.md') ? [`docs/${f}`] : [])),
];
const readme = read('README.md');
const packageJson = JSON.parse(read('package.json')) as {
  engines: { node: string };
  peerDependencies: Record<string, string>;
  peerDependenciesMeta: Record<string, { optional?: boolean }>;
};

/** A page without its fenced code blocks (their `#` lines are not headings, their text not links). */
const prose = (markdown: string): string => markdown.replace(/^```[^\n]*\n[\s\S]*?^```$/gm, '');

function section(markdown: string, title: string): string {
  const start = markdown.indexOf(`\n## ${title}\n`);
  expect(start, `a "## ${title}" section`).toBeGreaterThan(-1);
  const end = markdown.indexOf('\n## ', start + 1);
  return markdown.slice(start, end === -1 ? undefined : end);
}

function files(dir: string, suffix: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = posix.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : files(path, suffix);
    return entry.name.endsWith(suffix) ? [path] : [];
  });
}

function testTitles(dirs: string[]): Set<string> {
  const titles = dirs.flatMap((dir) =>
    files(dir, '.test.ts').flatMap((path) =>
      [...read(path).matchAll(/\bit\(\s*(['"`])(.+?)\1/g)].map((m) => (m[2] ?? '').replaceAll("\\'", "'")),
    ),
  );
  return new Set(titles);
}

/** The guarantee tests a page names: `G1: …`, `G1 G3 G5: …` in backticks. */
const citedTests = (markdown: string): string[] =>
  [...markdown.matchAll(/`((?:G\d )*G\d: [^`]+)`/g)].map((m) => m[1] ?? '');

/** GitHub's heading anchors: lower case, punctuation dropped, each space a hyphen, repeats numbered. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const [, heading] of prose(markdown).matchAll(/^#{1,6} (.+)$/gm)) {
    const base = (heading ?? '')
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    result.add(n === 0 ? base : `${base}-${n}`);
  }
  return result;
}

/** Every code block a page shows with the example file it claims to be (`<!-- examples/… -->` above it). */
function blocks(page: string): { page: string; file: string | undefined; lang: string; code: string }[] {
  return [...read(page).matchAll(/(?:<!-- (examples\/[\w./-]+) -->\n)?^```(\w*)\n([\s\S]*?)^```$/gm)].map(
    ([, file, lang, code]) => ({ page, file, lang: lang ?? '', code: code ?? '' }),
  );
}

describe('README and docs/', () => {
  it('keeps the README a front page of at most 300 lines', () => {
    expect(readme.split('\n').length).toBeLessThanOrEqual(300);
  });

  it('shows the two commands a fresh machine needs', () => {
    expect(readme).toContain('npm ci && npm run demo');
    expect(readme).toContain('npm test');
  });

  it('shows, in one block of the README and of getting started, how to install from a tarball with every required peer', () => {
    const required = Object.keys(packageJson.peerDependencies).filter(
      (name) => packageJson.peerDependenciesMeta[name]?.optional !== true,
    );
    expect(required.length).toBeGreaterThan(0);
    for (const page of ['README.md', 'docs/getting-started.md']) {
      const install = blocks(page).find((b) => b.lang === 'sh' && b.code.includes('npm pack'));
      expect(install, `${page} has a sh block with npm pack`).toBeDefined();
      const line = install?.code.split('\n').find((l) => l.includes('npm install') && l.includes('.tgz')) ?? '';
      expect(line.split(/\s+/), page).toEqual(expect.arrayContaining(required));
    }
  });

  it('states the Node.js versions package.json supports', () => {
    const minimum = /^>=(\d+\.\d+)$/.exec(packageJson.engines.node)?.[1];
    expect(minimum, 'engines.node is ">=major.minor"').toBeDefined();
    for (const page of ['README.md', 'docs/getting-started.md'])
      expect(read(page), page).toContain(`Node.js ${minimum} or newer`);
  });

  it('documents exactly the error codes oncely has', () => {
    const documented = [...read('docs/errors.md').matchAll(/^\| `(ONCELY_[A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect([...documented].sort()).toEqual([...ERROR_CODES].sort());
  });

  it('cites only guarantee tests that exist, and for each of G1–G9 at least one, in the README and in the guarantees page', () => {
    const titles = testTitles(['test/integration', 'examples']);
    const everywhere = pages.flatMap((page) => citedTests(read(page)).map((title) => ({ page, title })));
    expect(everywhere.filter(({ title }) => !titles.has(title))).toEqual([]);
    for (const cited of [citedTests(section(readme, 'Guarantees')), citedTests(read('docs/guarantees.md'))]) {
      for (const guarantee of ['G1', 'G2', 'G3', 'G4', 'G5', 'G6', 'G7', 'G8', 'G9']) {
        expect(
          cited.some((title) => title.split(':')[0]?.split(' ').includes(guarantee)),
          guarantee,
        ).toBe(true);
      }
    }
  });

  it('shows only TypeScript that is a file of examples/, byte for byte', () => {
    const shown = pages.flatMap(blocks);
    expect(shown.filter((b) => b.file !== undefined).length).toBeGreaterThan(0);
    for (const { page, file, lang, code } of shown) {
      if (lang === 'ts')
        expect(file, `${page}: a \`\`\`ts block must be preceded by <!-- examples/<file> -->:\n${code}`).toBeDefined();
      if (file !== undefined) expect(code, `${page} shows ${file}: copy the file into the block`).toBe(read(file));
    }
  });

  it('shows every file of examples/docs and examples/getting-started, and has each run by a test', () => {
    const shown = new Set(pages.flatMap(blocks).flatMap((b) => (b.file === undefined ? [] : [b.file])));
    const examples = [...files('examples/docs', '.ts'), ...files('examples/getting-started', '.ts')];
    expect(examples.filter((file) => !shown.has(file))).toEqual([]);
    // Run: a test file of its own, named by a test of test/integration/docs, or imported by a file that is.
    const tests = files('test/integration/docs', '.test.ts').map(read).join('\n');
    const named = (file: string): boolean =>
      ['.ts', '.js'].some((extension) => tests.includes(`${posix.basename(file, '.ts')}${extension}'`));
    const importedByNamed = (file: string): boolean =>
      examples.some(
        (other) =>
          other !== file &&
          posix.dirname(other) === posix.dirname(file) &&
          named(other) &&
          read(other).includes(`'./${posix.basename(file, '.ts')}.js'`),
      );
    const notRun = [...shown].filter((file) => !file.endsWith('.test.ts') && !named(file) && !importedByNamed(file));
    expect(notRun).toEqual([]);
  });

  it('links only to files and headings that exist', () => {
    const broken: string[] = [];
    for (const page of pages) {
      const text = prose(read(page)).replace(/`[^`\n]*`/g, 'code');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (target === undefined || /^[a-z]+:/.test(target)) continue;
        const [path = '', anchor] = target.split('#');
        const resolved = path === '' ? page : posix.normalize(posix.join(posix.dirname(page), path));
        if (!existsSync(join(root, resolved))) {
          broken.push(`${page}: ${target} (no ${resolved})`);
          continue;
        }
        if (anchor !== undefined && statSync(join(root, resolved)).isFile() && !anchors(read(resolved)).has(anchor))
          broken.push(`${page}: ${target} (no heading #${anchor} in ${resolved})`);
      }
    }
    expect(broken).toEqual([]);
  });
});
