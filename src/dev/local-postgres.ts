/**
 * A PostgreSQL cluster run from the machine's binaries: by default a throwaway one (initdb into a
 * fresh temporary directory, pg_ctl start on a free port of 127.0.0.1, removed again on stop); with
 * `dataDir`, one kept in that directory between runs (initdb only the first time), and with `port`
 * on that port.
 */
import { execFile } from 'node:child_process';
import { access, chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';

import { OncelyError } from '../errors.js';
import {
  assertPortFree,
  freePorts,
  isProcessAlive,
  runCommand,
  shellQuote,
  signalProcess,
  tailFile,
  waitForPidExit,
  type RunOptions,
  type RunResult,
} from './processes.js';
import { watchdog } from './watchdog.js';

export interface LocalPostgresOptions {
  readonly binDir: string;
  readonly logger: Logger;
  /** A fixed port on 127.0.0.1; default a free one. */
  readonly port?: number | undefined;
  /** Keep the cluster here (created on first use, never removed); default a temporary directory. */
  readonly dataDir?: string | undefined;
}

interface RunAs {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

const MAX_ATTEMPTS = 3;

function idOf(name: string, flag: '-u' | '-g'): Promise<number | undefined> {
  return new Promise((resolve) => {
    execFile('id', [flag, name], { timeout: 5_000 }, (error, stdout) => {
      const id = Number(stdout.trim());
      resolve(error === null && Number.isInteger(id) ? id : undefined);
    });
  });
}

/**
 * initdb refuses to run as root (and so does postgres). As root, the cluster is run as `postgres`
 * when that user exists, else `nobody`, through spawn's uid/gid (libuv also drops supplementary
 * groups). Not root: run as ourselves.
 */
async function unprivilegedUser(): Promise<RunAs | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  for (const name of ['postgres', 'nobody']) {
    const [uid, gid] = await Promise.all([idOf(name, '-u'), idOf(name, '-g')]);
    if (uid !== undefined && gid !== undefined && uid !== 0) return { name, uid, gid };
  }
  throw new OncelyError(
    'ONCELY_DEV_SERVICES_UNAVAILABLE',
    'PostgreSQL cannot run as root and neither a "postgres" nor a "nobody" user exists: create one ' +
      '(useradd --system postgres), or start Docker, or set DATABASE_URL=postgres://user@host:port/database.',
  );
}

/** The environment minus PG* variables, which would point initdb/pg_ctl at another cluster. */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('PG')) env[key] = value;
  return env;
}

/** True when the server log says another process took the port between allocation and bind. */
export function lostPostgresPortRace(text: string): boolean {
  return /could not bind|Address already in use|could not create any TCP\/IP sockets/i.test(text);
}

export class LocalPostgres {
  private stopping: Promise<void> | undefined;
  private postmasterPid: number | undefined;
  private port = 0;

  private constructor(
    private readonly options: LocalPostgresOptions,
    private readonly root: string,
    private readonly runAs: RunAs | undefined,
    private readonly entryId: number,
    /** A directory the user gave: its cluster outlives this run. */
    private readonly kept: boolean,
  ) {}

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** The postmaster's pid while it runs. */
  get pid(): number | undefined {
    return this.postmasterPid;
  }

  get dataDir(): string {
    return this.root;
  }

  private get data(): string {
    return path.join(this.root, 'data');
  }

  private get logFile(): string {
    return path.join(this.root, 'postgres.log');
  }

  static async start(options: LocalPostgresOptions): Promise<LocalPostgres> {
    const runAs = await unprivilegedUser();
    const kept = options.dataDir !== undefined;
    const root =
      options.dataDir === undefined ? await mkdtemp(path.join(tmpdir(), 'oncely-pg-')) : path.resolve(options.dataDir);
    if (kept) await mkdir(root, { recursive: true });
    const entryId = watchdog.add({
      pidFile: path.join(root, 'data', 'postmaster.pid'),
      // SIGQUIT = immediate shutdown: quick, and unlike SIGKILL it releases the shared memory.
      // A kept cluster recovers from it on its next start, as from a crash.
      stopSignal: 'SIGQUIT',
      exitSignal: 'SIGQUIT',
      marker: root,
      // The user's directory is theirs: the watchdog stops its server but never removes it.
      dirs: kept ? [] : [root],
    });
    const postgres = new LocalPostgres(options, root, runAs, entryId, kept);
    try {
      if (runAs !== undefined) await chown(root, runAs.uid, runAs.gid);
      if (kept && runAs !== undefined) await postgres.assertReachable(runAs);
      if (kept && (await exists(path.join(root, 'data', 'PG_VERSION')))) {
        options.logger.info({ dataDir: root }, 'oncely dev: reusing the PostgreSQL cluster kept in the data directory');
      } else {
        await postgres.initdb();
      }
      await postgres.startServer();
      return postgres;
    } catch (error) {
      await postgres.stop();
      throw error;
    }
  }

