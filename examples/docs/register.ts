import { pgTable, text } from 'drizzle-orm/pg-core';

export const accounts = pgTable('accounts', { id: text('id').primaryKey(), owner: text('owner') });
export const schema = { accounts };

declare module 'oncely' {
  interface Register {
    schema: typeof schema;
  }
}
