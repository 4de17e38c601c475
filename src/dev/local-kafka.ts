/**
 * A single-node Apache Kafka (KRaft, combined broker + controller) run as a child JVM from the jars
 * in the cache, with its configuration and data in a fresh temporary directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createKafkaClient } from '../kafka/client.js';
import type { Logger } from 'pino';

import { OncelyError, isOncelyError } from '../errors.js';
import {
  brokerProperties,
  clusterNodeProperties,
  randomClusterId,
  renderLog4jProperties,
  renderProperties,
} from './kafka-properties.js';
import {
  assertPortFree,
  freePorts,
  openLogFile,
  runCommand,
  signalProcess,
  sleep,
  tailFile,
  waitForChildExit,
  type ExitInfo,
} from './processes.js';
import { watchdog } from './watchdog.js';

export interface LocalKafkaOptions {
  readonly javaPath: string;
  readonly libsDir: string;
  readonly version: string;
  /** Tunables already merged over the defaults. */
  readonly tunables: Readonly<Record<string, string>>;
  readonly logger: Logger;
  /** Default 90 s. */
  readonly readyTimeoutMs?: number;
  /** A fixed client port on 127.0.0.1; default a free one. (The controller port is always a free one.) */
  readonly port?: number | undefined;
  /** One node of a cluster (see LocalKafkaCluster): its id, ports, voters and the shared cluster id. */
  readonly node?: ClusterNodeSpec;
  /** JVM heap flags; default `-Xms256m -Xmx512m`. */
  readonly heap?: readonly string[];
}

/** Where one node of a local cluster listens, and the cluster it belongs to. */
export interface ClusterNodeSpec {
  readonly nodeId: number;
  readonly port: number;
  readonly controllerPort: number;
  readonly voters: string;
  readonly clusterId: string;
}

const HEAP = ['-Xms256m', '-Xmx512m'];
const JVM_FLAGS = [
  '-XX:+UseG1GC',
  '-XX:MaxGCPauseMillis=20',
  '-XX:+ExitOnOutOfMemoryError',
  '-Djava.awt.headless=true',
];
const STOP_TIMEOUT_MS = 30_000;
const MAX_ATTEMPTS = 3;

interface Layout {
  readonly root: string;
  readonly port: number;
  readonly serverProperties: string;
  readonly log4jProperties: string;
  readonly serverLog: string;
  readonly stdoutLog: string;
}

/** True when a failed start looks like a lost race for a port another process took meanwhile. */
export function lostKafkaPortRace(text: string): boolean {
  return /Address already in use|BindException/.test(text);
}

