import { OncelyError } from '../../errors.js';
import type { StoredError } from '../../inbox/dead-letters.js';
import { deriveMessageId, type MessageIdSource, payloadFingerprintLatin1 } from '../../kafka/message-identity.js';
import type { ConsumedRecord } from '../../kafka/runner.js';

import type { PipelineContext } from '../context.js';
import { type Decoded, decodeForId, decodeNow, toMessageInfo } from './decode.js';
import { describeError } from './error-record.js';
import type { MessageCoordinates } from '../../events/index.js';
import type { AnyHandlerDefinition, MessageInfo } from '../handler.js';

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
  /** Whether the verdict is known without decoding (`decide()` decodes otherwise). */
  readonly decided: boolean;
  /** The verdict known without decoding; read it only when `decided` (it throws otherwise). */
  readonly verdict: Verdict;
  /** Decodes and validates (awaiting the user's async code) on first call; call it only once the message is claimed. */
  decide(): Promise<Verdict>;
  /** {@link decide}, without a promise when the verdict is known or decoding needs none. */
  decideNow(): Verdict | Promise<Verdict>;
}

/**
 * Fingerprints, size-checks, decodes, validates and identifies a record. Everything here is
 * deterministic: it is done once per record, and its failures are never retried.
 */
export async function prepareRecord(
  pipeline: PipelineContext,
  handler: AnyHandlerDefinition,
  record: ConsumedRecord,
  firstSeenAt: Date = new Date(),
): Promise<PreparedRecord> {
  return prepare(pipeline, handler, record, firstSeenAt);
}

/**
 * {@link prepareRecord} without a promise when none is needed (the handler has no messageId()):
 * a commit group prepares its members one by one, and most never need to wait.
 */
export function prepareRecordNow(
  pipeline: PipelineContext,
  handler: AnyHandlerDefinition,
  record: ConsumedRecord,
  firstSeenAt: Date,
): PreparedRecord | Promise<PreparedRecord> {
  return prepare(pipeline, handler, record, firstSeenAt);
}

/**
 * {@link prepareRecord} for a chunk of one partition's records: they were first seen together, so
 * they share one `firstSeenAt`.
 */
export async function prepareRecords(
  pipeline: PipelineContext,
  handler: AnyHandlerDefinition,
  records: readonly ConsumedRecord[],
): Promise<PreparedRecord[]> {
  const firstSeenAt = new Date();
  const prepared = new Array<PreparedRecord>(records.length);
  for (let i = 0; i < records.length; i++) {
    const p = prepare(pipeline, handler, records[i]!, firstSeenAt);
    prepared[i] = p instanceof Prepared ? p : await p;
  }
  return prepared;
}

/**
 * A prepared record. A class, not an object literal with getters and closures: the lazy parts
 * (the handler's view of the record, the coordinates, the next offset, the verdict) are
 * prototype getters, so a record costs one small object until something asks for more — on the
 * hot path of a replay nothing does.
 */
class Prepared implements PreparedRecord {
  readonly record: ConsumedRecord;
  /** The payload's fingerprint as a `latin1` string (a chunk's claim sends them all as one buffer). */
  readonly payloadDigest: string;
  readonly firstSeenAt: Date;
  readonly messageId: string | null;
  readonly idSource: MessageIdSource;
  #payloadHash: Buffer | undefined;
  readonly #groupId: string;
  readonly #handler: AnyHandlerDefinition;
  #verdict: Verdict | undefined;
  #deciding: Promise<Verdict> | undefined;
  #info: MessageInfo | undefined;
  #where: MessageCoordinates | undefined;

  constructor(
    groupId: string,
    handler: AnyHandlerDefinition,
    record: ConsumedRecord,
    payloadDigest: string,
    firstSeenAt: Date,
    messageId: string | null,
    idSource: MessageIdSource,
    verdict: Verdict | undefined,
    info: MessageInfo | undefined,
  ) {
    this.record = record;
    this.payloadDigest = payloadDigest;
    this.#payloadHash = undefined;
    this.firstSeenAt = firstSeenAt;
    this.messageId = messageId;
    this.idSource = idSource;
    this.#groupId = groupId;
    this.#handler = handler;
    this.#verdict = verdict;
    this.#deciding = undefined;
    this.#info = info;
    this.#where = undefined;
  }

