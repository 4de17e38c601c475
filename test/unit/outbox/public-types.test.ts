import { drizzle } from 'drizzle-orm/node-postgres';
import { pgTable, text } from 'drizzle-orm/pg-core';
import pg from 'pg';
import { describe, expectTypeOf, it } from 'vitest';

import {
  type BatchContext,
  defineBatchHandler,
  type HandlerContext,
  type OutboxMessage,
  publish,
  type PublishedEvent,
} from '../../../src/index.js';

// Compile-time checks of the outbox's public API: `npm run typecheck` fails when they break.
describe('outbox public types', () => {
  it('takes any drizzle node-postgres transaction or a pg client, and returns the fixed message-id', () => {
    const payouts = pgTable('payouts', { id: text('id').primaryKey() });
    const db = drizzle(new pg.Pool(), { schema: { payouts } });
    const inTransaction = () =>
      db.transaction(async (tx) => {
        await tx.insert(payouts).values({ id: 'po-1' });
        return publish(tx, { topic: 'payouts', key: 'acct-1', value: { id: 'po-1' } }, { messageId: 'req-7:0' });
      });
    expectTypeOf(inTransaction).returns.resolves.toEqualTypeOf<PublishedEvent>();
    const withClient = (client: pg.PoolClient) => publish(client, { topic: 't', value: Buffer.from('raw') });
    expectTypeOf(withClient).returns.resolves.toEqualTypeOf<PublishedEvent>();
    expectTypeOf<PublishedEvent['messageId']>().toBeString();
  });

  it('gives handlers ctx.publish, and batch handlers one that names the event it is published for', () => {
    expectTypeOf<HandlerContext['publish']>().parameters.toEqualTypeOf<[OutboxMessage]>();
    defineBatchHandler({
      topic: 'payments',
      async handleBatch(events, ctx) {
        expectTypeOf(ctx).toEqualTypeOf<BatchContext>();
        for (const event of events) await ctx.publish({ topic: 'ledger.posted', value: 1 }, { causedBy: event });
        // @ts-expect-error a batch publish must say which event caused it
        await ctx.publish({ topic: 'ledger.posted', value: 1 });
      },
    });
  });
});
