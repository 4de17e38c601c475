/**
 * startDevServices(): a Kafka broker and a PostgreSQL server for demos and tests, from the first
 * source that works — configured servers, Docker, or local processes (see select.ts).
 */
import { pino, type Logger } from 'pino';

import { OncelyError, configError } from '../errors.js';
import { startDockerKafka, startDockerPostgres } from './docker.js';
import { ensureKafkaJars } from './kafka-jars.js';
import { CLUSTER_BROKER_PROPERTIES, DEFAULT_BROKER_PROPERTIES, mergeBrokerProperties } from './kafka-properties.js';
import { LocalKafka } from './local-kafka.js';
import { type KafkaClusterHandle, LocalKafkaCluster } from './local-kafka-cluster.js';
import { LocalPostgres } from './local-postgres.js';
import {
  canImport,
  findJava,
  findMaven,
  findPgBinDir,
  kafkaJarsCached,
  probeDocker,
  resolveCacheDir,
} from './probe.js';
import { configured, planDevServices, type DevProbeResults, type KafkaPlan, type PostgresPlan } from './select.js';
import { watchdog } from './watchdog.js';

export type DevServiceSource = 'env' | 'docker' | 'local';

export interface DevServicesOptions {
  /**
   * Where `KAFKA_BROKERS` (comma-separated `host:port`) and `DATABASE_URL` are read; when one is
   * set, that service is used as is and nothing is started for it. Pass `{}` to ignore both.
   * Tool discovery (`PATH`, `JAVA_HOME`, `PG_BIN`) and the `ONCELY_*` defaults below always read
   * `process.env`, because that is the environment the started processes inherit.
   * @default process.env
   */
  env?: Readonly<Record<string, string | undefined>>;
  /**
   * Receives progress and failures.
   * @default pino writing to stderr, level `$ONCELY_LOG_LEVEL` or `'info'`
   */
  logger?: Logger;
  /**
   * Where downloaded Kafka jars are kept between runs.
   * @default `$ONCELY_CACHE_DIR`, else `$XDG_CACHE_HOME/oncely`, else `~/.cache/oncely`
   */
  cacheDir?: string;
  /**
   * `1`: one broker (the default, unchanged). `3`: a local three-node KRaft cluster (each node
   * broker and controller, heap `-Xmx384m` each) from the same Maven jars, with replication factor 3
   * and `min.insync.replicas` 2 for internal and new topics, and per-node handles for fault
   * injection in `kafka.cluster`. A cluster is always local processes: refused when
   * `KAFKA_BROKERS` is set or with `kafka.port`, and Docker is not used for it.
   * @default 1
   */
  brokers?: 1 | 3;
  kafka?: {
    /**
     * Apache Kafka version of the local broker (`org.apache.kafka:kafka_2.13` on Maven Central).
     * Versions 3.x are supported; the Docker path always uses cp-kafka 7.9 (Kafka 3.9).
     * @default '3.9.1'
     */
    version?: string;
    /**
     * Extra broker properties, overriding the test-friendly defaults (for example
     * `{ 'group.min.session.timeout.ms': '500' }`). Listener, quorum and directory properties are
     * managed by oncely and refused. Applied to the Docker broker too.
     * @default {}
     */
    brokerProperties?: Record<string, string>;
    /**
     * The broker's port on 127.0.0.1 (local broker) or on the Docker host, so that the address is
     * the same on every start. Refused when `KAFKA_BROKERS` is set (that broker is used as is).
     * @default a free port, new on every start
     */
    port?: number;
  };
  postgres?: {
    /**
     * Tag of the `postgres` Docker image; the local path uses whatever binaries it finds.
     * @default '15-alpine'
     */
    version?: string;
    /**
     * The server's port on 127.0.0.1 (local cluster) or on the Docker host. Refused when
     * `DATABASE_URL` is set.
     * @default a free port, new on every start
     */
    port?: number;
    /**
     * A directory that keeps the PostgreSQL data between runs: created (initdb) on first use,
     * reused after, never removed (the local cluster lives in `<dataDir>/data`; a Docker container
     * mounts it). Refused when `DATABASE_URL` is set.
     * @default a temporary directory, removed on stop
     */
    dataDir?: string;
  };
}

