import { sql } from 'drizzle-orm';
import { defineBatchHandler, defineHandler, NonRetriableError, type StepFunction } from 'oncely';
import { z } from 'zod';

import { accounts, ledgerEntries } from './schema.js';

/** The events the payments service publishes. Amounts are integer cents. */
export const paymentEvent = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('payment.captured'),
    paymentId: z.string().min(1),
    accountId: z.string().min(1),
    amountCents: z.int().positive(),
    currency: z.string().length(3),
  }),
  z.object({
    type: z.literal('payment.refunded'),
    paymentId: z.string().min(1),
    accountId: z.string().min(1),
    amountCents: z.int().positive(),
    currency: z.string().length(3),
  }),
]);

export type PaymentEvent = z.infer<typeof paymentEvent>;

/** Options of {@link paymentsHandler} and {@link paymentsBatchHandler}. */
export interface PaymentsHandlerOptions {
  /** Charge captured payments at this payment provider through `ctx.step`. Default: no provider call. */
  readonly providerUrl?: string;
}

/**
 * Charges a captured payment at the provider as a step: recorded once done, never called again for
 * this message, always with the same idempotency key (the provider dedupes a call made again after a
 * crash), and refunded if the message is finally dead-lettered.
 *
 * `step` is the step function of this event's message: `ctx.step` in a per-message handler, and
 * `ctx.step` bound to the event in a batch handler (see {@link paymentsBatchHandler}).
 */
