import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka } from 'kafkajs';
import pg from 'pg';
import { describe, expectTypeOf, it } from 'vitest';
import { z } from 'zod';

import {
  createInboxConsumer,
  defineBatchHandler,
  defineHandler,
  type HandlerContext,
  type InboxConsumer,
  type MessageInfo,
  type OncelyTransaction,
} from '../../src/index.js';

// Compile-time checks of the public API: `npm run typecheck` fails when they break.
describe('public types', () => {
  it('infers the event type from the schema', () => {
    defineHandler({
      topic: 'payments',
      schema: z.object({ paymentId: z.string(), amountCents: z.number() }),
      handle(event, ctx) {
        expectTypeOf(event).toEqualTypeOf<{ paymentId: string; amountCents: number }>();
        expectTypeOf(ctx).toEqualTypeOf<HandlerContext>();
      },
      messageId(event, message) {
        expectTypeOf(event.paymentId).toBeString();
        expectTypeOf(message).toEqualTypeOf<MessageInfo>();
        return event.paymentId;
      },
    });
  });

  it('hands the handler unknown without a schema', () => {
    defineHandler({
      topic: 't',
      handle(event) {
        expectTypeOf(event).toBeUnknown();
      },
    });
  });

  it('gives ctx a drizzle transaction and the message coordinates', () => {
    expectTypeOf<HandlerContext['tx']>().toEqualTypeOf<OncelyTransaction>();
    expectTypeOf<OncelyTransaction>().toHaveProperty('insert');
    expectTypeOf<OncelyTransaction>().toHaveProperty('transaction');
    expectTypeOf<MessageInfo['offset']>().toBeString();
    expectTypeOf<HandlerContext['attempt']>().toBeNumber();
  });

  it('requires kafka, db, groupId and handlers, and types event listeners', () => {
    const pool = new pg.Pool();
    const options = { kafka: new Kafka({ brokers: ['x:1'] }), db: drizzle(pool), groupId: 'g', handlers: [] };
    expectTypeOf(createInboxConsumer).toBeCallableWith(options);
    // @ts-expect-error groupId is required
    expectTypeOf(createInboxConsumer).toBeCallableWith({ kafka: options.kafka, db: options.db, handlers: [] });
    // Never called: only its types are checked.
    const listen = (consumer: InboxConsumer): void => {
      consumer.on('message:duplicate', (event) => {
        expectTypeOf(event.duplicateClass).toEqualTypeOf<'redelivery' | 'republish'>();
      });
      consumer.on('message:dead-lettered', (event) => {
        expectTypeOf(event.reason).toEqualTypeOf<
          'invalid_payload' | 'invalid_message_id' | 'key_reuse' | 'handler_failed'
        >();
      });
    };
    expectTypeOf(listen).toBeFunction();
    void pool.end();
  });

  it('refuses a consumer that mixes per-message and batch handlers at compile time', () => {
    const pool = new pg.Pool();
    const base = { kafka: new Kafka({ brokers: ['x:1'] }), db: drizzle(pool), groupId: 'g' };
    const perMessage = defineHandler({ topic: 'a', handle: () => undefined });
    const batch = defineBatchHandler({ topic: 'b', handleBatch: () => undefined });
    expectTypeOf(createInboxConsumer).toBeCallableWith({ ...base, handlers: [perMessage] });
    expectTypeOf(createInboxConsumer).toBeCallableWith({ ...base, handlers: [batch] });
    // @ts-expect-error one consumer runs one mode: all defineHandler() or all defineBatchHandler()
    expectTypeOf(createInboxConsumer).toBeCallableWith({ ...base, handlers: [perMessage, batch] });
    void pool.end();
  });
});
