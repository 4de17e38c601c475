import { OncelyError } from '../errors.js';
import type { RecordHeaders } from '../kafka/message-identity.js';
import { causalTraceHeaders } from '../tracing/trace-context.js';
import { derivedMessageId } from './message-id.js';
import { type OutboxMessage, publish, type PublishedEvent, type PublishTarget, TRACEPARENT_HEADER } from './publish.js';

/** The inbound message an event is published for. */
export interface Cause {
  readonly messageId: string;
  readonly message: { readonly headers: RecordHeaders };
}

/**
 * `ctx.publish` of a per-message handler: the n-th call (from 0) gets the message-id derived from
 * (inbox scope, inbound messageId, n) (see `derivedMessageId`), `causation-id` the inbound id, and the trace context of the active
 * span or the inbound `traceparent` (see `causalTraceHeaders`). A new context is made for every attempt, so a retried attempt (whose rows rolled back) numbers from 0
 * again and publishes the same ids.
 */
export function messagePublisher(
  tx: () => PublishTarget,
  scope: string,
  cause: Cause,
): (message: OutboxMessage) => Promise<PublishedEvent> {
  let n = 0;
  const traceparent = headerText(cause.message.headers, TRACEPARENT_HEADER);
  return (message) =>
    publish(tx(), message, {
      messageId: derivedMessageId(scope, cause.messageId, n++),
      causationId: cause.messageId,
      // Read at each publish: the handler may have made a span active meanwhile.
      ...causalTraceHeaders(traceparent),
    });
}

/**
 * `ctx.publish` of a batch handler: each event is published for one event of the batch
 * (`causedBy`), numbered per inbound event, so the ids do not depend on how the chunk was split.
 */
export function batchPublisher(
  tx: () => PublishTarget,
  scope: string,
): (message: OutboxMessage, options: { readonly causedBy: Cause }) => Promise<PublishedEvent> {
  const counters = new Map<string, number>();
  return (message, options) => {
    const cause = (options as { causedBy?: Cause } | undefined)?.causedBy;
    if (cause === undefined || typeof cause.messageId !== 'string') {
      return Promise.reject(
        new OncelyError(
          'ONCELY_INVALID_EVENT',
          'Cannot publish the event: in a batch handler pass the batch event it is published for, ' +
            '`ctx.publish(message, { causedBy: events[i] })`, so its message-id is derived from that event.',
        ),
      );
    }
    const n = counters.get(cause.messageId) ?? 0;
    counters.set(cause.messageId, n + 1);
    const traceparent = headerText(cause.message.headers, TRACEPARENT_HEADER);
    return publish(tx(), message, {
      messageId: derivedMessageId(scope, cause.messageId, n),
      causationId: cause.messageId,
      ...causalTraceHeaders(traceparent),
    });
  };
}

function headerText(headers: RecordHeaders, name: string): string | undefined {
  const raw = headers[name];
  const first = Array.isArray(raw) ? (raw as readonly (Buffer | string)[])[0] : (raw as Buffer | string | undefined);
  if (first === undefined) return undefined;
  return typeof first === 'string' ? first : first.toString('utf8');
}
