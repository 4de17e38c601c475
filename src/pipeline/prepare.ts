import { OncelyError } from '../errors.js';
import type { StoredError } from '../inbox/dead-letters.js';
import { deriveMessageId, type MessageIdSource, payloadFingerprint } from '../kafka/message-identity.js';
import type { ConsumedRecord } from '../kafka/runner.js';
import { decode, toMessageInfo } from './decode.js';
import { describeError } from './error-record.js';
import type { MessageCoordinates } from './events.js';
import type { AnyHandlerDefinition, MessageInfo } from './handler.js';
import type { PipelineContext } from './outcomes.js';

/** What is to become of a record, decided before any transaction starts. */
export type Verdict =
  /** No valid id: dead-lettered (`invalid_message_id`) without a claim. */
  | { readonly kind: 'unclaimable'; readonly error: StoredError }
  /** Cannot be applied (oversize, undecodable, schema-invalid, unwanted tombstone): dead-lettered under its id. */
  | { readonly kind: 'invalid'; readonly error: StoredError }
  /** A tombstone to record and skip. */
  | { readonly kind: 'skip' }
  /** A tombstone for the handler's `tombstone` function. */
  | { readonly kind: 'tombstone' }
  /** A valid event for the handler. */
  | { readonly kind: 'apply'; readonly event: unknown };

export interface PreparedRecord {
  readonly record: ConsumedRecord;
  readonly info: MessageInfo;
  readonly payloadHash: Buffer;
  /** The partition's next offset once this record's outcome is recorded. */
  readonly nextOffset: string;
  readonly firstSeenAt: Date;
  /** Null when the id is invalid (then the verdict is `unclaimable`). */
  readonly messageId: string | null;
  /** Where the id came from (`coordinates` ids deduplicate redeliveries only). */
  readonly idSource: MessageIdSource;
  readonly where: MessageCoordinates;
  /** Whether the verdict is known without decoding (reading `verdict` decodes otherwise). */
  readonly decided: boolean;
  /** Decoded and validated on first read; read it only once the message is claimed. */
  readonly verdict: Verdict;
}

/**
 * Fingerprints, size-checks, decodes, validates and identifies a record. Everything here is
 * deterministic: it is done once per record, and its failures are never retried.
 */
export function prepareRecord(
  pipeline: PipelineContext,
  handler: AnyHandlerDefinition,
  record: ConsumedRecord,
): PreparedRecord {
  const firstSeenAt = new Date();
  const info = toMessageInfo(record);
  const payloadHash = payloadFingerprint(record.value);
  const tombstonePolicy = handler.tombstone ?? 'dead-letter';
  const size = record.value?.length ?? 0;
  const oversize = pipeline.maxPayloadBytes !== undefined && size > pipeline.maxPayloadBytes;
  const isTombstone = record.value === null;

  // What needs no decoding is decided now; decoding and validation wait until the verdict is
  // read, which the pipeline does only after the claim: a duplicate (every message of a replay)
  // is never decoded. A handler with messageId(event) needs the event for the id: decoded now.
  let verdict: Verdict | undefined;
  if (oversize) {
    verdict = {
      kind: 'invalid',
      error: describeError(
        new OncelyError(
          'ONCELY_INVALID_PAYLOAD',
          `The message value is ${size} bytes; the limit is ${pipeline.maxPayloadBytes} (maxPayloadBytes).`,
        ),
      ),
    };
  } else if (isTombstone && tombstonePolicy === 'skip') {
    verdict = { kind: 'skip' };
  } else if (isTombstone && typeof tombstonePolicy === 'function') {
    verdict = { kind: 'tombstone' };
  }
  // A tombstone with the 'dead-letter' policy fails decoding, with a message saying how to accept it.
  const decideByDecoding = (): Verdict => {
    const decoded = decode(handler, info);
    return decoded.ok
      ? { kind: 'apply', event: decoded.event }
      : { kind: 'invalid', error: describeError(decoded.error) };
  };
  if (verdict === undefined && handler.messageId !== undefined) verdict = decideByDecoding();

  const decodedEvent = verdict?.kind === 'apply' ? verdict.event : undefined;
  const identity = deriveMessageId(
    record,
    verdict?.kind === 'apply' && handler.messageId !== undefined
      ? () => handler.messageId?.(decodedEvent, info)
      : undefined,
  );
  let messageId: string | null = identity.ok ? identity.id : null;
  if (identity.source === 'coordinates' && !pipeline.requireMessageId) warnCoordinateIds(pipeline, record);
  const idProblem = !identity.ok
    ? `The message id from ${identity.source} is invalid: ${identity.problem}. Fix the producer, or give the handler a messageId(event) function.`
    : pipeline.requireMessageId && identity.source === 'coordinates'
      ? 'The message has no id (requireMessageId is on): set the message-id or idempotency-key header, or give the handler a messageId(event) function.'
      : undefined;
  if (idProblem !== undefined) {
    messageId = null;
    verdict = { kind: 'unclaimable', error: describeError(new OncelyError('ONCELY_INVALID_MESSAGE_ID', idProblem)) };
  }

  return {
    record,
    info,
    payloadHash,
    nextOffset: (BigInt(record.offset) + 1n).toString(),
    firstSeenAt,
    messageId,
    idSource: identity.source,
    where: {
      groupId: pipeline.groupId,
      topic: record.topic,
      partition: record.partition,
      offset: record.offset,
      messageId,
    },
    get decided() {
      return verdict !== undefined;
    },
    get verdict() {
      verdict ??= decideByDecoding();
      return verdict;
    },
  };
}

/**
 * Once per partition: its messages carry no id of their own, so only a redelivery of the same
 * record is recognised — a producer that publishes an event again would have it applied twice.
 */
function warnCoordinateIds(pipeline: PipelineContext, record: ConsumedRecord): void {
  const seen = pipeline.warnedCoordinateIds;
  const key = `${record.topic}\u0000${record.partition}`;
  if (seen === undefined || seen.has(key)) return;
  seen.add(key);
  pipeline.logger.warn(
    { topic: record.topic, partition: record.partition, offset: record.offset },
    'messages on this partition have no id of their own (no message-id or idempotency-key header, no messageId()): ' +
      'they are deduplicated by Kafka coordinates only, which catches redeliveries but not an event published twice. ' +
      'Have producers set a message-id header, and set requireMessageId: true once they all do.',
  );
}