async function chargeAtProvider(step: StepFunction, providerUrl: string, event: PaymentEvent): Promise<void> {
  const post = async (path: string, idempotencyKey: string, body: object, signal: AbortSignal): Promise<unknown> => {
    const response = await fetch(`${providerUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
      body: JSON.stringify(body),
      signal,
    });
    if (!response.ok) throw new Error(`provider ${path} answered ${response.status}`);
    return response.json();
  };
  const charge = (await step(
    'charge',
    ({ idempotencyKey, signal }) =>
      post(
        '/charges',
        idempotencyKey,
        { paymentId: event.paymentId, accountId: event.accountId, amountCents: event.amountCents },
        signal,
      ),
    {
      // Runs when the message is finally dead-lettered: the customer gets the money back.
      compensate: (done, { idempotencyKey, signal }) =>
        post('/refunds', idempotencyKey, { chargeId: (done as { id: string }).id }, signal),
    },
  )) as { id: string; review: boolean };
  // The charge is made (and recorded); a held one must not reach the ledger, and retrying cannot
  // release it: dead-letter now, which refunds it through the step's compensation.
  if (charge.review) throw new NonRetriableError(`charge ${charge.id} held for review by the provider`);
}

/**
 * When set, every applied payment also publishes one `ledger.posted` event to this topic through
 * the outbox (ctx.publish: in the same transaction, sent by a relay after the commit). Chaos sets it.
 */
const LEDGER_POSTED_TOPIC = process.env.LEDGER_POSTED_TOPIC || undefined;

/** The `ledger.posted` event: one per applied payment, keyed by account. Amount signed, in cents. */
export const ledgerPosted = z.object({
  paymentId: z.string().min(1),
  accountId: z.string().min(1),
  amountCents: z.int(),
  /** The payment event's message id (the outbox derives `<it>:0` as this event's own id). */
  sourceMessageId: z.string().min(1),
});

/**
 * Applies a payment event to the ledger: one ledger entry and the account's balance, both through
 * ctx.tx, so they commit together with the inbox row or not at all.
 */
export function paymentsHandler(topic: string, options: PaymentsHandlerOptions = {}) {
  return defineHandler({
    topic,
    schema: paymentEvent,
    async handle(event, ctx) {
      if (event.currency !== 'EUR') {
        // Retrying cannot make the currency right: dead-letter it now.
        throw new NonRetriableError(`unsupported currency ${event.currency}`);
      }
      if (options.providerUrl !== undefined && event.type === 'payment.captured') {
        await chargeAtProvider(ctx.step, options.providerUrl, event);
      }
      const signed = event.type === 'payment.captured' ? event.amountCents : -event.amountCents;
      await ctx.tx.insert(ledgerEntries).values({
        paymentId: event.paymentId,
        accountId: event.accountId,
        kind: event.type === 'payment.captured' ? 'capture' : 'refund',
        amountCents: signed,
        messageId: ctx.messageId,
      });
      await ctx.tx
        .insert(accounts)
        .values({ accountId: event.accountId, balanceCents: signed })
        .onConflictDoUpdate({
          target: accounts.accountId,
          set: { balanceCents: sql`${accounts.balanceCents} + ${signed}`, updatedAt: sql`now()` },
        });
      if (LEDGER_POSTED_TOPIC !== undefined)
        await ctx.publish({
          topic: LEDGER_POSTED_TOPIC,
          key: event.accountId,
          value: posted(event, signed, ctx.messageId),
        });
    },
  });
}

/**
 * The same ledger in batch mode: one INSERT for a chunk's ledger entries and one upsert per
 * account with the chunk's sum, all in the chunk's transaction. A chunk with an unsupported
 * currency fails as a whole; oncely splits it until that event is alone and dead-letters it.
 *
 * With `providerUrl`, each captured payment of the chunk is charged through a step of its own
 * event, after the whole chunk was validated (an invalid event fails the chunk before any charge
 * is made). A charge held for review fails the chunk the same way: oncely splits it, the other
 * events' charges are recorded steps and are not made again when their halves run, and the held
 * one is dead-lettered alone and refunded through its step's compensation.
 */
export function paymentsBatchHandler(topic: string, options: PaymentsHandlerOptions = {}) {
  return defineBatchHandler({
    topic,
    schema: paymentEvent,
    async handleBatch(events, ctx) {
      const entries = events.map(({ event, messageId }) => {
        if (event.currency !== 'EUR') throw new NonRetriableError(`unsupported currency ${event.currency}`);
        const signed = event.type === 'payment.captured' ? event.amountCents : -event.amountCents;
        const kind = event.type === 'payment.captured' ? ('capture' as const) : ('refund' as const);
        return { paymentId: event.paymentId, accountId: event.accountId, kind, amountCents: signed, messageId };
      });
      const { providerUrl } = options;
      if (providerUrl !== undefined)
        // One at a time, in offset order: the chunk's transaction is open meanwhile either way, and
        // a held charge stops the chunk before later events are charged in this attempt.
        for (const item of events) {
          if (item.event.type !== 'payment.captured') continue;
          await chargeAtProvider(
            (name, fn, stepOptions) => ctx.step(item, name, fn, stepOptions),
            providerUrl,
            item.event,
          );
        }
      await ctx.tx.insert(ledgerEntries).values(entries);
      const sums = new Map<string, number>();
      for (const entry of entries) sums.set(entry.accountId, (sums.get(entry.accountId) ?? 0) + entry.amountCents);
      await ctx.tx
        .insert(accounts)
        .values([...sums].map(([accountId, balanceCents]) => ({ accountId, balanceCents })))
        .onConflictDoUpdate({
          target: accounts.accountId,
          set: { balanceCents: sql`${accounts.balanceCents} + excluded.balance_cents`, updatedAt: sql`now()` },
        });
      if (LEDGER_POSTED_TOPIC !== undefined)
        for (const [i, item] of events.entries()) {
          const message = { topic: LEDGER_POSTED_TOPIC, key: item.event.accountId };
          await ctx.publish(
            { ...message, value: posted(item.event, entries[i]!.amountCents, item.messageId) },
            { causedBy: item },
          );
        }
    },
  });
}

function posted(event: PaymentEvent, signed: number, sourceMessageId: string): z.infer<typeof ledgerPosted> {
  return { paymentId: event.paymentId, accountId: event.accountId, amountCents: signed, sourceMessageId };
}
