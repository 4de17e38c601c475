import { propagation, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it } from 'vitest';

import { effectHandler, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_SPAN_ID = '00f067aa0ba902b7';
const traceparent = `00-${TRACE_ID}-${PARENT_SPAN_ID}-01`;

function tracing() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { exporter, provider };
}

afterEach(() => {
  propagation.disable();
});

describe('OpenTelemetry spans', () => {
  it.each([
    ['read straight from the traceparent header', false],
    ['through the globally registered W3C propagator', true],
  ])(
    'makes one span per message with its outcome, duplicate class and attempts, child of the producer’s context %s',
    async (_, globalPropagator) => {
      if (globalPropagator) propagation.setGlobalPropagator(new W3CTraceContextPropagator());
      const { exporter, provider } = tracing();
      const topic = await env.createTopic('tracing');
      const body = JSON.stringify({ n: 1 });
      await env.produce(topic, [
        { value: body, headers: { 'message-id': 'pay-1', traceparent } },
        { value: body, headers: { 'message-id': 'pay-1', traceparent } }, // a republish
        { value: 'not json', headers: { 'message-id': 'poison' } },
      ]);
      const consumer = env.consumer({
        groupId: env.groupId('tracing'),
        handlers: [effectHandler(topic)],
        tracing: { tracerProvider: provider },
      });
      const outcomes = recordOutcomes(consumer);
      await consumer.start();
      await waitFor('three outcomes', () => outcomes.total === 3);
      await waitFor('three spans', () => exporter.getFinishedSpans().length === 3);

      const [processed, duplicate, deadLettered] = [...exporter.getFinishedSpans()].sort(
        (a, b) => Number(a.attributes['messaging.kafka.offset']) - Number(b.attributes['messaging.kafka.offset']),
      );
      expect(processed?.name).toBe(`process ${topic}`);
      expect(processed?.kind).toBe(SpanKind.CONSUMER);
      expect(processed?.spanContext().traceId).toBe(TRACE_ID);
      expect(processed?.parentSpanContext?.spanId).toBe(PARENT_SPAN_ID);
      expect(processed?.attributes).toMatchObject({
        'oncely.outcome': 'processed',
        'oncely.attempts': 1,
        'messaging.message.id': 'pay-1',
        'messaging.destination.name': topic,
      });
      expect(duplicate?.spanContext().traceId).toBe(TRACE_ID);
      expect(duplicate?.attributes).toMatchObject({
        'oncely.outcome': 'duplicate',
        'oncely.duplicate_class': 'republish',
      });
      // No traceparent: a trace of its own.
      expect(deadLettered?.parentSpanContext).toBeUndefined();
      expect(deadLettered?.spanContext().traceId).not.toBe(TRACE_ID);
      expect(deadLettered?.attributes).toMatchObject({
        'oncely.outcome': 'dead_lettered',
        'oncely.dead_letter.reason': 'invalid_payload',
      });
      expect(deadLettered?.status.code).toBe(SpanStatusCode.ERROR);
      await provider.shutdown();
    },
  );
});
