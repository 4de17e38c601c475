import { createServer } from 'node:http';

import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka } from 'kafkajs';
import { createInboxConsumer, defineHandler } from 'oncely';
import pg from 'pg';
import { Registry } from 'prom-client';
import { z } from 'zod';

import { charges } from './tables.js';

const provider = process.env.PROVIDER_URL ?? 'http://127.0.0.1:4000';

const orderPlaced = defineHandler({
  topic: 'orders',
  schema: z.object({ type: z.literal('order.placed'), orderId: z.string(), amountCents: z.int().positive() }),
  async handle(order, ctx) {
    // Called once per message: the result is recorded as soon as the call returns, and a retry
    // sends the provider the same idempotency key.
    const charge = await ctx.step('charge', async ({ idempotencyKey, signal }) => {
      const response = await fetch(`${provider}/charges`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
        body: JSON.stringify({ amountCents: order.amountCents }),
        signal,
      });
      if (!response.ok) throw new Error(`charge failed: ${response.status}`);
      return (await response.json()) as { id: string };
    });
    // Commits with the message's inbox row, or not at all.
    await ctx.tx.insert(charges).values({ orderId: order.orderId, chargeId: charge.id });
  },
});

const registry = new Registry();
const consumer = createInboxConsumer({
  kafka: new Kafka({ clientId: 'shop-worker', brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',') }),
  db: drizzle(new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 })),
  groupId: 'shop-worker',
  handlers: [orderPlaced],
  metrics: { registry },
  handleSignals: true, // SIGTERM/SIGINT: finish in-flight messages, commit, leave the group
});

// oncely fills the registry; serving it for Prometheus is yours.
createServer((_request, response) => {
  void registry.metrics().then((text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text));
}).listen(Number(process.env.METRICS_PORT ?? 9464), '127.0.0.1');

await consumer.start();
console.log('worker started');
