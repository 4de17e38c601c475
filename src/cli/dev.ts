import { InvalidArgumentError } from 'commander';

import { startDevServices } from '../dev/index.js';

export interface DevOptions {
  readonly kafkaPort?: number;
  readonly pgPort?: number;
  readonly dataDir?: string;
  /** `'1'` or `'3'` (commander's choice); 3 starts a local three-node cluster. */
  readonly brokers?: string;
}

/** `--kafka-port 9092`: a whole number from 1 to 65535. */
export function parsePort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port < 1 || port > 65_535) {
    throw new InvalidArgumentError('a port is a whole number from 1 to 65535.');
  }
  return port;
}

/** `oncely dev`: start the services, print how to reach them, hold until Ctrl-C, stop them. */
export async function runDev(options: DevOptions = {}): Promise<void> {
  const services = await startDevServices({
    ...(options.brokers === '3' ? { brokers: 3 as const } : {}),
    ...(options.kafkaPort === undefined ? {} : { kafka: { port: options.kafkaPort } }),
    ...(options.pgPort === undefined && options.dataDir === undefined
      ? {}
      : {
          postgres: {
            ...(options.pgPort === undefined ? {} : { port: options.pgPort }),
            ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
          },
        }),
  });
  process.stdout.write(
    `KAFKA_BROKERS=${services.kafka.brokers.join(',')}\nDATABASE_URL=${services.postgres.url}\n` +
      `# Kafka: ${services.kafka.source}${services.kafka.cluster === undefined ? '' : ` (${services.kafka.cluster.nodes.length} nodes)`}, PostgreSQL: ${services.postgres.source}` +
      `${options.dataDir === undefined ? '' : ` (data kept in ${options.dataDir})`}. Press Ctrl-C to stop.\n`,
  );
  // Signal listeners do not keep Node running, and the services' processes are unref'd so that
  // they never hold a test run open: hold the process open explicitly until a signal arrives.
  const hold = setInterval(() => undefined, 2 ** 30);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  clearInterval(hold);
  await services.stop();
  process.stdout.write('Stopped.\n');
}
