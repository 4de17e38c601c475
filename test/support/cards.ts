import { pgTable, text } from 'drizzle-orm/pg-core';

/** A table of card numbers: the payload values that must never reach logs or dead letters. */
export const cards = pgTable('cards', { number: text('number').primaryKey() });
