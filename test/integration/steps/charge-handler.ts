/** The handler the step tests share: charge in a step (refund as its compensation), then write an effect. */
import { defineHandler, type HandlerContext } from '../../../src/index.js';
import { effects } from '../../support/effects.js';
import { callProvider } from '../../support/payment-provider.js';

// No vitest imports here: the crash test's child process loads this module.

export interface Charge {
  readonly id: string;
  readonly amountCents: number;
}

export function chargeHandler(
  topic: string,
  providerUrl: string,
  after?: (ctx: HandlerContext, charge: Charge) => Promise<void> | void,
) {
  return defineHandler({
    topic,
    async handle(event, ctx) {
      const charge = await ctx.step(
        'charge',
        ({ idempotencyKey, signal }) =>
          callProvider<Charge>(providerUrl, '/charges', { amountCents: 1250 }, { idempotencyKey, signal }),
        {
          compensate: (done, { idempotencyKey }) =>
            callProvider(providerUrl, '/refunds', { chargeId: done.id }, { idempotencyKey }),
        },
      );
      await ctx.tx.insert(effects).values({
        messageId: ctx.messageId,
        topic: ctx.message.topic,
        partition: ctx.message.partition,
        offset: Number(ctx.message.offset),
        payload: { event, charge },
      });
      await after?.(ctx, charge);
    },
  });
}

/** Two charges, each refunded as its compensation; then the handler always fails (it is dead-lettered). */
export function twoChargesThenFail(topic: string, providerUrl: string) {
  return defineHandler({
    topic,
    async handle(_event, ctx) {
      for (const name of ['charge-a', 'charge-b']) {
        await ctx.step(
          name,
          ({ idempotencyKey, signal }) =>
            callProvider<Charge>(providerUrl, '/charges', { amountCents: 500 }, { idempotencyKey, signal }),
          {
            compensate: (done, { idempotencyKey, signal }) =>
              callProvider(providerUrl, '/refunds', { chargeId: done.id }, { idempotencyKey, signal }),
          },
        );
      }
      throw new Error('the order cannot be booked');
    },
  });
}
