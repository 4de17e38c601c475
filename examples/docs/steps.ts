import { pgTable, text } from 'drizzle-orm/pg-core';
import { defineHandler } from 'oncely';
import { z } from 'zod';

const provider = process.env.PROVIDER_URL ?? 'https://api.provider.example';
const orderEvent = z.object({ orderId: z.string(), amountCents: z.int().positive() });
const orders = pgTable('orders', { orderId: text('order_id').primaryKey(), chargeId: text('charge_id').notNull() });

export const orderPlaced = defineHandler({
  topic: 'orders',
  schema: orderEvent,
  async handle(event, ctx) {
    const charge = await ctx.step(
      'charge',
      async ({ idempotencyKey, signal }) => {
        const response = await fetch(`${provider}/charges`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
          body: JSON.stringify({ amountCents: event.amountCents }),
          signal,
        });
        if (!response.ok) throw new Error(`charge failed: ${response.status}`);
        return (await response.json()) as { id: string };
      },
      {
        // Runs once if the message is finally dead-lettered.
        compensate: (done, { idempotencyKey, signal }) =>
          fetch(`${provider}/refunds`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
            body: JSON.stringify({ chargeId: done.id }),
            signal,
          }),
      },
    );
    await ctx.tx.insert(orders).values({ orderId: event.orderId, chargeId: charge.id });
  },
});
