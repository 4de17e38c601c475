/**
 * A throwaway PostgreSQL cluster: initdb into a fresh temporary directory, pg_ctl start on a free
 * port of 127.0.0.1, removed again on stop.
 */
import { execFile } from 'node:child_process';
import { chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';

import { OncelyError } from '../errors.js';
import {
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
export function lostPortRace(text: string): boolean {
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
    const root = await mkdtemp(path.join(tmpdir(), 'oncely-pg-'));
    const entryId = watchdog.add({
      pidFile: path.join(root, 'data', 'postmaster.pid'),
      // SIGQUIT = immediate shutdown: quick, and unlike SIGKILL it releases the shared memory.
      stopSignal: 'SIGQUIT',
      exitSignal: 'SIGQUIT',
      marker: root,
      dirs: [root],
    });
    const postgres = new LocalPostgres(options, root, runAs, entryId);
    try {
      if (runAs !== undefined) await chown(root, runAs.uid, runAs.gid);
      await postgres.initdb();
      await postgres.startServer();
      return postgres;
    } catch (error) {
      await postgres.stop();
      throw error;
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
      '--no-sync', // the cluster is thrown away; durability of the *server* (fsync=on) is kept
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
    for (let attempt = 1; ; attempt++) {
      const [port] = await freePorts(1);
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
      if (attempt < MAX_ATTEMPTS && lostPortRace(log)) continue;
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

  /** Idempotent: `pg_ctl stop -m fast`, waits for the postmaster to be gone, removes the directory. */
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
      await rm(this.root, { recursive: true, force: true, maxRetries: 3 });
      watchdog.remove(this.entryId);
    })();
    return this.stopping;
  }
}
