/**
 * What becomes of a record once its claim is known: the part of a record's outcome that a message
 * alone, a message of a commit group and a record of a chunk share. A duplicate is classified
 * (never decoded); a claimed message is decoded and validated only now; an invalid one is
 * dead-lettered in the claim's transaction and a tombstone to skip is recorded as skipped. What is
 * left is for the handler.
 */
import type { ClaimResult, InboxEntry } from '../../inbox/claims.js';
import type { StoredError } from '../../inbox/dead-letters.js';
import type { OpenTransaction } from '../../inbox/transaction.js';

import type { Outcome, PipelineContext } from '../context.js';
import { recordDeadLetter } from './dead-letter.js';
import { resolveDuplicate } from './duplicates.js';
import { describeError } from './error-record.js';
import type { PreparedRecord, Verdict } from './prepare.js';

export type AfterClaim =
  /** Recorded without the handler: a duplicate, a key reuse, an invalid payload, a skipped tombstone. */
  | { readonly kind: 'settled'; readonly outcome: Outcome }
  /** Claimed, valid: the handler's turn. */
  | { readonly kind: 'handle'; readonly verdict: Extract<Verdict, { kind: 'apply' | 'tombstone' }> };

/**
 * Claimed rows whose message turned out otherwise, corrected by the caller — at once for a single
 * record, in one statement for a chunk (the rows were all claimed as `processed`).
 */
export interface Reclassified {
  /** Invalid once decoded: the claimed row becomes the dead letter's inbox row. */
  readonly deadLettered: string[];
  /** Tombstones skipped: recorded with 0 attempts. */
  readonly skipped: string[];
}

/**
 * `locate` names the claimed row for `reclassified` (its location, or its message id); `skipClaimed`
 * says whether a skipped tombstone's row was claimed with attempts to correct.
 */
export async function afterClaim(
  pipeline: PipelineContext,
  t: OpenTransaction,
  prepared: PreparedRecord,
  messageId: string,
  claimed: ClaimResult,
  reclassified: Reclassified,
  options: { readonly locate: string; readonly skipClaimed: boolean },
): Promise<AfterClaim> {
  const { record } = prepared;
  if (!claimed.claimed) {
    const outcome = await resolveDuplicate(pipeline, t, record, messageId, prepared.payloadHash, claimed.existing);
    return { kind: 'settled', outcome };
  }
  // Decoded only now, once claimed (a duplicate never is); the user's async decoder, schema
  // refinements and transforms are awaited, and a rejection comes back as an `invalid` verdict.
  const verdict = await prepared.decide();
  switch (verdict.kind) {
    case 'apply':
    case 'tombstone':
      return { kind: 'handle', verdict };
    case 'skip':
      if (options.skipClaimed) reclassified.skipped.push(options.locate);
      return { kind: 'settled', outcome: SKIPPED };
    case 'invalid': {
      // Deterministic: no retry. The claimed row becomes the dead letter's inbox row.
      const error = verdict.error;
      reclassified.deadLettered.push(options.locate);
      await recordDeadLetter(pipeline, t, { record, messageId, reason: 'invalid_payload', error, attempts: 0 });
      return { kind: 'settled', outcome: { kind: 'dead_lettered', reason: 'invalid_payload', error, attempts: 0 } };
    }
    case 'unclaimable':
      // A record without a valid id is dead-lettered without a claim, before it gets here.
      throw new Error(`internal error: ${record.topic}/${record.partition}/${record.offset} has no id but was claimed`);
  }
}

const SKIPPED: Outcome = { kind: 'skipped' };

/** Claimed by a statement that claimed many ids, which does not send back where its rows went. */
export const CLAIMED: ClaimResult = { claimed: true, row: null };

/**
 * A record's claim as made by a statement that claimed many ids (a chunk's, a commit group's):
 * ours unless its offset conflicted, then the holder's. Such a claim does not send back where its
 * rows went: they are found by id (`reclassifyChunkClaims`).
 */
export function claimAmong(
  prepared: PreparedRecord,
  messageId: string,
  conflicts: ReadonlySet<string>,
  holders: ReadonlyMap<string, InboxEntry>,
): ClaimResult {
  if (!conflicts.has(prepared.record.offset)) return CLAIMED;
  return { claimed: false, existing: holderOf(holders, messageId) };
}

/** The holder of an id whose claim conflicted, as read after the claim: it must exist. */
export function holderOf(holders: ReadonlyMap<string, InboxEntry>, messageId: string): InboxEntry {
  const existing = holders.get(messageId);
  // Deleted between the conflict and the read (a retention purge): rare and harmless, the
  // transaction rolls back and runs again.
  if (existing === undefined)
    throw new Error(`message id ${messageId} conflicted but its inbox row vanished; retrying`);
  return existing;
}

/** Why a record without a usable id is dead-lettered (`invalid_message_id`). */
export function invalidIdError(prepared: PreparedRecord): StoredError {
  const verdict = prepared.verdict;
  return verdict.kind === 'unclaimable' ? verdict.error : describeError(new Error('invalid message id'));
}
