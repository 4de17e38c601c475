import { bigint, bigserial, integer, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import type { z } from 'zod';

import { defineHandler, type HandlerContext } from '../../src/index.js';

// No vitest imports here: crash-test child processes load this module outside the test runner.

/** drizzle view of the tests' effect table (see settings.ts). */
export const effects = pgTable('effects', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  messageId: text('message_id').notNull(),
  topic: text('topic').notNull(),
  partition: integer('partition').notNull(),
  offset: bigint('offset', { mode: 'number' }).notNull(),
  consumer: text('consumer'),
  payload: jsonb('payload'),
  appliedAt: timestamp('applied_at', { withTimezone: true }).notNull().defaultNow(),
});

/** A handler that writes one `effects` row per message through ctx.tx, then runs `after`. */
export function effectHandler(
  topic: string,
  after?: (ctx: HandlerContext, event: unknown) => Promise<void> | void,
  schema?: z.ZodType<unknown>,
) {
  return defineHandler({
    topic,
    ...(schema === undefined ? {} : { schema }),
    async handle(event, ctx) {
      await ctx.tx.insert(effects).values({
        messageId: ctx.messageId,
        topic: ctx.message.topic,
        partition: ctx.message.partition,
        offset: Number(ctx.message.offset),
        payload: event,
      });
      await after?.(ctx, event);
    },
  });
}
