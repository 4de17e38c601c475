/**
 * Probes of the machine: where `java`, `mvn` and the PostgreSQL binaries live, whether a Docker
 * engine answers, and whether the Kafka jars are cached. Each probe takes its environment and file
 * system as arguments so that the search order is unit-testable with a fake machine.
 */
import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, readdir } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
// Types only (erased at run time): testcontainers is an optional peer, loaded with import() below.
import type { getContainerRuntimeClient } from 'testcontainers';

type Env = Readonly<Record<string, string | undefined>>;

/** The two file-system questions discovery asks; injected in tests. */
export interface DiscoveryFs {
  /** True when `file` exists and is executable by this process. */
  isExecutable(file: string): Promise<boolean>;
  /** Entry names of `dir`, or `[]` when it does not exist or cannot be read. */
  listDir(dir: string): Promise<string[]>;
}

export const realFs: DiscoveryFs = {
  async isExecutable(file) {
    try {
      await access(file, fsConstants.X_OK);
      return true;
    } catch {
      return false;
    }
  },
  async listDir(dir) {
    try {
      return await readdir(dir);
    } catch {
      return [];
    }
  },
};

function executableNames(name: string, platform: NodeJS.Platform): string[] {
  return platform === 'win32' ? [`${name}.exe`, `${name}.cmd`, name] : [name];
}

/** First `name` on `PATH` (as the shell would find it), or undefined. */
export async function findOnPath(
  name: string,
  env: Env,
  fs: DiscoveryFs = realFs,
  platform: NodeJS.Platform = process.platform,
): Promise<string | undefined> {
  const dirs = (env['PATH'] ?? '').split(path.delimiter).filter((dir) => dir !== '');
  for (const dir of dirs) {
    for (const candidate of executableNames(name, platform)) {
      const file = path.join(dir, candidate);
      if (await fs.isExecutable(file)) return file;
    }
  }
  return undefined;
}

/** `$JAVA_HOME/bin/java` when JAVA_HOME is set and valid (that is what Maven uses too), else PATH. */
export async function findJava(env: Env, fs: DiscoveryFs = realFs): Promise<string | undefined> {
  const javaHome = env['JAVA_HOME'];
  if (javaHome !== undefined && javaHome !== '') {
    for (const candidate of executableNames('java', process.platform)) {
      const file = path.join(javaHome, 'bin', candidate);
      if (await fs.isExecutable(file)) return file;
    }
  }
  return findOnPath('java', env, fs);
}

/** `mvn` on PATH, else `$MAVEN_HOME/bin/mvn` or `$M2_HOME/bin/mvn`. */
export async function findMaven(env: Env, fs: DiscoveryFs = realFs): Promise<string | undefined> {
  const onPath = await findOnPath('mvn', env, fs);
  if (onPath !== undefined) return onPath;
  for (const home of [env['MAVEN_HOME'], env['M2_HOME']]) {
    if (home === undefined || home === '') continue;
    for (const candidate of executableNames('mvn', process.platform)) {
      const file = path.join(home, 'bin', candidate);
      if (await fs.isExecutable(file)) return file;
    }
  }
  return undefined;
}

/** Compares PostgreSQL major-version directory names ("9.6" < "10" < "15"), numerically. */
export function compareVersionNames(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const diff = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (diff !== 0) return diff;
  }
  return 0;
}

export interface PgBinDiscovery {
  readonly env: Env;
  readonly fs?: DiscoveryFs;
  /** Output of `pg_config --bindir`, or undefined when pg_config is missing or fails. */
  readonly pgConfigBindir?: () => Promise<string | undefined>;
}

const PG_BINARIES = ['initdb', 'pg_ctl', 'postgres'] as const;

