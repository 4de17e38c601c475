/**
 * The seam between oncely and its Kafka client library. Everything outside `kafka/` names these
 * types and calls these functions, never kafkajs itself, so that another client can be added as an
 * adapter here without touching the pipeline, the relay, replay or the CLI.
 */
import { Kafka, logLevel, type Admin, type ConsumerConfig, type ProducerConfig } from 'kafkajs';

/** The Kafka client an application passes as the `kafka` option: a kafkajs `new Kafka({ clientId, brokers })`. */
export type KafkaClient = Kafka;

/** A connected admin client of `KafkaClient`. */
export type KafkaAdmin = Admin;

/** Consumer settings passed through to the client (`consumer` option); the group id is oncely's. */
export type KafkaConsumerSettings = Omit<ConsumerConfig, 'groupId'>;

/** Producer settings passed through to the client; idempotence and in-flight limits are oncely's. */
export type KafkaProducerSettings = Omit<ProducerConfig, 'idempotent' | 'maxInFlightRequests' | 'transactionalId'>;

export interface ClientOptions {
  readonly clientId: string;
  /** `host:port` addresses, or one comma-separated string of them (as `--brokers` takes them). */
  readonly brokers: readonly string[] | string;
  /** Log the client's warnings (a long-running relay); otherwise it stays silent (CLI one-shots). */
  readonly logWarnings?: boolean;
  readonly connectionTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
  /** How many times a failed request is retried before the call fails. */
  readonly retries?: number;
}

/** A client oncely creates itself: for the CLI, dev services and probes. */
export function createKafkaClient(options: ClientOptions): KafkaClient {
  const brokers =
    typeof options.brokers === 'string'
      ? options.brokers
          .split(',')
          .map((b) => b.trim())
          .filter((b) => b !== '')
      : [...options.brokers];
  return new Kafka({
    clientId: options.clientId,
    brokers,
    logLevel: options.logWarnings === true ? logLevel.WARN : logLevel.NOTHING,
    ...(options.connectionTimeoutMs === undefined ? {} : { connectionTimeout: options.connectionTimeoutMs }),
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeout: options.requestTimeoutMs }),
    ...(options.retries === undefined ? {} : { retry: { retries: options.retries } }),
  });
}

/** Whether a value looks like a client this module can drive (an early, one-line option error). */
export function isKafkaClient(value: unknown): value is KafkaClient {
  const client = value as { consumer?: unknown; producer?: unknown; admin?: unknown } | null | undefined;
  return (
    typeof client === 'object' &&
    client !== null &&
    typeof client.consumer === 'function' &&
    typeof client.producer === 'function' &&
    typeof client.admin === 'function'
  );
}
