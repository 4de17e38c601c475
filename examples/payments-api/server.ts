/**
 * The payments API: `POST /v1/payments` on Fastify, made idempotent with `oncely/fastify`.
 * A payment row (and, with `eventsTopic`, its `payment.captured` event through the outbox) commits
 * in the same transaction as the stored response: a retry with the same `Idempotency-Key` replays it instead
 * of charging again.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import Fastify, { type FastifyInstance } from 'fastify';
import type { AdmissionOptions, OncelyDatabase } from 'oncely';
import { idempotent } from 'oncely/fastify';
import { z } from 'zod';

import { apiPayments } from './schema.js';

const createPaymentBody = z.object({
  accountId: z.string().min(1),
  amountCents: z.int().positive(),
  currency: z.string().length(3),
});

export interface PaymentsApiOptions {
  readonly db: OncelyDatabase;
  /** How long "talking to the card processor" takes, in ms. Default 0. */
  readonly workMs?: number;
  /** Called each time the handler starts (the demo counts executions). */
  readonly onExecution?: () => void;
  /** Publish `payment.captured` to this topic through the outbox (the ledger consumer reads it). */
  readonly eventsTopic?: string;
  /** How many requests hold the pool at once and how long others wait (oncely's defaults otherwise). */
  readonly admission?: AdmissionOptions;
}

/** The API key of a request (`Authorization: Bearer <key>`), or undefined. */
function apiKeyOf(authorization: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S{1,255})$/.exec(authorization ?? '');
  return match?.[1];
}

export function buildPaymentsApi({
  db,
  workMs = 0,
  onExecution,
  eventsTopic,
  admission,
}: PaymentsApiOptions): FastifyInstance {
  const app = Fastify({ logger: false });

  // Authentication comes first: the API key is the idempotency scope, so one caller's key can
  // never replay another caller's payment.
  app.addHook('onRequest', async (request, reply) => {
    if (apiKeyOf(request.headers.authorization) === undefined) {
      await reply.code(401).send({ error: 'missing API key' });
    }
  });

  app.post(
    '/v1/payments',
    idempotent(
      { db, scope: (request) => apiKeyOf(request.headers.authorization) ?? '', ...(admission ? { admission } : {}) },
      async (request, ctx) => {
        onExecution?.();
        const parsed = createPaymentBody.safeParse(await request.json());
        if (!parsed.success) {
          // A returned 4xx is stored with the key and replayed: the same request stays invalid.
          return Response.json({ error: 'invalid payment', issues: parsed.error.issues }, { status: 400 });
        }
        const { accountId, amountCents, currency } = parsed.data;
        await sleep(workMs); // the card processor; its own idempotency belongs in ctx.step (DESIGN §10)
        const [payment] = await ctx.tx
          .insert(apiPayments)
          .values({
            idempotencyKey: ctx.key ?? null,
            apiKey: ctx.scope,
            accountId,
            amountCents,
            currency,
            status: 'captured',
          })
          .returning({ id: apiPayments.id, createdAt: apiPayments.createdAt });
        const id = `pay_${payment?.id ?? 0}`;
        // The event commits with the payment and the stored response, or not at all; its message-id
        // is derived from the key, so a request run again after a rollback publishes the same id.
        if (eventsTopic !== undefined) {
          const event = { type: 'payment.captured', paymentId: id, accountId, amountCents, currency };
          await ctx.publish({ topic: eventsTopic, key: accountId, value: event });
        }
        return Response.json(
          { id, accountId, amountCents, currency, status: 'captured', createdAt: payment?.createdAt },
          { status: 201, headers: { location: `/v1/payments/${id}` } },
        );
      },
    ),
  );
  return app;
}
