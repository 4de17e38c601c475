/** A message id already recorded: redelivery, republish, or a producer's key reuse. */
import { OncelyError } from '../../errors.js';
import type { InboxEntry } from '../../inbox/claims.js';
import type { StoredError } from '../../inbox/dead-letters.js';
import type { OpenTransaction } from '../../inbox/transaction.js';
import type { ConsumedRecord } from '../../kafka/runner.js';

import type { Outcome, PipelineContext } from '../context.js';
import { recordDeadLetter } from './dead-letter.js';
import { describeError } from './error-record.js';
import type { DuplicateClass } from '../../events/index.js';

/**
 * The id is already recorded. Same coordinates: the record came again (a crash or rebalance
 * before the offset commit). Same bytes elsewhere: it was published again. Other bytes: the
 * producer reused the id for another payload — a bug that is dead-lettered, never skipped.
 */
export async function resolveDuplicate(
  pipeline: PipelineContext,
  t: OpenTransaction,
  record: ConsumedRecord,
  messageId: string,
  payloadHash: Buffer,
  existing: InboxEntry,
): Promise<Outcome> {
  const duplicate = duplicateOf(record, payloadHash, existing);
  if (duplicate !== undefined) return duplicate;
  const error = keyReuseError(messageId, payloadHash, existing);
  const stored = await recordDeadLetter(pipeline, t, { record, messageId, reason: 'key_reuse', error, attempts: 0 });
  return stored
    ? { kind: 'dead_lettered', reason: 'key_reuse', error, attempts: 0 }
    : deadLetteredBefore(record, payloadHash);
}

/**
 * The outcome of a duplicate that needs nothing written (a redelivery or a republish), decided
 * without a promise: a replay meets one per record. Undefined for a key reuse, which
 * {@link resolveDuplicate} dead-letters.
 */
export function duplicateOf(record: ConsumedRecord, payloadHash: Buffer, existing: InboxEntry): Outcome | undefined {
  const duplicateClass = classifyDuplicate(record, payloadHash, existing);
  return duplicateClass === 'key_reuse' ? undefined : { kind: 'duplicate', duplicateClass, original: existing };
}

/**
 * The record's own dead letter was stored before (it was replayed or redelivered): the outcome is
 * already recorded, so this is a duplicate of it — a redelivery — and not a second alert.
 */
export function deadLetteredBefore(record: ConsumedRecord, payloadHash: Buffer): Outcome {
  const { topic, partition, offset } = record;
  return {
    kind: 'duplicate',
    duplicateClass: 'redelivery',
    original: { topic, partition, offset, payloadHash, status: 'dead_lettered', processedAt: null },
  };
}

/** The error stored with a key-reuse dead letter: both fingerprints and where the id was first seen. */
function keyReuseError(messageId: string, payloadHash: Buffer, existing: InboxEntry): StoredError {
  return {
    ...describeError(
      new OncelyError(
        'ONCELY_KEY_REUSE',
        `Message id "${messageId}" was first seen at ${existing.topic}/${existing.partition}/${existing.offset} ` +
          'with a different payload. A producer reused the id for another event; give every event its own id.',
      ),
    ),
    firstPayloadHash: existing.payloadHash.toString('hex'),
    payloadHash: payloadHash.toString('hex'),
    first: { topic: existing.topic, partition: existing.partition, offset: existing.offset, status: existing.status },
  };
}

function classifyDuplicate(
  record: { readonly topic: string; readonly partition: number; readonly offset: string },
  payloadHash: Buffer,
  existing: InboxEntry,
): DuplicateClass | 'key_reuse' {
  if (!payloadHash.equals(existing.payloadHash)) return 'key_reuse';
  const sameCoordinates =
    existing.topic === record.topic && existing.partition === record.partition && existing.offset === record.offset;
  return sameCoordinates ? 'redelivery' : 'republish';
}