async function isPgBinDir(dir: string, fs: DiscoveryFs): Promise<boolean> {
  for (const binary of PG_BINARIES) {
    const names = executableNames(binary, process.platform);
    let found = false;
    for (const name of names) {
      if (await fs.isExecutable(path.join(dir, name))) {
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

/** The directory candidates, in the order they are tried. Exported for tests. */
export async function pgBinCandidates(options: PgBinDiscovery): Promise<string[]> {
  const fs = options.fs ?? realFs;
  const candidates: string[] = [];
  const pgBin = options.env['PG_BIN'];
  if (pgBin !== undefined && pgBin !== '') candidates.push(pgBin);
  const fromPgConfig = await (options.pgConfigBindir ?? (() => runPgConfig(options.env)))();
  if (fromPgConfig !== undefined && fromPgConfig !== '') candidates.push(fromPgConfig);
  // Debian/Ubuntu install one directory per major version; the newest is the best guess.
  const versions = (await fs.listDir('/usr/lib/postgresql'))
    .filter((name) => /^\d+(\.\d+)?$/.test(name))
    .sort(compareVersionNames)
    .reverse();
  for (const version of versions) candidates.push(`/usr/lib/postgresql/${version}/bin`);
  candidates.push('/usr/local/pgsql/bin', '/opt/homebrew/bin');
  const initdbOnPath = await findOnPath('initdb', options.env, fs);
  if (initdbOnPath !== undefined) candidates.push(path.dirname(initdbOnPath));
  return [...new Set(candidates)];
}

/** First candidate directory that holds `initdb`, `pg_ctl` and `postgres`, or undefined. */
export async function findPgBinDir(options: PgBinDiscovery): Promise<string | undefined> {
  const fs = options.fs ?? realFs;
  for (const dir of await pgBinCandidates(options)) {
    if (await isPgBinDir(dir, fs)) return dir;
  }
  return undefined;
}

function runPgConfig(env: Env): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('pg_config', ['--bindir'], { env: { ...env }, timeout: 5_000 }, (error, stdout) => {
      resolve(error === null ? stdout.trim() || undefined : undefined);
    });
  });
}

/** `$ONCELY_CACHE_DIR`, else `$XDG_CACHE_HOME/oncely`, else `~/.cache/oncely`. */
export function resolveCacheDir(env: Env, home: string = homedir()): string {
  const explicit = env['ONCELY_CACHE_DIR'];
  if (explicit !== undefined && explicit !== '') return path.resolve(explicit);
  const xdg = env['XDG_CACHE_HOME'];
  if (xdg !== undefined && xdg !== '') return path.resolve(xdg, 'oncely');
  return path.join(home, '.cache', 'oncely');
}

/** Where the jars of one Kafka version live once downloaded. */
export function kafkaInstallDir(cacheDir: string, version: string): string {
  return path.join(cacheDir, `kafka-${version}`);
}

/** The broker jar whose presence marks a complete install (installs are renamed into place whole). */
export function kafkaMarkerJar(cacheDir: string, version: string): string {
  return path.join(kafkaInstallDir(cacheDir, version), 'libs', `kafka_2.13-${version}.jar`);
}

export async function kafkaJarsCached(cacheDir: string, version: string): Promise<boolean> {
  try {
    await access(kafkaMarkerJar(cacheDir, version));
    return true;
  } catch {
    return false;
  }
}

/** Resolves `promise`, or undefined after `ms`; the timer does not keep the process alive. */
async function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
    timer.unref();
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** The one function of testcontainers the probe uses (injectable for tests). */
export interface TestcontainersProbe {
  readonly getContainerRuntimeClient: typeof getContainerRuntimeClient;
}

export interface DockerProbe {
  readonly dockerAvailable: boolean;
  /** Why Docker is not used; for the debug log. */
  readonly reason?: string;
}

/**
 * Asks testcontainers whether a container runtime answers. testcontainers reads DOCKER_HOST,
 * `~/.testcontainers.properties` and the usual sockets itself, from `process.env`, and caches its
 * configuration per process. Without an engine it throws "Could not find a working container
 * runtime strategy" within milliseconds; the deadline only guards against an engine address that
 * swallows packets. The Docker path itself cannot run on the machines oncely is built on, so only
 * this detection and the fallback it causes are tested (test/unit/dev/docker-probe.test.ts).
 */
export async function probeDocker(
  timeoutMs = 10_000,
  load: () => Promise<TestcontainersProbe> = () => import('testcontainers'),
): Promise<DockerProbe> {
  let testcontainers: TestcontainersProbe;
  try {
    testcontainers = await load();
  } catch {
    return { dockerAvailable: false, reason: 'the testcontainers package is not installed' };
  }
  try {
    const client = await withDeadline(
      testcontainers.getContainerRuntimeClient().then(() => true as const),
      timeoutMs,
    );
    return client === undefined
      ? { dockerAvailable: false, reason: `no answer from the container runtime within ${timeoutMs} ms` }
      : { dockerAvailable: true };
  } catch (error) {
    return { dockerAvailable: false, reason: error instanceof Error ? error.message : String(error) };
  }
}

/** Whether an optional module can be loaded (the testcontainers modules are optional peers). */
export async function canImport(load: () => Promise<unknown>): Promise<boolean> {
  try {
    await load();
    return true;
  } catch {
    return false;
  }
}