/** Lists topics once with a throwaway admin client; throws while the broker is not serving. */
async function probeBroker(brokers: string[]): Promise<void> {
  const kafka = createKafkaClient({
    clientId: 'oncely-dev-ready',
    brokers,
    connectionTimeoutMs: 2_000,
    requestTimeoutMs: 5_000,
    retries: 0,
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    await admin.listTopics();
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

export class LocalKafka {
  private child: ChildProcess | undefined;
  private expectingExit = false;
  private stopping: Promise<void> | undefined;
  private restarting: Promise<void> | undefined;

  private constructor(
    private readonly options: LocalKafkaOptions,
    private readonly layout: Layout,
    private readonly entryId: number,
  ) {}

  get brokers(): string[] {
    return [`127.0.0.1:${this.layout.port}`];
  }

  /** The broker JVM's pid while it runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  get dataDir(): string {
    return this.layout.root;
  }

  /**
   * One node of a cluster, formatted but not started: a node cannot serve before a majority of the
   * quorum runs, so the cluster launches all its nodes at once (see {@link launchNode}).
   */
  static async prepareNode(options: LocalKafkaOptions & { node: ClusterNodeSpec }): Promise<LocalKafka> {
    return LocalKafka.formatted(`oncely-kafka-node${options.node.nodeId}-`, options);
  }

  /**
   * A broker's directory, configuration and formatted log, not yet started. The directory is
   * registered with the watchdog before anything runs in it: a parent killed from here on leaves
   * nothing behind.
   */
  private static async formatted(prefix: string, options: LocalKafkaOptions): Promise<LocalKafka> {
    const root = await mkdtemp(path.join(tmpdir(), prefix));
    const entryId = watchdog.add({
      stopSignal: 'SIGTERM',
      exitSignal: 'SIGKILL', // at exit there is no time for a clean shutdown; the data is throwaway
      marker: root,
      dirs: [root],
    });
    let layout: Layout;
    try {
      layout = await LocalKafka.prepare(root, options);
    } catch (error) {
      await rm(root, { recursive: true, force: true });
      watchdog.remove(entryId);
      throw error;
    }
    const kafka = new LocalKafka(options, layout, entryId);
    try {
      await kafka.format();
    } catch (error) {
      await kafka.stop();
      throw error;
    }
    return kafka;
  }

  /** Starts a prepared (or killed) node; resolves once it serves metadata requests. */
  async launchNode(): Promise<void> {
    if (this.stopping !== undefined) {
      throw new OncelyError('ONCELY_DEV_SERVICES_FAILED', 'a Kafka node cannot start after stop().');
    }
    if (this.running) return;
    await this.launch();
  }

  /** Set by {@link freeze}, cleared when the process is killed or started. */
  frozen = false;

  /**
   * SIGSTOP: the node keeps its connections open but answers nothing, as a hung machine or a
   * long pause would; the controller fences it once its heartbeats stop. {@link kill} ends it.
   */
  freeze(): void {
    const pid = this.child?.pid;
    if (pid === undefined || !this.running) return;
    signalProcess(pid, 'SIGSTOP', true);
    this.frozen = true;
  }

  /** Whether the JVM runs now. */
  get running(): boolean {
    const child = this.child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  /**
   * SIGKILL, no clean shutdown: what a crashed machine looks like to the rest of the cluster.
   * Resolves once the process is gone; {@link launchNode} starts it again on the same data.
   */
  async kill(): Promise<void> {
    const child = this.child;
    if (child?.pid === undefined) return;
    this.expectingExit = true;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = waitForChildExit(child);
      signalProcess(child.pid, 'SIGKILL', true);
      await exited;
    }
    this.child = undefined;
    this.frozen = false;
    watchdog.update(this.entryId, { pid: undefined });
  }

  static async start(options: LocalKafkaOptions): Promise<LocalKafka> {
    if (options.port !== undefined) await assertPortFree(options.port, 'Kafka', '--kafka-port');
    for (let attempt = 1; ; attempt++) {
      const kafka = await LocalKafka.formatted('oncely-kafka-', options);
      try {
        await kafka.launch();
        return kafka;
      } catch (error) {
        await kafka.stop();
        // A port of the user's choice is not raced for: another server has it.
        const retry =
          options.port === undefined &&
          attempt < MAX_ATTEMPTS &&
          isOncelyError(error) &&
          lostKafkaPortRace(error.message);
        if (!retry) throw error;
        options.logger.debug({ attempt }, 'oncely dev: Kafka lost a port race, retrying with new ports');
      }
    }
  }

  private static async prepare(root: string, options: LocalKafkaOptions): Promise<Layout> {
    // Three distinct free ports: with a fixed client port, one of them may be that very port.
    const free = options.node === undefined ? await freePorts(3) : [];
    const port = options.node?.port ?? options.port ?? free[0];
    const controllerPort = options.node?.controllerPort ?? free.find((p) => p !== port);
    if (port === undefined || controllerPort === undefined) throw new Error('no ports allocated');
    const logsDir = path.join(root, 'logs');
    await mkdir(logsDir);
    const layout: Layout = {
      root,
      port,
      serverProperties: path.join(root, 'server.properties'),
      log4jProperties: path.join(root, 'log4j.properties'),
      serverLog: path.join(logsDir, 'server.log'),
      stdoutLog: path.join(logsDir, 'stdout.log'),
    };
    const logDir = path.join(root, 'data');
    const properties =
      options.node === undefined
        ? brokerProperties({ port, controllerPort, logDir }, options.tunables)
        : clusterNodeProperties(
            { port, controllerPort, logDir, nodeId: options.node.nodeId, voters: options.node.voters },
            options.tunables,
          );
    await writeFile(layout.serverProperties, renderProperties(properties));
    await writeFile(layout.log4jProperties, renderLog4jProperties(layout.serverLog));
    return layout;
  }

  private javaArgs(heap: readonly string[], mainClass: string, args: readonly string[]): string[] {
    return [
      ...heap,
      ...JVM_FLAGS,
      `-Dlog4j.configuration=${pathToFileURL(this.layout.log4jProperties).href}`,
      '-cp',
      // A classpath wildcard, expanded by the JVM itself (no shell involved).
      path.join(this.options.libsDir, '*'),
      mainClass,
      ...args,
    ];
  }

  /** `kafka-storage format` with a random cluster id; static voters, so no --standalone. */
  private async format(): Promise<void> {
    const started = Date.now();
    // Every node of a cluster is formatted with the same id; a single node gets a fresh one.
    const clusterId = this.options.node?.clusterId ?? randomClusterId(randomBytes);
    const result = await runCommand(
      this.options.javaPath,
      this.javaArgs(['-Xmx256m'], 'kafka.tools.StorageTool', [
        'format',
        '-t',
        clusterId,
        '-c',
        this.layout.serverProperties,
      ]),
      {
        detached: true,
        timeoutMs: 120_000,
        onSpawn: (child) => watchdog.update(this.entryId, { pid: child.pid, group: true }),
      },
    );
    watchdog.update(this.entryId, { pid: undefined });
    if (result.code !== 0) {
      throw this.failure(`formatting the Kafka storage failed (exit ${result.code ?? result.signal})`, result.output);
    }
    this.options.logger.debug({ ms: Date.now() - started }, 'oncely dev: Kafka storage formatted');
  }

  /** Starts the broker JVM and waits until it serves metadata requests. */
  private async launch(): Promise<void> {
    const { logger } = this.options;
    const started = Date.now();
    const out = await openLogFile(this.layout.stdoutLog);
    let child: ChildProcess;
    try {
      child = spawn(
        this.options.javaPath,
        this.javaArgs(this.options.heap ?? HEAP, 'kafka.Kafka', [this.layout.serverProperties]),
        {
          // Own process group, so stop() and the watchdog can signal everything the JVM started,
          // and a Ctrl-C aimed at the parent's group does not half-kill the broker.
          detached: true,
          // Straight into a file: no pipe that could fill up or tie the JVM to our lifetime.
          stdio: ['ignore', out.fd, out.fd],
        },
      );
    } finally {
      await out.close(); // the child holds its own copy of the descriptor
    }
    this.child = child;
    this.expectingExit = false;
    const pid = child.pid;
    if (pid === undefined) {
      const error = await new Promise<unknown>((resolve) => child.once('error', resolve));
      throw new OncelyError('ONCELY_DEV_SERVICES_FAILED', `Could not start ${this.options.javaPath}.`, {
        cause: error,
      });
    }
    watchdog.update(this.entryId, { pid, group: true });
    // A broker that dies by itself is worth a warning; one we stopped is not.
    child.once('exit', (code, signal) => {
      if (this.expectingExit) return;
      void tailFile(this.layout.serverLog, 20).then((tail) =>
        logger.warn({ pid, code, signal, tail }, 'oncely dev: the local Kafka broker exited unexpectedly'),
      );
    });
    child.unref(); // a script that forgets stop() may still exit; the exit handler kills the JVM

    const exited = new Promise<ExitInfo>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const readyTimeoutMs = this.options.readyTimeoutMs ?? 90_000;
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      const outcome = await Promise.race([
        probeBroker(this.brokers).then(
          () => 'ready' as const,
          () => 'not-ready' as const,
        ),
        exited,
      ]);
      if (outcome === 'ready') break;
      if (outcome !== 'not-ready') {
        throw this.failure(
          `the Kafka broker exited during start-up (exit ${outcome.code ?? outcome.signal})`,
          await this.logTails(),
        );
      }
      if (Date.now() >= deadline) {
        throw this.failure(`the Kafka broker was not ready within ${readyTimeoutMs / 1000} s`, await this.logTails());
      }
      await sleep(250);
    }
    logger.info(
      { brokers: this.brokers, pid, ms: Date.now() - started, dataDir: this.layout.root },
      `oncely dev: local Apache Kafka ${this.options.version} ready`,
    );
  }

  private async logTails(): Promise<string> {
    const [server, stdout] = await Promise.all([
      tailFile(this.layout.serverLog, 25),
      tailFile(this.layout.stdoutLog, 15),
    ]);
    return [server, stdout].filter((text) => text !== '').join('\n--- stdout ---\n');
  }

  private failure(what: string, output: string): OncelyError {
    return new OncelyError(
      'ONCELY_DEV_SERVICES_FAILED',
      `Local Kafka ${this.options.version}: ${what}. Java: ${this.options.javaPath}; data and logs: ` +
        `${this.layout.root}. Last log lines:\n${output.trim() || '(empty)'}`,
      { retriable: true, context: { dataDir: this.layout.root, port: this.layout.port } },
    );
  }

  /** SIGTERM (a clean shutdown), SIGKILL if it takes longer than 30 s; resolves once it is gone. */
  private async terminate(): Promise<void> {
    const child = this.child;
    if (child?.pid === undefined) return;
    const pid = child.pid;
    this.expectingExit = true;
    // A broker that already died (and was reaped) is not signalled: its pid may belong to another
    // process by now.
    if (child.exitCode === null && child.signalCode === null) {
      const exited = waitForChildExit(child);
      signalProcess(pid, 'SIGTERM', true);
      const timer = setTimeout(() => signalProcess(pid, 'SIGKILL', true), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    this.child = undefined;
    watchdog.update(this.entryId, { pid: undefined });
  }

  /**
   * Stops the broker and starts it again with the same port, configuration and data directory —
   * what a broker restart in production looks like to clients, for fault-injection tests.
   */
  restart(): Promise<void> {
    if (this.stopping !== undefined) {
      return Promise.reject(new OncelyError('ONCELY_DEV_SERVICES_FAILED', 'kafka.restart() was called after stop().'));
    }
    // Concurrent callers share one restart.
    this.restarting ??= (async () => {
      const started = Date.now();
      await this.terminate();
      await this.launch();
      this.options.logger.info({ ms: Date.now() - started }, 'oncely dev: local Kafka restarted');
    })().finally(() => {
      this.restarting = undefined;
    });
    return this.restarting;
  }

  /** Idempotent: terminates the JVM, awaits it, removes the data directory. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.restarting?.catch(() => undefined);
      await this.terminate();
      await rm(this.layout.root, { recursive: true, force: true, maxRetries: 3 });
      watchdog.remove(this.entryId);
    })();
    return this.stopping;
  }
}
