/**
 * `oncely/dev`: Kafka and PostgreSQL for demos and tests.
 *
 * ```ts
 * import { startDevServices } from 'oncely/dev';
 * await using services = await startDevServices();
 * // services.kafka.brokers, services.postgres.url
 * ```
 */
export { startDevServices } from './dev-services.js';
export type { DevServiceSource, DevServices, DevServicesOptions } from './dev-services.js';
export type { KafkaClusterHandle, KafkaClusterNode } from './local-kafka-cluster.js';
