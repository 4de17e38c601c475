import { integer, pgSchema, text } from 'drizzle-orm/pg-core';

// The service's own tables, in a schema of their own. setup.ts creates them with SHOP_DDL; in a
// real service your migration tool does (oncely's tables live apart, in schema "oncely").
export const shop = pgSchema('shop');

export const orders = shop.table('orders', {
  orderId: text('order_id').primaryKey(),
  customerId: text('customer_id').notNull(),
  amountCents: integer('amount_cents').notNull(),
});

export const charges = shop.table('charges', {
  orderId: text('order_id').primaryKey(),
  chargeId: text('charge_id').notNull(),
});

export const SHOP_DDL = `
  CREATE SCHEMA IF NOT EXISTS shop;
  CREATE TABLE IF NOT EXISTS shop.orders (
    order_id text PRIMARY KEY, customer_id text NOT NULL, amount_cents integer NOT NULL);
  CREATE TABLE IF NOT EXISTS shop.charges (order_id text PRIMARY KEY, charge_id text NOT NULL);`;
