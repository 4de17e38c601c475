import { pino } from 'pino';
import { afterAll, beforeAll, inject } from 'vitest';

import { type DevServices, type KafkaClusterHandle, startDevServices } from '../../src/dev/index.js';
import { TEST_BROKER_PROPERTIES } from './settings.js';

export interface TestCluster {
  /** The cluster's bootstrap addresses, one per node. */
  readonly brokers: string[];
  readonly cluster: KafkaClusterHandle;
  readonly services: DevServices;
  /** Starts every node that is not running, so the next test finds the cluster whole. */
  heal(): Promise<void>;
}

/**
 * A three-node Kafka cluster for the file that calls this (before `useTestEnvironment`, so its
 * brokers are there when the environment connects): started once before the file's tests and
 * stopped after them. Only the files that need a cluster start one; PostgreSQL is the run's.
 */
export function useKafkaCluster(): TestCluster {
  let services: DevServices | undefined;
  beforeAll(async () => {
    services = await startDevServices({
      brokers: 3,
      // Only the run's PostgreSQL: the run's single broker (KAFKA_BROKERS) is not this cluster.
      env: { DATABASE_URL: inject('databaseUrl') },
      kafka: { brokerProperties: TEST_BROKER_PROPERTIES },
      logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'warn' }),
    });
  }, 180_000);
  afterAll(async () => {
    await services?.stop();
  }, 120_000);
  const need = (): DevServices => {
    if (services === undefined) throw new Error('the cluster is not started (used outside a test?)');
    return services;
  };
  const cluster = (): KafkaClusterHandle => {
    const handle = need().kafka.cluster;
    if (handle === undefined) throw new Error('startDevServices({ brokers: 3 }) returned no cluster');
    return handle;
  };
  return {
    get brokers() {
      return need().kafka.brokers;
    },
    get cluster() {
      return cluster();
    },
    get services() {
      return need();
    },
    async heal() {
      await Promise.all(
        cluster()
          .nodes.filter((node) => !node.running)
          .map((node) => node.start()),
      );
    },
  };
}
