/**
 * Kafka and PostgreSQL in containers, when a Docker engine answers. The testcontainers modules are
 * optional peer dependencies, loaded with dynamic `import()` only on this path, so oncely/dev works
 * without them.
 *
 * This path cannot run on the machines oncely is developed on (no Docker engine); what is tested
 * there is the detection that leads here and the fallback when it fails (see probe.ts). Containers
 * are removed by testcontainers' reaper (Ryuk) if this process dies, so they need no watchdog.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';

import type { Logger } from 'pino';

import { OncelyError } from '../errors.js';
import { confluentEnvironment } from './kafka-properties.js';

/** Confluent Platform 7.9 ships Apache Kafka 3.9, the version the local broker defaults to. */
export const KAFKA_IMAGE = 'confluentinc/cp-kafka:7.9.0';
/** The client port KafkaContainer maps to the host. */
const KAFKA_CONTAINER_PORT = 9093;

export interface DockerService {
  stop(): Promise<void>;
}

function failed(what: string, error: unknown): OncelyError {
  return new OncelyError(
    'ONCELY_DEV_SERVICES_FAILED',
    `${what} in Docker failed: ${error instanceof Error ? error.message : String(error)}. Check that ` +
      'Docker can pull the image, or set KAFKA_BROKERS / DATABASE_URL to servers of your own.',
    { cause: error, retriable: true },
  );
}

export async function startDockerKafka(
  tunables: Readonly<Record<string, string>>,
  logger: Logger,
  hostPort?: number,
): Promise<DockerService & { brokers: string[] }> {
  const started = Date.now();
  try {
    const { KafkaContainer } = await import('@testcontainers/kafka');
    const kafka = new KafkaContainer(KAFKA_IMAGE);
    // A fixed host port replaces the random binding of the client port; the container advertises
    // whichever host port it is mapped to.
    if (hostPort !== undefined) kafka.withExposedPorts({ container: KAFKA_CONTAINER_PORT, host: hostPort });
    const container = await kafka
      .withKraft()
      // The same test-friendly tunables as the local broker (short session timeouts and so on).
      .withEnvironment(confluentEnvironment(tunables))
      .start();
    const brokers = [`${container.getHost()}:${container.getMappedPort(KAFKA_CONTAINER_PORT)}`];
    logger.info({ brokers, image: KAFKA_IMAGE, ms: Date.now() - started }, 'oncely dev: Kafka container ready');
    return {
      brokers,
      stop: async () => {
        await container.stop();
      },
    };
  } catch (error) {
    throw failed(`Starting ${KAFKA_IMAGE}`, error);
  }
}

export async function startDockerPostgres(
  tag: string,
  logger: Logger,
  options: { port?: number | undefined; dataDir?: string | undefined } = {},
): Promise<DockerService & { url: string }> {
  const image = `postgres:${tag}`;
  const started = Date.now();
  try {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const postgres = new PostgreSqlContainer(image);
    if (options.port !== undefined) postgres.withExposedPorts({ container: 5432, host: options.port });
    if (options.dataDir !== undefined) {
      // The image initialises an empty directory and reuses one that holds a cluster.
      const source = path.resolve(options.dataDir);
      await mkdir(source, { recursive: true });
      postgres.withBindMounts([{ source, target: '/var/lib/postgresql/data' }]);
    }
    const container = await postgres
      .withDatabase('postgres')
      .withUsername('postgres')
      .withPassword('postgres')
      // Same server settings as the local cluster: real commit cost, room for many pools.
      .withCommand(['postgres', '-c', 'fsync=on', '-c', 'max_connections=200'])
      .start();
    const url = container.getConnectionUri();
    logger.info({ image, ms: Date.now() - started }, 'oncely dev: PostgreSQL container ready');
    return {
      url,
      stop: async () => {
        await container.stop();
      },
    };
  } catch (error) {
    throw failed(`Starting ${image}`, error);
  }
}
