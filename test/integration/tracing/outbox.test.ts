import { context, createTraceState, propagation, ROOT_CONTEXT, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { drizzle } from 'drizzle-orm/node-postgres';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { defineHandler, publish } from '../../../src/index.js';
import { AsyncLocalContextManager } from '../../support/otel-context.js';
import { recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';
import { derivedMessageId } from '../../../src/outbox/message-id.js';

const env = useTestEnvironment();
let exporter: InMemorySpanExporter;
let provider: BasicTracerProvider;

// What an application's OpenTelemetry SDK sets up: a context manager and the W3C propagator.
beforeEach(() => {
  exporter = new InMemorySpanExporter();
  provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  context.setGlobalContextManager(new AsyncLocalContextManager());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
});
afterEach(async () => {
  context.disable();
  propagation.disable();
  await provider.shutdown();
});

const headerOf = (headers: Readonly<Record<string, unknown>>, name: string): string | undefined => {
  const value = headers[name];
  return Buffer.isBuffer(value) || typeof value === 'string' ? value.toString() : undefined;
};

describe('trace context through the outbox', () => {
  it('carries the trace across two hops: the downstream consumer’s span is in the upstream message’s trace', async () => {
    const tracer = provider.getTracer('test');
    const inTopic = await env.createTopic('trace-in');
    const outTopic = await env.createTopic('trace-out');
    // The producer of the inbound message: its span's context goes in the record's traceparent.
    const checkout = tracer.startSpan('checkout');
    const carrier: Record<string, string> = {};
    propagation.inject(trace.setSpan(ROOT_CONTEXT, checkout), carrier);
    checkout.end();
    await env.produce(inTopic, [
      { value: JSON.stringify({ cents: 5 }), headers: { 'message-id': 'pay-1', traceparent: carrier.traceparent } },
    ]);

    let ledgerSpanId = '';
    const upstreamGroup = env.groupId('trace-a');
    const upstream = env.consumer({
      groupId: upstreamGroup,
      tracing: { tracerProvider: provider },
      relay: { pollIntervalMs: 200 },
      handlers: [
        defineHandler({
          topic: inTopic,
          async handle(event, ctx) {
            // No span active: the event carries the inbound traceparent.
            await ctx.publish({ topic: outTopic, key: 'acct-1', value: { n: 0 } });
            // A span the handler makes under the message's context: the event's parent is that span.
            const parent = propagation.extract(ROOT_CONTEXT, ctx.message.headers, {
              keys: (c) => Object.keys(c),
              get: (c, k) => headerOf(c, k),
            });
            await tracer.startActiveSpan('post ledger entry', {}, parent, async (span) => {
              ledgerSpanId = span.spanContext().spanId;
              await ctx.publish({ topic: outTopic, key: 'acct-1', value: { n: 1 } });
              span.end();
            });
            // An unrelated root span active: the message's own trace wins.
            await tracer.startActiveSpan('cache refresh', {}, ROOT_CONTEXT, async (span) => {
              await ctx.publish({ topic: outTopic, key: 'acct-1', value: { n: 2, event } });
              span.end();
            });
          },
        }),
      ],
    });
    const downstream = env.consumer({
      groupId: env.groupId('trace-b'),
      tracing: { tracerProvider: provider },
      handlers: [defineHandler({ topic: outTopic, handle: () => undefined })],
    });
    const processed = recordOutcomes(downstream);
    await upstream.start();
    await downstream.start();
    await waitFor('three events processed downstream', () => processed.processed.length === 3);

    const spans = exporter.getFinishedSpans();
    const traceId = checkout.spanContext().traceId;
    const upstreamSpan = spans.find((s) => s.name === `process ${inTopic}`);
    expect(upstreamSpan?.spanContext().traceId).toBe(traceId);
    const downstreamSpan = (id: string) =>
      spans.find((s) => s.name === `process ${outTopic}` && s.attributes['messaging.message.id'] === id);
    const [id0, id1, id2] = [0, 1, 2].map((n) => derivedMessageId(upstreamGroup, 'pay-1', n));
    for (const id of [id0, id1, id2].map((i) => i ?? '')) {
      expect(downstreamSpan(id)?.spanContext().traceId, id).toBe(traceId);
    }
    expect(downstreamSpan(id0 ?? '')?.parentSpanContext?.spanId).toBe(checkout.spanContext().spanId);
    expect(downstreamSpan(id1 ?? '')?.parentSpanContext?.spanId).toBe(ledgerSpanId);
    expect(downstreamSpan(id2 ?? '')?.parentSpanContext?.spanId).toBe(checkout.spanContext().spanId);
  });

  it('writes the active span’s traceparent and tracestate on events published outside a consumer, unless one is given', async () => {
    const tracer = provider.getTracer('test');
    const db = drizzle(env.pool);
    const stored = async (messageId: string) => {
      const { rows } = await env.pool.query<{ headers: { key: string; value: string }[] }>(
        'SELECT headers FROM oncely.outbox WHERE message_id = $1',
        [messageId],
      );
      return Object.fromEntries((rows[0]?.headers ?? []).map((h) => [h.key, h.value]));
    };
    // The request came with a trace context (a tracestate included): the span made for it inherits both.
    const incoming = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: 1,
      traceState: createTraceState('vendor=abc'),
      isRemote: true,
    });
    await tracer.startActiveSpan('POST /v1/payouts', {}, incoming, async (span) => {
      await db.transaction(async (tx) => {
        await publish(tx, { topic: 'payouts', value: { n: 1 } }, { messageId: 'http-1' });
        await publish(tx, { topic: 'payouts', value: { n: 2 } }, { messageId: 'http-2', traceparent: '00-aa-bb-01' });
      });
      const { traceId, spanId } = span.spanContext();
      expect(await stored('http-1')).toMatchObject({
        traceparent: `00-${traceId}-${spanId}-01`,
        tracestate: 'vendor=abc',
      });
      span.end();
    });
    expect(await stored('http-2')).toMatchObject({ traceparent: '00-aa-bb-01' });
    expect((await stored('http-2')).tracestate).toBeUndefined();
    // No span active: no trace context is made up.
    await db.transaction((tx) => publish(tx, { topic: 'payouts', value: { n: 3 } }, { messageId: 'http-3' }));
    expect((await stored('http-3')).traceparent).toBeUndefined();
  });
});
