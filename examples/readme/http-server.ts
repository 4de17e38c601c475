import { drizzle } from 'drizzle-orm/node-postgres';
import Fastify from 'fastify';
import { migrate } from 'oncely';
import { idempotent } from 'oncely/fastify'; // or 'oncely/express'; `idempotent` from 'oncely' is the Web Request/Response core
import pg from 'pg';

import { apiPayments } from '../payments-api/schema.js';

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
      // ctx.tx is a drizzle transaction: the payment commits with the stored response, or neither does.
      const [payment] = await ctx.tx
        .insert(apiPayments)
        .values({
          idempotencyKey: ctx.key,
          apiKey: ctx.scope,
          accountId,
          amountCents,
          currency: 'EUR',
          status: 'captured',
        })
        .returning({ id: apiPayments.id });
      return Response.json({ id: payment?.id, amountCents }, { status: 201 });
    },
  ),
);