export interface DevServices {
  readonly kafka: {
    /** Bootstrap addresses, `host:port`. */
    readonly brokers: string[];
    readonly source: DevServiceSource;
    /**
     * Local broker only (fault-injection tests): SIGTERM, wait for exit, start again with the same
     * port, configuration and data; resolves when it serves requests again. Rejects with
     * `ONCELY_DEV_SERVICES_UNAVAILABLE` for a broker from `KAFKA_BROKERS` or Docker.
     */
    restart(): Promise<void>;
    /**
     * With `brokers: 3`: the nodes (SIGKILL and start one by its id) and who leads a partition,
     * coordinates a group or is the active controller. Undefined for a single broker. `restart()`
     * kills (SIGKILL) and starts the nodes one after another, each back before the next.
     */
    readonly cluster: KafkaClusterHandle | undefined;
  };
  readonly postgres: {
    /** `postgres://…` connection string. */
    readonly url: string;
    readonly source: DevServiceSource;
  };
  /**
   * Stops everything this call started, awaits the processes and removes their temporary
   * directories. Idempotent; concurrent callers share one promise. Configured servers are left alone.
   */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

interface RunningKafka {
  readonly brokers: string[];
  readonly pid: () => number | undefined;
  readonly dataDir: string | undefined;
  readonly cluster?: LocalKafkaCluster;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

interface RunningPostgres {
  readonly url: string;
  readonly pid: () => number | undefined;
  readonly dataDir: string | undefined;
  stop(): Promise<void>;
}

/** What tests need to prove that nothing was left behind; not part of the public API. */
export interface DevServicesInternals {
  kafkaPid(): number | undefined;
  postgresPid(): number | undefined;
  watchdogPid(): number | undefined;
  readonly tempDirs: readonly string[];
}

const internals = new WeakMap<DevServices, DevServicesInternals>();

export function devServicesInternals(services: DevServices): DevServicesInternals | undefined {
  return internals.get(services);
}

let defaultLogger: Logger | undefined;

function getDefaultLogger(): Logger {
  // sync: a dev script that crashes right after a failure must not lose the line explaining it.
  defaultLogger ??= pino(
    { name: 'oncely-dev', level: process.env['ONCELY_LOG_LEVEL'] ?? 'info' },
    pino.destination({ dest: 2, sync: true }),
  );
  return defaultLogger;
}

const KAFKA_VERSION = /^\d+\.\d+\.\d+(?:[.-][0-9A-Za-z]+)*$/;
const DOCKER_TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** Probes only what the decision can need: nothing at all when both services are configured. */
async function probe(
  env: Readonly<Record<string, string | undefined>>,
  cacheDir: string,
  kafkaVersion: string,
  logger: Logger,
  cluster: boolean,
): Promise<DevProbeResults> {
  const selectEnv = { KAFKA_BROKERS: env['KAFKA_BROKERS'], DATABASE_URL: env['DATABASE_URL'] };
  const needKafka = configured(selectEnv.KAFKA_BROKERS) === undefined;
  const needPostgres = configured(selectEnv.DATABASE_URL) === undefined;
  const none: DevProbeResults = {
    env: selectEnv,
    dockerAvailable: false,
    testcontainers: { kafka: false, postgres: false },
    javaPath: undefined,
    mavenPath: undefined,
    jarsCached: false,
    pgBinDir: undefined,
  };
  if (!needKafka && !needPostgres) return none;

  const [docker, tcKafka, tcPostgres] = await Promise.all([
    probeDocker(),
    needKafka ? canImport(() => import('@testcontainers/kafka')) : false,
    needPostgres ? canImport(() => import('@testcontainers/postgresql')) : false,
  ]);
  if (!docker.dockerAvailable) logger.debug({ reason: docker.reason }, 'oncely dev: no Docker engine');
  const localKafka = needKafka && (cluster || !(docker.dockerAvailable && tcKafka));
  const localPostgres = needPostgres && !(docker.dockerAvailable && tcPostgres);
  const machineEnv = process.env;
  const [javaPath, mavenPath, jarsCached, pgBinDir] = await Promise.all([
    localKafka ? findJava(machineEnv) : undefined,
    localKafka ? findMaven(machineEnv) : undefined,
    localKafka ? kafkaJarsCached(cacheDir, kafkaVersion) : false,
    localPostgres ? findPgBinDir({ env: machineEnv }) : undefined,
  ]);
  return {
    ...none,
    dockerAvailable: docker.dockerAvailable,
    testcontainers: { kafka: tcKafka, postgres: tcPostgres },
    javaPath,
    mavenPath,
    jarsCached,
    pgBinDir,
  };
}

function notRestartable(source: DevServiceSource): () => Promise<void> {
  return () =>
    Promise.reject(
      new OncelyError(
        'ONCELY_DEV_SERVICES_UNAVAILABLE',
        `kafka.restart() needs a broker that startDevServices() runs as a local process; this one comes ` +
          `from ${source === 'env' ? 'KAFKA_BROKERS' : 'Docker'}. For fault-injection tests, unset ` +
          'KAFKA_BROKERS and run where no Docker engine answers, so that the local broker is used.',
        { context: { source } },
      ),
    );
}

async function startKafka(
  plan: KafkaPlan,
  options: {
    cacheDir: string;
    version: string;
    tunables: Record<string, string>;
    logger: Logger;
    port: number | undefined;
    size: 1 | 3;
  },
): Promise<RunningKafka> {
  switch (plan.source) {
    case 'env':
      return {
        brokers: plan.brokers,
        pid: () => undefined,
        dataDir: undefined,
        restart: notRestartable('env'),
        stop: () => Promise.resolve(),
      };
    case 'docker': {
      const container = await startDockerKafka(options.tunables, options.logger, options.port);
      return {
        brokers: container.brokers,
        pid: () => undefined,
        dataDir: undefined,
        restart: notRestartable('docker'),
        stop: () => container.stop(),
      };
    }
    case 'local': {
      const libsDir = await ensureKafkaJars({
        cacheDir: options.cacheDir,
        version: options.version,
        mavenPath: plan.mavenPath,
        logger: options.logger,
      });
      if (options.size > 1) return startLocalCluster(plan.javaPath, libsDir, options);
      const broker = await LocalKafka.start({
        javaPath: plan.javaPath,
        libsDir,
        version: options.version,
        tunables: options.tunables,
        logger: options.logger,
        port: options.port,
      });
      return {
        brokers: broker.brokers,
        pid: () => broker.pid,
        dataDir: broker.dataDir,
        restart: () => broker.restart(),
        stop: () => broker.stop(),
      };
    }
  }
}

async function startLocalCluster(
  javaPath: string,
  libsDir: string,
  options: { version: string; tunables: Record<string, string>; logger: Logger; size: number },
): Promise<RunningKafka> {
  const cluster = await LocalKafkaCluster.start({
    javaPath,
    libsDir,
    version: options.version,
    tunables: options.tunables,
    logger: options.logger,
    size: options.size,
  });
  return {
    brokers: cluster.brokers,
    pid: () => cluster.pids.find((pid) => pid !== undefined),
    dataDir: undefined,
    cluster,
    // One node after another, each back before the next goes: a rolling restart.
    restart: async () => {
      for (const node of cluster.nodes) {
        await node.kill();
        await node.start();
      }
    },
    stop: () => cluster.stop(),
  };
}

async function startPostgres(
  plan: PostgresPlan,
  options: { tag: string; logger: Logger; port: number | undefined; dataDir: string | undefined },
): Promise<RunningPostgres> {
  switch (plan.source) {
    case 'env':
      return { url: plan.url, pid: () => undefined, dataDir: undefined, stop: () => Promise.resolve() };
    case 'docker': {
      const container = await startDockerPostgres(options.tag, options.logger, {
        port: options.port,
        dataDir: options.dataDir,
      });
      return { url: container.url, pid: () => undefined, dataDir: undefined, stop: () => container.stop() };
    }
    case 'local': {
      const server = await LocalPostgres.start({
        binDir: plan.pgBinDir,
        logger: options.logger,
        port: options.port,
        dataDir: options.dataDir,
      });
      return {
        url: server.url,
        pid: () => server.pid,
        // Only a temporary directory is reported as one (tests check that those are removed).
        dataDir: options.dataDir === undefined ? server.dataDir : undefined,
        stop: () => server.stop(),
      };
    }
  }
}

function validPort(option: string, port: number | undefined): number | undefined {
  if (port !== undefined && !(Number.isInteger(port) && port >= 1 && port <= 65_535)) {
    throw configError(option, `${String(port)} is not a TCP port (1–65535)`);
  }
  return port;
}

/** A fixed port or a data directory only means something for a server oncely dev starts. */
function refuseWithConfigured(
  option: string,
  variable: 'KAFKA_BROKERS' | 'DATABASE_URL',
  value: unknown,
  env: Readonly<Record<string, string | undefined>>,
): void {
  if (value !== undefined && configured(env[variable]) !== undefined) {
    throw configError(
      option,
      `${variable} is set, so that server is used as it is and none is started: unset ${variable}, or leave ${option} out`,
    );
  }
}

/** `brokers`: 1 or 3; a cluster is started here, so a configured broker or a fixed port is refused. */
function clusterSize(
  brokers: unknown,
  kafkaPort: number | undefined,
  env: Readonly<Record<string, string | undefined>>,
): 1 | 3 {
  if (brokers === undefined || brokers === 1) return 1;
  if (brokers !== 3)
    throw configError('brokers', `${JSON.stringify(brokers) ?? 'undefined'} is not 1 (one broker) or 3 (a cluster)`);
  refuseWithConfigured('brokers', 'KAFKA_BROKERS', brokers, env);
  if (kafkaPort !== undefined) {
    throw configError('kafka.port', 'a cluster picks a free port per node: leave kafka.port out with brokers: 3');
  }
  return 3;
}

function describePlan(plan: KafkaPlan | PostgresPlan): string {
  switch (plan.source) {
    case 'env':
      return 'configured server';
    case 'docker':
      return 'Docker';
    case 'local':
      return 'pgBinDir' in plan ? `local (${plan.pgBinDir})` : `local (${plan.javaPath})`;
  }
}

/**
 * Provides a Kafka broker and a PostgreSQL server. For each, independently: the server named by
 * `KAFKA_BROKERS` / `DATABASE_URL` when set; else a testcontainers container when a Docker engine
 * answers; else a local process (Apache Kafka from Maven Central jars on the machine's Java, a
 * throwaway cluster from the machine's PostgreSQL binaries). Throws `ONCELY_DEV_SERVICES_UNAVAILABLE`
 * naming what to install or set when a service has no source, `ONCELY_DEV_SERVICES_FAILED` when one
 * was found but did not start (anything already started is stopped first).
 */
export async function startDevServices(options: DevServicesOptions = {}): Promise<DevServices> {
  const env = options.env ?? process.env;
  const logger = options.logger ?? getDefaultLogger();
  const version = options.kafka?.version ?? '3.9.1';
  if (!KAFKA_VERSION.test(version)) {
    throw configError('kafka.version', `"${version}" is not a Kafka version such as 3.9.1.`);
  }
  const tag = options.postgres?.version ?? '15-alpine';
  if (!DOCKER_TAG.test(tag)) {
    throw configError('postgres.version', `"${tag}" is not a Docker image tag such as 15-alpine.`);
  }
  const kafkaPort = validPort('kafka.port', options.kafka?.port);
  const size = clusterSize(options.brokers, kafkaPort, env);
  const postgresPort = validPort('postgres.port', options.postgres?.port);
  const dataDir = options.postgres?.dataDir;
  if (dataDir?.trim() === '') throw configError('postgres.dataDir', 'give a directory, or leave it out');
  refuseWithConfigured('kafka.port', 'KAFKA_BROKERS', kafkaPort, env);
  refuseWithConfigured('postgres.port', 'DATABASE_URL', postgresPort, env);
  refuseWithConfigured('postgres.dataDir', 'DATABASE_URL', dataDir, env);
  if (kafkaPort !== undefined && kafkaPort === postgresPort) {
    throw configError('postgres.port', `Kafka and PostgreSQL cannot both listen on port ${kafkaPort}`);
  }
  const tunables = mergeBrokerProperties(
    options.kafka?.brokerProperties,
    size > 1 ? CLUSTER_BROKER_PROPERTIES : DEFAULT_BROKER_PROPERTIES,
  );
  const cacheDir = options.cacheDir ?? resolveCacheDir(process.env);

  const probes = await probe(env, cacheDir, version, logger, size > 1);
  // A cluster runs from the jars: the Docker path has one broker only.
  const plan = planDevServices(
    size > 1 ? { ...probes, testcontainers: { ...probes.testcontainers, kafka: false } } : probes,
  );
  logger.info(`oncely dev: Kafka from ${describePlan(plan.kafka)}, PostgreSQL from ${describePlan(plan.postgres)}`);

  const needsWatchdog = plan.kafka.source === 'local' || plan.postgres.source === 'local';
  if (needsWatchdog) await watchdog.acquire();
  const [kafkaResult, postgresResult] = await Promise.allSettled([
    startKafka(plan.kafka, { cacheDir, version, tunables, logger, port: kafkaPort, size }),
    startPostgres(plan.postgres, { tag, logger, port: postgresPort, dataDir }),
  ]);
  if (kafkaResult.status === 'rejected' || postgresResult.status === 'rejected') {
    // Leave nothing half-started behind.
    await Promise.allSettled([
      kafkaResult.status === 'fulfilled' ? kafkaResult.value.stop() : undefined,
      postgresResult.status === 'fulfilled' ? postgresResult.value.stop() : undefined,
    ]);
    if (needsWatchdog) await watchdog.release();
    const reasons = [kafkaResult, postgresResult].flatMap((result) =>
      result.status === 'rejected' ? [result.reason as unknown] : [],
    );
    if (reasons.length > 1) logger.error({ err: reasons[1] }, 'oncely dev: PostgreSQL failed to start as well');
    throw reasons[0];
  }
  const kafka = kafkaResult.value;
  const postgres = postgresResult.value;

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const results = await Promise.allSettled([kafka.stop(), postgres.stop()]);
      if (needsWatchdog) await watchdog.release();
      const failure = results.find((result) => result.status === 'rejected');
      if (failure !== undefined) {
        throw new OncelyError('ONCELY_DEV_SERVICES_FAILED', 'Stopping the dev services failed.', {
          cause: failure.reason,
        });
      }
    })();
    return stopping;
  };

  const services: DevServices = {
    kafka: Object.freeze({
      brokers: kafka.brokers,
      source: plan.kafka.source,
      restart: () => kafka.restart(),
      cluster: kafka.cluster,
    }),
    postgres: Object.freeze({ url: postgres.url, source: plan.postgres.source }),
    stop,
    [Symbol.asyncDispose]: stop,
  };
  internals.set(services, {
    kafkaPid: kafka.pid,
    postgresPid: postgres.pid,
    watchdogPid: () => watchdog.pid,
    tempDirs: [kafka.dataDir, ...(kafka.cluster?.dataDirs ?? []), postgres.dataDir].filter(
      (dir): dir is string => dir !== undefined,
    ),
  });
  return services;
}
