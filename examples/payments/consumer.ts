/**
 * The payments consumer as its own process: `KAFKA_BROKERS=… DATABASE_URL=… TOPIC=… GROUP_ID=…`,
 * optionally `MODE=batch` (or `MODE=lanes`: message mode with 4 per-key lanes per partition), `PROVIDER_URL=…` (a payment provider charged through a step) and `APPLICATION_NAME=…` (how its database connections are named).
 * Stops gracefully on SIGTERM/SIGINT. Prints one JSON line per outcome (the demo tallies them).
 */
import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka, logLevel } from 'kafkajs';
import { createInboxConsumer } from 'oncely';
import pg from 'pg';
import { pino } from 'pino';

import { paymentsBatchHandler, paymentsHandler } from './handler.js';
import { schema } from './schema.js';

const required = (name: string): string => {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`set ${name}`);
  return value;
};

const batch = process.env.MODE === 'batch';
// Lanes: each account's events in order, different accounts at once (a connection per lane).
const lanes = process.env.MODE === 'lanes' ? 4 : undefined;
const pool = new pg.Pool({
  connectionString: required('DATABASE_URL'),
  max: lanes === undefined ? 6 : 4 * lanes + 4,
  application_name: process.env.APPLICATION_NAME ?? 'payments-ledger',
});
// PROVIDER_URL: charge captured payments at this payment provider through ctx.step (unset: no call).
const providerUrl = process.env.PROVIDER_URL === '' ? undefined : process.env.PROVIDER_URL;
const consumer = createInboxConsumer({
  kafka: new Kafka({
    clientId: 'payments-ledger',
    brokers: required('KAFKA_BROKERS').split(','),
    logLevel: logLevel.NOTHING,
  }), // oncely logs what matters; kafkajs logs a fresh broker's transient coordinator errors as ERROR
  db: drizzle(pool, { schema }),
  groupId: required('GROUP_ID'),
  handlers: batch
    ? [paymentsBatchHandler(required('TOPIC'), { providerUrl })]
    : [paymentsHandler(required('TOPIC'), { providerUrl })],
  concurrency: 4,
  ...(lanes === undefined ? {} : { lanes }),
  handleSignals: true,
  // Logs go to stderr: stdout carries the outcome lines the demo reads.
  logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'warn' }, pino.destination(2)),
  // Short session timeouts so a killed member's partitions move on in seconds (demo only).
  consumer: { sessionTimeout: 6_000, heartbeatInterval: 1_000 },
  // With LEDGER_POSTED_TOPIC the handler publishes through the outbox: a relay in every process.
  ...(process.env.LEDGER_POSTED_TOPIC ? { relay: true } : {}),
});

const print = (line: object): boolean => process.stdout.write(`${JSON.stringify(line)}\n`);
consumer.on('message:processed', (e) => print({ outcome: 'processed', partition: e.partition, offset: e.offset }));
consumer.on('message:duplicate', (e) =>
  print({ outcome: 'duplicate', class: e.duplicateClass, partition: e.partition, offset: e.offset }),
);
consumer.on('message:dead-lettered', (e) =>
  print({ outcome: 'dead_lettered', reason: e.reason, partition: e.partition, offset: e.offset }),
);

try {
  await consumer.start();
} catch (error) {
  // Could not start (the broker or the database unreachable for longer than the retries):
  // exit non-zero and let the process manager start us again.
  process.stderr.write(`payments consumer could not start: ${String(error)}\n`);
  await pool.end();
  process.exit(1);
}
print({ outcome: 'started', pid: process.pid });
