import { claimMessage, type ClaimRequest, type ClaimResult, recordOffset } from '../../inbox/claims.js';
import { type DeadLetterReason, insertDeadLetter, type StoredError } from '../../inbox/dead-letters.js';
import type { OpenTransaction } from '../../inbox/transaction.js';
import type { DeadLetterTopic } from '../../kafka/dead-letter-topic.js';
import type { ConsumedRecord } from '../../kafka/runner.js';
import { encodeHeaders } from '../../inbox/headers.js';
import { deadLetterOutboxId } from '../../outbox/message-id.js';
import { insertOutboxRow } from '../../outbox/store.js';

export interface DeadLetterTarget {
  /** The group whose resume point moves with a record that has no id. */
  readonly groupId: string;
  /** Dead letters are kept with the inbox they belong to. */
  readonly inboxScope: string;
  /** Where dead letters are also published, when configured. */
  readonly deadLetterTopic?: DeadLetterTopic | undefined;
}

export interface DeadLetterInput {
  readonly record: ConsumedRecord;
  readonly messageId: string | null;
  readonly reason: DeadLetterReason;
  readonly error: StoredError;
  readonly attempts: number;
  /** Store no headers: the fallback when the full dead letter could not be stored. */
  readonly withoutHeaders?: boolean;
}

/**
 * The same dead letter, cut to what can always be stored: the record's key and value (bytes), no
 * headers, and the error's name, code and message only. Used when the database refused the full one.
 */
export function minimalLetter(letter: DeadLetterInput): DeadLetterInput {
  const { name, message, code } = letter.error;
  return {
    ...letter,
    withoutHeaders: true,
    error: {
      name,
      message,
      ...(code === undefined ? {} : { code }),
      stored: 'shortened: the full error or the headers could not be stored',
    },
  };
}

/**
 * Stores a dead letter and, when a dead-letter topic is configured, writes its record to the
 * outbox — both inside the transaction that records the outcome. The relay publishes it after the
 * COMMIT: the topic gets every dead letter at least once, never one whose outcome was not
 * recorded, and a publish that cannot succeed waits in the outbox instead of blocking the partition.
 *
 * Returns false when this record (same group and coordinates) was dead-lettered before: a
 * redelivery or replay of an outcome already recorded, to be reported as a duplicate, not a new alert.
 */
export async function recordDeadLetter(
  target: DeadLetterTarget,
  t: OpenTransaction,
  letter: DeadLetterInput,
): Promise<boolean> {
  const { record } = letter;
  const inserted = await insertDeadLetter(t.client, {
    groupId: target.inboxScope,
    topic: record.topic,
    partition: record.partition,
    offset: record.offset,
    messageId: letter.messageId,
    key: record.key,
    value: record.value,
    headers: letter.withoutHeaders === true ? [] : encodeHeaders(record.headers),
    reason: letter.reason,
    error: letter.error,
    attempts: letter.attempts,
    recordTimestamp: new Date(Number(record.timestamp)),
  });
  // Already stored for this record (a redelivery after a lost offset commit): published then too.
  if (inserted === undefined) return false;
  const deadLetterTopic = target.deadLetterTopic;
  if (deadLetterTopic === undefined) return true;
  const out = deadLetterTopic.toRecord({ ...letter, groupId: target.groupId });
  await insertOutboxRow(t.client, {
    messageId: deadLetterOutboxId(target.inboxScope, record.topic, record.partition, record.offset),
    topic: out.topic,
    partition: out.partition,
    key: out.key,
    value: out.value,
    headers: encodeHeaders(out.headers),
    causationId: letter.messageId,
  });
  return true;
}

/**
 * Dead-letters a record whose id is valid: the dead letter claims the id like a success would, so
 * a record dead-lettered and then redelivered is a duplicate of its first outcome, not a second
 * dead letter. Returns the holder when the id was already taken. `claimWith`: how the id is
 * claimed (on lanes, without moving the partition's offset).
 */
export async function claimAndDeadLetter(
  target: DeadLetterTarget,
  t: OpenTransaction,
  claim: Omit<ClaimRequest, 'status' | 'attempts'>,
  letter: DeadLetterInput,
  claimWith: (client: OpenTransaction['client'], request: ClaimRequest) => Promise<ClaimResult> = claimMessage,
): Promise<ClaimResult> {
  const claimed = await claimWith(t.client, { ...claim, status: 'dead_lettered', attempts: letter.attempts });
  if (claimed.claimed) await recordDeadLetter(target, t, letter);
  return claimed;
}

/**
 * Dead-letters a record that has no valid id to claim; its partition offset moves on with it.
 * False when the record's dead letter was stored before (see {@link recordDeadLetter}).
 */
export async function deadLetterUnclaimable(
  target: DeadLetterTarget,
  t: OpenTransaction,
  nextOffset: string,
  payloadHash: Buffer,
  letter: DeadLetterInput,
): Promise<boolean> {
  const { record } = letter;
  // The dead letter and the resume point past it commit together; the record marks the resume
  // point like any other (see ResumeMark).
  await recordOffset(t.client, {
    groupId: target.groupId,
    topic: record.topic,
    partition: record.partition,
    nextOffset,
    previous: { payloadHash, timestamp: record.timestamp },
  });
  return recordDeadLetter(target, t, letter);
}
