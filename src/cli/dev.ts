import { startDevServices } from '../dev/index.js';

/** `oncely dev`: start the services, print how to reach them, hold until Ctrl-C, stop them. */
export async function runDev(): Promise<void> {
  const services = await startDevServices();
  process.stdout.write(
    `KAFKA_BROKERS=${services.kafka.brokers.join(',')}\nDATABASE_URL=${services.postgres.url}\n` +
      `# Kafka: ${services.kafka.source}, PostgreSQL: ${services.postgres.source}. Press Ctrl-C to stop.\n`,
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
