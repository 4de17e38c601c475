import { createServer } from 'node:http';

import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka } from 'kafkajs';
import { createInboxConsumer, defineHandler } from 'oncely';
import pg from 'pg';
import { Registry } from 'prom-client';

const kafka = new Kafka({ clientId: 'ledger', brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',') });
const db = drizzle(new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 }));
const handlers = [defineHandler({ topic: 'payments', handle: () => undefined })];

const registry = new Registry();
const consumer = createInboxConsumer({
  kafka,
  db,
  groupId: 'ledger-metrics',
  handlers,
  metrics: { registry },
  handleSignals: true,
});
createServer((_req, res) => {
  void registry.metrics().then((text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text));
}).listen(Number(process.env.METRICS_PORT ?? 9464));
await consumer.start();
