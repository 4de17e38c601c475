/**
 * The seam between oncely and its Kafka client library. Everything outside `kafka/` names these
 * types and calls these functions, never kafkajs itself, so that another client can be added as an
 * adapter here without touching the pipeline, the relay, replay or the CLI.
 */
import { Kafka, logLevel, type Admin, type ConsumerConfig, type logCreator, type ProducerConfig } from 'kafkajs';
import type { Logger } from 'pino';

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
  /**
   * Where the client's own log goes: each kafkajs entry (INFO and above) as a `debug` line of this
   * logger, so `ONCELY_LOG_LEVEL=debug` shows them. Default: nowhere. kafkajs logs every failed
   * connection attempt at ERROR with a stack trace; oncely reports what matters itself, once (a
   * relay that cannot reach the broker warns once per backoff, a command fails with one line).
   */
  readonly logger?: Logger;
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
    ...clientLog(options.logger),
    ...(options.connectionTimeoutMs === undefined ? {} : { connectionTimeout: options.connectionTimeoutMs }),
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeout: options.requestTimeoutMs }),
    ...(options.retries === undefined ? {} : { retry: { retries: options.retries } }),
  });
}

/** The kafkajs log settings that send its entries to `logger` at debug, or nowhere. */
function clientLog(logger: Logger | undefined): { logLevel: logLevel; logCreator?: logCreator } {
  if (logger === undefined || !logger.isLevelEnabled('debug')) return { logLevel: logLevel.NOTHING };
  const log = logger.child({ component: 'kafkajs' });
  return {
    logLevel: logLevel.INFO,
    logCreator:
      () =>
      ({ namespace, label, log: entry }) => {
        const { message, timestamp: _timestamp, logger: _logger, ...fields } = entry;
        log.debug({ ...fields, namespace, kafkajsLevel: label }, message);
      },
  };
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