  /**
   * As root the server runs as another user, who must be able to reach a directory the user chose
   * (a temporary one always is): initdb's own "Permission denied" does not say why.
   */
  private async assertReachable(runAs: RunAs): Promise<void> {
    const result = await runCommand('/bin/sh', ['-c', 'test -w "$0" && test -x "$0"', this.root], {
      cwd: '/',
      uid: runAs.uid,
      gid: runAs.gid,
      timeoutMs: 10_000,
    });
    if (result.code !== 0) {
      throw new OncelyError(
        'ONCELY_DEV_SERVICES_FAILED',
        `PostgreSQL runs as the user "${runAs.name}" (it refuses to run as root), who cannot reach ${this.root}: ` +
          `choose a data directory that user can reach, or let it through the parents (chmod o+x on each).`,
        { context: { dataDir: this.root } },
      );
    }
  }

  private run(binary: string, args: readonly string[], extra: RunOptions = {}): Promise<RunResult> {
    return runCommand(path.join(this.options.binDir, binary), args, {
      cwd: this.root, // the unprivileged user may not be able to enter our working directory
      env: serverEnv(),
      timeoutMs: 120_000,
      ...(this.runAs === undefined ? {} : { uid: this.runAs.uid, gid: this.runAs.gid }),
      ...extra,
    });
  }

  private async initdb(): Promise<void> {
    const started = Date.now();
    const result = await this.run('initdb', [
      '-D',
      this.data,
      '-A',
      'trust',
      '-U',
      'postgres',
      // A throwaway cluster needs no fsync of initdb's own files (the *server* keeps fsync=on); a
      // kept one does, or a power cut could leave it unusable.
      ...(this.kept ? [] : ['--no-sync']),
      '-E',
      'UTF8',
      // The host's locale may be missing or not UTF-8, which makes initdb fail; C is always there.
      '--no-locale',
    ]);
    if (result.code !== 0) throw this.failure(`initdb failed (exit ${result.code ?? result.signal})`, result.output);
    this.options.logger.debug({ ms: Date.now() - started }, 'oncely dev: initdb done');
  }

  private async startServer(): Promise<void> {
    const started = Date.now();
    const fixed = this.options.port;
    if (fixed !== undefined) await assertPortFree(fixed, 'PostgreSQL', '--pg-port');
    for (let attempt = 1; ; attempt++) {
      const [port] = fixed === undefined ? await freePorts(1) : [fixed];
      if (port === undefined) throw new Error('no port allocated');
      this.port = port;
      const serverOptions = [
        `-p ${port}`,
        '-h 127.0.0.1',
        `-k ${shellQuote(this.root)}`, // socket dir of our own: /tmp or /var/run/postgresql may be shared or missing
        // Kept on explicitly: benchmarks measure real commit cost.
        '-c fsync=on',
        '-c max_connections=200',
      ].join(' ');
      const result = await this.run('pg_ctl', [
        '-w',
        '-t',
        '60',
        '-D',
        this.data,
        '-l',
        this.logFile,
        '-o',
        serverOptions,
        'start',
      ]);
      if (result.code === 0) break;
      const log = await tailFile(this.logFile, 20);
      // A port of the user's choice is not raced for: another server has it.
      if (fixed === undefined && attempt < MAX_ATTEMPTS && lostPostgresPortRace(log)) continue;
      if (this.kept && /another server might be running|lock file .* already exists/i.test(log + result.output)) {
        throw this.failure(
          `the cluster in ${this.root} is in use by another server (another \`oncely dev --data-dir\`?)`,
          `${result.output}\n${log}`,
        );
      }
      throw this.failure(`pg_ctl start failed (exit ${result.code ?? result.signal})`, `${result.output}\n${log}`);
    }
    this.postmasterPid = await this.readPid();
    this.options.logger.info(
      { url: this.url, pid: this.postmasterPid, ms: Date.now() - started, dataDir: this.root, user: this.runAs?.name },
      'oncely dev: local PostgreSQL ready',
    );
  }

  private async readPid(): Promise<number | undefined> {
    try {
      const pid = Number((await readFile(path.join(this.data, 'postmaster.pid'), 'utf8')).split('\n')[0]);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  private failure(what: string, output: string): OncelyError {
    return new OncelyError(
      'ONCELY_DEV_SERVICES_FAILED',
      `Local PostgreSQL (${this.options.binDir}): ${what}. Output:\n${output.trim().split('\n').slice(-25).join('\n')}`,
      { retriable: true, context: { dataDir: this.root } },
    );
  }

  /**
   * Idempotent: `pg_ctl stop -m fast`, waits for the postmaster to be gone, removes the directory
   * unless it is a kept one.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const pid = this.postmasterPid ?? (await this.readPid());
      if (pid !== undefined && isProcessAlive(pid)) {
        const result = await this.run('pg_ctl', ['stop', '-D', this.data, '-m', 'fast', '-w', '-t', '60']);
        if (result.code !== 0) this.options.logger.warn({ output: result.output }, 'oncely dev: pg_ctl stop failed');
        if (!(await waitForPidExit(pid, 10_000))) {
          signalProcess(pid, 'SIGQUIT', false);
          if (!(await waitForPidExit(pid, 5_000))) signalProcess(pid, 'SIGKILL', false);
          await waitForPidExit(pid, 5_000);
        }
      }
      this.postmasterPid = undefined;
      if (!this.kept) await rm(this.root, { recursive: true, force: true, maxRetries: 3 });
      watchdog.remove(this.entryId);
    })();
    return this.stopping;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}
