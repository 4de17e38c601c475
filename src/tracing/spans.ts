/**
 * OpenTelemetry spans fed from a consumer's event hub: one span per message with its recorded
 * outcome, child of the trace context the producer put in the record's `traceparent` header.
 * `@opentelemetry/api` is an optional peer dependency, loaded only when `tracing` is enabled; with
 * no SDK registered its tracer is a no-op.
 */
import { createRequire } from 'node:module';

import type * as OtelApi from '@opentelemetry/api';

import { OncelyError } from '../errors.js';
import type { RecordHeaders } from '../kafka/message-identity.js';
import type { EventHub, MessageCoordinates, OutcomeDetails } from '../events/index.js';

/** The `tracing` option of `createInboxConsumer()` (`true`: the global tracer provider). */
export interface TracingOptions {
  /** Where spans go. Default: the global provider (`trace.getTracerProvider()`), set by your OTel SDK. */
  readonly tracerProvider?: OtelApi.TracerProvider;
}

/** Span attributes oncely sets besides OpenTelemetry's messaging conventions. */
export const SPAN_ATTRIBUTES = {
  outcome: 'oncely.outcome',
  duplicateClass: 'oncely.duplicate_class',
  attempts: 'oncely.attempts',
  reason: 'oncely.dead_letter.reason',
} as const;

function loadApi(): typeof OtelApi {
  try {
    return createRequire(import.meta.url)('@opentelemetry/api') as typeof OtelApi;
  } catch (error) {
    throw new OncelyError(
      'ONCELY_CONFIG',
      'Invalid option `tracing`: it needs the @opentelemetry/api package, which is not installed. Run `npm install @opentelemetry/api`.',
      { cause: error, context: { option: 'tracing' } },
    );
  }
}

const TRACEPARENT = /^([\da-f]{2})-([\da-f]{32})-([\da-f]{16})-([\da-f]{2})$/;

function headerText(headers: RecordHeaders, name: string): string | undefined {
  const value = headers[name];
  const first: Buffer | string | undefined = typeof value === 'string' || Buffer.isBuffer(value) ? value : value?.[0];
  if (first === undefined) return undefined;
  return typeof first === 'string' ? first : first.toString('utf8');
}

/**
 * The producer's context: through the globally registered propagator when there is one (your SDK
 * sets it), else read straight from the W3C `traceparent` / `tracestate` headers, so a consumer's
 * span joins the producer's trace even before any propagator is registered.
 */
function parentContext(api: typeof OtelApi, headers: RecordHeaders): OtelApi.Context {
  const getter: OtelApi.TextMapGetter<RecordHeaders> = {
    keys: (carrier) => Object.keys(carrier),
    get: (carrier, key) => headerText(carrier, key),
  };
  const extracted = api.propagation.extract(api.ROOT_CONTEXT, headers, getter);
  if (api.trace.getSpanContext(extracted) !== undefined) return extracted;
  const match = TRACEPARENT.exec(headerText(headers, 'traceparent')?.trim().toLowerCase() ?? '');
  if (match === null || match[1] === 'ff') return api.ROOT_CONTEXT;
  const [, , traceId = '', spanId = '', flags = '00'] = match;
  const spanContext: OtelApi.SpanContext = {
    traceId,
    spanId,
    traceFlags: Number.parseInt(flags, 16) & 1,
    isRemote: true,
  };
  const state = headerText(headers, 'tracestate');
  if (state !== undefined && state.length > 0) spanContext.traceState = api.createTraceState(state);
  return api.trace.isSpanContextValid(spanContext)
    ? api.trace.setSpanContext(api.ROOT_CONTEXT, spanContext)
    : api.ROOT_CONTEXT;
}

/**
 * Emits one CONSUMER span per message once its outcome is committed, spanning from its first
 * attempt to that commit. The handler's own spans are not nested under it (the span is made from
 * the outcome event); they share the producer's trace only if the handler extracts it itself.
 */
export function attachTracing(options: true | TracingOptions, input: { groupId: string; events: EventHub }): void {
  const api = loadApi();
  const provider = (options === true ? undefined : options.tracerProvider) ?? api.trace.getTracerProvider();
  const tracer = provider.getTracer('oncely');
  const { events, groupId } = input;

  const record = (
    e: MessageCoordinates & OutcomeDetails,
    attributes: OtelApi.Attributes,
    error?: { readonly message: string },
  ): void => {
    const end = Date.now();
    const span = tracer.startSpan(
      `process ${e.topic}`,
      {
        kind: api.SpanKind.CONSUMER,
        startTime: end - e.durationMs,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.operation.type': 'process',
          'messaging.destination.name': e.topic,
          'messaging.destination.partition.id': String(e.partition),
          'messaging.kafka.offset': Number(e.offset),
          'messaging.consumer.group.name': groupId,
          ...(e.messageId === null ? {} : { 'messaging.message.id': e.messageId }),
          ...attributes,
        },
      },
      parentContext(api, e.headers),
    );
    if (error !== undefined) span.setStatus({ code: api.SpanStatusCode.ERROR, message: error.message });
    span.end(end);
  };

  events.on('message:processed', (e) => {
    record(e, { [SPAN_ATTRIBUTES.outcome]: 'processed', [SPAN_ATTRIBUTES.attempts]: e.attempts });
  });
  events.on('message:duplicate', (e) => {
    record(e, { [SPAN_ATTRIBUTES.outcome]: 'duplicate', [SPAN_ATTRIBUTES.duplicateClass]: e.duplicateClass });
  });
  events.on('message:dead-lettered', (e) => {
    record(
      e,
      {
        [SPAN_ATTRIBUTES.outcome]: 'dead_lettered',
        [SPAN_ATTRIBUTES.reason]: e.reason,
        [SPAN_ATTRIBUTES.attempts]: e.attempts,
        ...(e.reason === 'key_reuse' ? { [SPAN_ATTRIBUTES.duplicateClass]: 'key_reuse' } : {}),
      },
      { message: `dead-lettered (${e.reason})` },
    );
  });
  events.on('message:skipped', (e) => {
    record(e, { [SPAN_ATTRIBUTES.outcome]: 'skipped', [SPAN_ATTRIBUTES.reason]: e.reason });
  });
}
