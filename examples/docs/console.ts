import express from 'express';
import { Kafka } from 'kafkajs';
import { consoleMiddleware } from 'oncely/console'; // Fastify: app.register(consolePlugin, { prefix, ...options })
import pg from 'pg';

import { paymentsHandler } from '../payments/handler.js';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
const kafka = new Kafka({
  clientId: 'ops-console',
  brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(','),
});

const app = express();
app.use(
  '/ops/oncely',
  consoleMiddleware({
    db: pool,
    kafka,
    // Your app's own sign-in: here the user your SSO proxy vouches for. No user, no page (401).
    // The name is recorded with every change made through the console.
    identify: (req) => req.get('x-forwarded-email'),
    write: true, // retry, discard, replay runs; without it the console is read-only
    handlers: [paymentsHandler('payments')], // the consumer's handlers: dead letters are retried with them
    // payloads: true would show message values and stored response bodies (personal data)
  }),
);
app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1');
