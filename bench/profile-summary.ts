/**
 * Where a variant's process spent its CPU: `npx tsx bench/profile-summary.ts bench/results/P.cpuprofile`
 * (written by `BENCH_CPU_PROF=P npm run bench`). Prints self time by area (oncely's source by
 * directory, each package, Node's internals, GC, idle) and the functions with the most self time.
 * The profile covers the whole process, start-up included; idle is time spent waiting on I/O.
 */
import { readFile } from 'node:fs/promises';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Which part of the program a frame belongs to. */
function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg !== null) return pkg[1] ?? url;
  if (url.startsWith('node:')) return 'node internals';
  // The variants run oncely from the built dist/ (bench/dist/ for the bench's own code); an area
  // is named after the source directory either way, so profiles of both read alike.
  if (/\/bench\/(?:dist\/)?[^/]+$/.test(url)) return 'bench';
  const own = /\/(?:src|dist)\/([^/]+)\/[^/]+$/.exec(url);
  if (own !== null) return `src/${own[1] ?? ''}`;
  if (/\/(?:src|dist)\/[^/]+$/.test(url)) return 'src';
  return url;
}

function shortUrl(url: string): string {
  return url.replace(/^file:\/\/.*?\/(node_modules|src|dist|bench)\//, '$1/');
}

async function main(): Promise<void> {
  const file = process.argv[2];
  if (file === undefined) throw new Error('usage: profile-summary.ts <file.cpuprofile> [top]');
  const top = Number(process.argv[3] ?? 25);
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfByNode = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    selfByNode.set(id, (selfByNode.get(id) ?? 0) + delta);
    total += delta;
  });

  const byArea = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const [id, micros] of selfByNode) {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined) continue;
    const area = areaOf(frame);
    byArea.set(area, (byArea.get(area) ?? 0) + micros);
    const name = `${frame.functionName || '(anonymous)'}  ${shortUrl(frame.url)}${frame.url === '' ? '' : `:${frame.lineNumber + 1}`}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + micros);
  }
  const busy = total - (byArea.get('(idle)') ?? 0);
  const print = (title: string, entries: Map<string, number>, limit: number): void => {
    console.log(`\n${title}`);
    for (const [name, micros] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, limit)) {
      const share = name === '(idle)' ? '' : `${((100 * micros) / busy).toFixed(1).padStart(5)} % of busy`;
      console.log(`  ${(micros / 1e6).toFixed(2).padStart(7)} s  ${share.padEnd(16)} ${name}`);
    }
  };
  console.log(`${file}: ${(total / 1e6).toFixed(1)} s profiled, ${(busy / 1e6).toFixed(1)} s busy`);
  print('self time by area', byArea, 30);
  byFunction.delete('(idle)  ');
  print(`top ${top} functions by self time`, byFunction, top);
}

await main();
