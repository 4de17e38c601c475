/**
 * The trace context an outbox event carries: the active OpenTelemetry span's, written as a W3C
 * `traceparent` (and `tracestate`) header, so the downstream consumer's span joins the trace.
 * `@opentelemetry/api` is an optional peer: without it (or without an SDK, whose absence makes
 * every span a no-op) there is no active span and nothing is written.
 */
import { createRequire } from 'node:module';

import type * as OtelApi from '@opentelemetry/api';

/** A span context as W3C trace context headers. */
export interface TraceHeaders {
  readonly traceparent: string;
  readonly tracestate?: string | undefined;
}

// Looked up once: null when the package is not installed (then never looked up again).
let api: typeof OtelApi | null | undefined;

function otel(): typeof OtelApi | undefined {
  if (api === undefined) {
    try {
      api = createRequire(import.meta.url)('@opentelemetry/api') as typeof OtelApi;
    } catch {
      api = null;
    }
  }
  return api ?? undefined;
}

/** The active span's context as headers, or undefined when no valid span is active. */
export function activeTraceHeaders(): TraceHeaders | undefined {
  const o = otel();
  if (o === undefined) return undefined;
  const span = o.trace.getSpanContext(o.context.active());
  if (span === undefined || !o.trace.isSpanContextValid(span)) return undefined;
  const flags = (span.traceFlags & 0xff).toString(16).padStart(2, '0');
  const state = span.traceState?.serialize();
  return {
    traceparent: `00-${span.traceId}-${span.spanId}-${flags}`,
    tracestate: state === undefined || state.length === 0 ? undefined : state,
  };
}

const TRACEPARENT = /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/;

/** The trace id of a `traceparent` header value; undefined when it is not one. */
export function traceIdOf(traceparent: string): string | undefined {
  return TRACEPARENT.exec(traceparent.trim().toLowerCase())?.[1];
}

/**
 * The context an event published for an inbound message carries. The active span when it lies
 * in the message's own trace (a span the handler made under the message's context: the more
 * precise parent) or when the message carried no context; otherwise the message's `traceparent`,
 * so an unrelated span that happens to be active (a batch-wide span of an instrumentation, a root
 * span the handler started) cannot cut the producer → consumer → downstream chain.
 */
export function causalTraceHeaders(inboundTraceparent: string | undefined): TraceHeaders | undefined {
  const active = activeTraceHeaders();
  if (inboundTraceparent === undefined) return active;
  if (active !== undefined && traceIdOf(active.traceparent) === traceIdOf(inboundTraceparent)) return active;
  return { traceparent: inboundTraceparent };
}
