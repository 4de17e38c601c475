import { drizzle } from 'drizzle-orm/node-postgres';
import Fastify from 'fastify';
import { Kafka } from 'kafkajs';
import { createOutboxRelay } from 'oncely';
import { idempotent } from 'oncely/fastify';
import pg from 'pg';
import { z } from 'zod';

import { orders } from './tables.js';

const kafka = new Kafka({ clientId: 'shop-api', brokers: (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',') });
// A request holds a connection for its transaction, and a second one while a step records:
// pool max ≥ 2 × the requests served at once.
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 20 });
const db = drizzle(pool);

const newOrder = z.object({ orderId: z.string(), customerId: z.string(), amountCents: z.int().positive() });

const app = Fastify();
app.post(
  '/orders',
  idempotent(
    // Whose key it is: a key never replays another caller's response. Use the authenticated caller.
    { db, scope: (request) => String(request.headers['x-api-key'] ?? 'anonymous') },
    async (request, ctx) => {
      const parsed = newOrder.safeParse(await request.json());
      if (!parsed.success) return Response.json({ error: parsed.error.issues }, { status: 400 });
      const order = parsed.data;
      // The order, the stored response and the event commit together, or none of them does.
      await ctx.tx.insert(orders).values(order);
      await ctx.publish({ topic: 'orders', key: order.orderId, value: { type: 'order.placed', ...order } });
      return Response.json({ orderId: order.orderId, status: 'placed' }, { status: 201 });
    },
  ),
);

// The relay sends committed outbox rows to Kafka. It runs here, beside the API that writes them;
// every replica may run one: one sends at a time, the others stand by and take over.
const relay = createOutboxRelay({ db, kafka });
await relay.start();
await app.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' });

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(
    signal,
    () =>
      void app
        .close()
        .then(() => relay.stop())
        .then(() => pool.end()),
  );
}
