import { drizzle } from 'drizzle-orm/node-postgres';
import { bigserial, integer, pgTable, text } from 'drizzle-orm/pg-core';
import Fastify from 'fastify';
import { migrate } from 'oncely';
import { idempotent } from 'oncely/fastify'; // or 'oncely/express'; `idempotent` from 'oncely' is the Web Request/Response core
import pg from 'pg';

const payments = pgTable('card_payments', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  accountId: text('account_id').notNull(),
  amountCents: integer('amount_cents').notNull(),
  chargeId: text('charge_id').notNull(),
});
const provider = process.env.PROVIDER_URL ?? 'https://api.provider.example';

// A request holds its transaction's connection and, while it records a step, a second one:
// pool max ≥ 2 × concurrent requests (+ what consumers on the same pool need).
const db = drizzle(new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 20 }));
await migrate(db);

const app = Fastify();
app.post(
  '/v1/payments',
  idempotent(
    // The scope says whose key it is: a key never replays another caller's response.
    { db, scope: (request) => String(request.headers['x-api-key'] ?? 'anonymous') },
    async (request, ctx) => {
      const { accountId, amountCents } = (await request.json()) as { accountId: string; amountCents: number };
      // Called once per key: a retry after a crash or a rollback gets the recorded charge, and the
      // provider gets the same idempotency key on every call.
      const charge = await ctx.step('charge', async ({ idempotencyKey, signal }) => {
        const response = await fetch(`${provider}/charges`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
          body: JSON.stringify({ amountCents }),
          signal,
        });
        if (!response.ok) throw new Error(`charge failed: ${response.status}`);
        return (await response.json()) as { id: string };
      });
      // ctx.tx is a drizzle transaction: the payment commits with the stored response, or neither does.
      const [payment] = await ctx.tx
        .insert(payments)
        .values({ accountId, amountCents, chargeId: charge.id })
        .returning({ id: payments.id });
      // Through the outbox in the same transaction: sent to Kafka by a relay once this commits.
      await ctx.publish({
        topic: 'payments',
        key: accountId,
        value: { type: 'payment.captured', accountId, amountCents },
      });
      return Response.json({ id: payment?.id, chargeId: charge.id }, { status: 201 });
    },
  ),
);
await app.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' });
