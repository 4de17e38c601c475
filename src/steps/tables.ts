import { bigint, boolean, index, jsonb, primaryKey, text, timestamp } from 'drizzle-orm/pg-core';

import { oncelySchema } from '../inbox/tables.js';

/** `oncely.steps`: one row per completed step (docs/steps.md). Mirrors migrations/0005 and 0008. */
export const stepsTable = oncelySchema.table(
  'steps',
  {
    scope: text('scope').notNull(),
    ownerId: text('owner_id').notNull(),
    /** 0 for a message's steps; an HTTP request's: its key's generation. */
    generation: bigint('generation', { mode: 'bigint' }).notNull().default(0n),
    name: text('name').notNull(),
    result: jsonb('result').notNull(),
    status: text('status').$type<'completed' | 'failed'>().notNull().default('completed'),
    compensable: boolean('compensable').notNull().default(false),
    seq: bigint('seq', { mode: 'bigint' }).notNull().generatedAlwaysAsIdentity(),
    completedAt: timestamp('completed_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.scope, t.ownerId, t.generation, t.name] }),
    index('steps_completed_at_idx').on(t.completedAt),
  ],
);