  get payloadHash(): Buffer {
    return (this.#payloadHash ??= Buffer.from(this.payloadDigest, 'latin1'));
  }

  get info(): MessageInfo {
    return (this.#info ??= toMessageInfo(this.record));
  }

  get nextOffset(): string {
    return offsetAfter(this.record.offset);
  }

  get where(): MessageCoordinates {
    const { record } = this;
    return (this.#where ??= {
      groupId: this.#groupId,
      topic: record.topic,
      partition: record.partition,
      offset: record.offset,
      messageId: this.messageId,
    });
  }

  get decided(): boolean {
    return this.#verdict !== undefined;
  }

  get verdict(): Verdict {
    if (this.#verdict === undefined) {
      throw new Error(
        `internal error: the verdict of ${this.record.topic}/${this.record.partition}/${this.record.offset} was read before decide()`,
      );
    }
    return this.#verdict;
  }

  decide(): Promise<Verdict> {
    const verdict = this.decideNow();
    return verdict instanceof Promise ? verdict : Promise.resolve(verdict);
  }

  // Runs for every claimed message: without a promise when the decoding needs none (the default
  // JSON decoding, and a schema of zod's own steps), in one promise otherwise.
  decideNow(): Verdict | Promise<Verdict> {
    if (this.#verdict !== undefined) return this.#verdict;
    if (this.#deciding !== undefined) return this.#deciding;
    const decoded = decodeNow(this.#handler, this.info);
    if (decoded instanceof Promise) return (this.#deciding = decoded.then((d) => this.#keep(d)));
    return this.#keep(decoded);
  }

  #keep(decoded: Decoded): Verdict {
    const verdict = verdictOf(decoded);
    this.#verdict = verdict;
    return verdict;
  }
}

/** The payload fingerprints of `prepared`, concatenated: 32 bytes each, in order. */
export function concatDigests(prepared: readonly PreparedRecord[]): Buffer {
  let digests = '';
  for (const p of prepared) digests += p instanceof Prepared ? p.payloadDigest : p.payloadHash.toString('latin1');
  return Buffer.from(digests, 'latin1');
}

/**
 * `offset + 1` as a decimal string. Offsets are 64-bit; below 2^53 a double holds them exactly,
 * which saves a BigInt per record in every partition that has not written nine quadrillion records.
 */
export function offsetAfter(offset: string): string {
  const n = Number(offset);
  return n < Number.MAX_SAFE_INTEGER ? String(n + 1) : (BigInt(offset) + 1n).toString();
}

// A tombstone with the 'dead-letter' policy fails decoding, with a message saying how to accept it.
function verdictOf(decoded: Decoded): Verdict {
  return decoded.ok
    ? { kind: 'apply', event: decoded.event }
    : { kind: 'invalid', error: describeError(decoded.error) };
}

/**
 * Synchronous unless the handler has a messageId(): then the record is decoded and the id awaited
 * first. A chunk of records without one is thus prepared without a microtask per record.
 */
function prepare(
  pipeline: PipelineContext,
  handler: AnyHandlerDefinition,
  record: ConsumedRecord,
  firstSeenAt: Date,
): Prepared | Promise<Prepared> {
  const payloadDigest = payloadFingerprintLatin1(record.value);
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
  if (verdict === undefined && handler.messageId !== undefined) {
    const info = toMessageInfo(record);
    // Awaited here, before any transaction: messageId() may be async, and a rejection is this
    // record's verdict (invalid_message_id), never an unhandled rejection.
    return decodeForId(handler, info).then(({ decoded, fromHandler }) =>
      identify(pipeline, handler, record, payloadDigest, firstSeenAt, verdictOf(decoded), info, fromHandler),
    );
  }
  return identify(pipeline, handler, record, payloadDigest, firstSeenAt, verdict, undefined, undefined);
}

/** Derives the record's id (the handler's own, when it gave one) and makes the prepared record. */
function identify(
  pipeline: PipelineContext,
  handler: AnyHandlerDefinition,
  record: ConsumedRecord,
  payloadDigest: string,
  firstSeenAt: Date,
  decided: Verdict | undefined,
  info: MessageInfo | undefined,
  fromHandler: (() => unknown) | undefined,
): Prepared {
  let verdict = decided;
  const identity = deriveMessageId(record, fromHandler);
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
  return new Prepared(
    pipeline.groupId,
    handler,
    record,
    payloadDigest,
    firstSeenAt,
    messageId,
    identity.source,
    verdict,
    info,
  );
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
