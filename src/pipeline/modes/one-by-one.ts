import { performance } from 'node:perf_hooks';

import {
  claimMessage,
  type ClaimRequest,
  type ClaimResult,
  reclassifyChunkClaims,
  reclassifyClaims,
} from '../../inbox/claims.js';
import type { DeadLetterReason, StoredError } from '../../inbox/dead-letters.js';
import type { OpenTransaction } from '../../inbox/transaction.js';
import type { ConsumedRecord } from '../../kafka/runner.js';

import { afterClaim, invalidIdError, type Reclassified } from '../record/after-claim.js';
import { announce, locate } from '../record/announce.js';
import type { Outcome, PartitionControl, PipelineContext } from '../context.js';
import {
  claimAndDeadLetter,
  type DeadLetterInput,
  deadLetterUnclaimable,
  minimalLetter,
  recordDeadLetter,
} from '../record/dead-letter.js';
import { claimUnordered } from '../../inbox/claim-unordered.js';
import { deadLetteredBefore, resolveDuplicate } from '../record/duplicates.js';
import { describeError, redactError } from '../record/error-record.js';
import type { HandlerContext, HandlerDefinition } from '../handler.js';
import { type PreparedRecord, prepareRecord } from '../record/prepare.js';
import { classifyAttemptFailure, FailureBudget, type FailureKind, HandlerFailure } from '../retry.js';
import { MessageContext, runBounded } from '../record/run-handler.js';
import { compensateSteps, MessageSteps } from '../record/steps.js';
import { untilCommitted, waitHeartbeating } from '../record/waiting.js';

/**
 * Takes one record to exactly one recorded outcome (docs/guarantees.md, "The processing transaction"):
 * claim the id, decode and validate, run the handler in the claim's transaction, commit — or
 * classify the duplicate, or dead-letter. Returns once the outcome is committed; the caller may
 * then let Kafka's offset pass the record. Returns `abandoned` when the consumer stops or loses the
 * partition mid-way and `paused` when the partition must wait: nothing was committed for the
 * record then, and it will be delivered again.
 */
export async function processRecord(
  pipeline: PipelineContext,
  handler: HandlerDefinition,
  record: ConsumedRecord,
  control: PartitionControl,
  earlier?: EarlierAttempt,
): Promise<Outcome> {
  const started = performance.now();
  const prepared = await prepareRecord(pipeline, handler, record);
  const outcome = await recordOutcome(pipeline, handler, prepared, control, earlier);
  announce(pipeline, prepared.where, outcome, performance.now() - started, record);
  return outcome;
}

/**
 * The record's first attempt, made in a commit group that then rolled back: its failure counts as
 * that attempt (a message gets `retry.attempts` handler calls in all, grouped or not), and its
 * steps carry over, so a dead letter can compensate what that attempt did.
 */
export interface EarlierAttempt {
  readonly failure: unknown;
  readonly steps: MessageSteps;
}

async function recordOutcome(
  pipeline: PipelineContext,
  handler: HandlerDefinition,
  prepared: PreparedRecord,
  control: PartitionControl,
  earlier: EarlierAttempt | undefined,
): Promise<Outcome> {
  const { messageId, where } = prepared;
  if (messageId === null) {
    // Without a valid id there is nothing to claim: the dead letter (one per record, by its
    // coordinates) is the recorded outcome, committed with the partition's next offset.
    return deadLetter(pipeline, control, prepared, 'invalid_message_id', invalidIdError(prepared), 0);
  }
  const claim = claimFor(pipeline, prepared, messageId);
  if (prepared.decided && prepared.verdict.kind === 'invalid') {
    // Known invalid without a claim (oversize, or undecodable for messageId(event)): decoding and
    // validation are deterministic, retrying cannot make the payload valid.
    return deadLetter(pipeline, control, prepared, 'invalid_payload', prepared.verdict.error, 0);
  }
  const skipping = prepared.decided && prepared.verdict.kind === 'skip';
  // The message's ctx.step across its attempts (made lazily: nothing is read unless a step runs).
  const steps = earlier?.steps ?? new MessageSteps(pipeline.pool, pipeline.inboxScope, messageId);

  const budget = new FailureBudget(pipeline.retry);
  let failure: unknown = earlier?.failure;
  for (;;) {
    const attempt = budget.attempts + 1;
    if (failure === undefined) {
      const tried = await attemptAlone(pipeline, handler, prepared, control, {
        messageId,
        attempt: skipping ? 0 : attempt,
        steps,
        claim: (t, request) => claimWith(control)(t.client, { ...claim, ...request }),
      });
      if (tried.ok) return tried.outcome;
      failure = tried.failure;
    }

    const { error, kind } = classifyAttemptFailure(failure);
    failure = undefined;
    const next = budget.next(kind);
    if (!next.retry) {
      return giveUp(pipeline, prepared, messageId, control, steps, describeError(error), budget.attempts);
    }
    noteRetry(pipeline, where, error, kind, budget.attempts, next);
    // Waiting heartbeats the group: a long backoff must not get this member evicted and the
    // partition handed to another member while this one still works on it.
    if (!(await waitHeartbeating(next.delayMs, control))) return { kind: 'abandoned' };
  }
}

/**
 * One attempt at a message in a transaction of its own. Committed when it returns `ok`: the
 * handler's writes, the inbox row and the partition's next offset are durable together.
 */
async function attemptAlone(
  pipeline: PipelineContext,
  handler: HandlerDefinition,
  prepared: PreparedRecord,
  control: PartitionControl,
  attempt: Omit<RecordAttempt, 'claim'> & {
    readonly claim: (t: OpenTransaction, request: Pick<ClaimRequest, 'status' | 'attempts'>) => Promise<ClaimResult>;
  },
): Promise<{ readonly ok: true; readonly outcome: Outcome } | { readonly ok: false; readonly failure: unknown }> {
  const began = performance.now();
  let handlerMs = -1;
  try {
    const outcome = await control.transactions.run(async (t): Promise<Outcome> => {
      const applied = await applyRecord(pipeline, handler, prepared, t, control, {
        ...attempt,
        claim: (request) => attempt.claim(t, request),
      });
      // On lanes the claim moved no offset: the partition's watermark is recorded last.
      await control.lane?.recordResumePoint(t, [prepared.record]);
      handlerMs = applied.handlerMs;
      return applied.outcome;
    });
    if (handlerMs >= 0) {
      const { groupId, topic, partition } = prepared.where;
      const durationMs = performance.now() - began;
      pipeline.events.emit('transaction:committed', () => ({
        groupId,
        topic,
        partition,
        messages: 1,
        durationMs,
        handlerMs,
      }));
    }
    return { ok: true, outcome };
  } catch (failure) {
    return { ok: false, failure };
  }
}

/** Out of attempts, or retrying cannot help: the partition pauses, or the message is dead-lettered. */
async function giveUp(
  pipeline: PipelineContext,
  prepared: PreparedRecord,
  messageId: string,
  control: PartitionControl,
  steps: MessageSteps,
  stored: StoredError,
  attempts: number,
): Promise<Outcome> {
  if (pipeline.onExhausted === 'pause') {
    // Order matters more than progress here: record nothing, keep the offset where it is,
    // and let the partition wait for resume() (the message is then retried from attempt 1).
    return { kind: 'paused', messageId, error: stored, attempts };
  }
  // Record the failure so the partition moves on. The handler's writes were rolled back with
  // each attempt; only the dead letter remains — and the external effects of its completed
  // steps, which are compensated first (steps.ts).
  const withCompensation = await compensateSteps(pipeline, control, steps, prepared.where, stored);
  if (withCompensation === undefined) return { kind: 'abandoned' };
  return deadLetter(pipeline, control, prepared, 'handler_failed', withCompensation, attempts);
}

/** Says that the message is tried again, and why: its own failure (counted) or the database's. */
function noteRetry(
  pipeline: PipelineContext,
  where: PreparedRecord['where'],
  error: unknown,
  kind: FailureKind,
  attempts: number,
  next: { readonly counted: boolean; readonly delayMs: number },
): void {
  if (next.counted) {
    pipeline.logger.warn(
      { ...locate(where), err: redactError(error), attempt: attempts, delayMs: next.delayMs },
      'handler failed; retrying',
    );
    pipeline.events.emit('message:retrying', () => ({ ...where, attempt: attempts, delayMs: next.delayMs, error }));
    return;
  }
  // The database failed (or lost a race), not the message: the transaction rolled back (or died
  // with its connection), so nothing of this attempt remains. No attempt is used up.
  pipeline.logger.warn(
    { ...locate(where), err: redactError(error), delayMs: next.delayMs, failure: kind },
    kind === 'transient' ? 'database unavailable; retrying the message' : 'transaction conflict; retrying the message',
  );
}

/** How {@link applyRecord} claims: with the partition's offset (alone) or without (in a group). */
export interface RecordAttempt {
  readonly messageId: string;
  /** Stored with the claim and given to the handler as `ctx.attempt` (0 for a tombstone to skip). */
  readonly attempt: number;
  readonly steps: MessageSteps;
  readonly claim: (request: Pick<ClaimRequest, 'status' | 'attempts'>) => Promise<ClaimResult>;
}

/**
 * One record's outcome inside an open transaction — the part a message alone and a message of a
 * commit group share: claim the id; classify a duplicate (never decoded); decode and validate the
 * claimed message; run the handler in the claim's transaction. A handler failure is thrown as a
 * {@link HandlerFailure}; nothing is committed here. `handlerMs` is -1 when no handler ran.
 */
export async function applyRecord(
  pipeline: PipelineContext,
  handler: HandlerDefinition,
  prepared: PreparedRecord,
  t: OpenTransaction,
  control: PartitionControl,
  attempt: RecordAttempt,
): Promise<{ readonly outcome: Outcome; readonly handlerMs: number }> {
  const { messageId } = attempt;
  const claimed = await attempt.claim({ status: 'processed', attempts: attempt.attempt });
  const reclassified: Reclassified = { deadLettered: [], skipped: [] };
  const row = claimed.claimed ? claimed.row : null;
  // A tombstone to skip was claimed with 0 attempts already: nothing to correct for it.
  const after = await afterClaim(pipeline, t, prepared, messageId, claimed, reclassified, {
    locate: row ?? messageId,
    skipClaimed: false,
  });
  if (reclassified.deadLettered.length > 0 || reclassified.skipped.length > 0) {
    await (row === null
      ? reclassifyChunkClaims(t.client, pipeline.inboxScope, reclassified)
      : reclassifyClaims(t.client, reclassified));
  }
  if (after.kind === 'settled') return { outcome: after.outcome, handlerMs: -1 };
  const { verdict } = after;
  const apply: ((ctx: HandlerContext) => Promise<void> | void) | undefined =
    verdict.kind === 'apply'
      ? (ctx) => handler.handle(verdict.event, ctx)
      : typeof handler.tombstone === 'function'
        ? handler.tombstone
        : undefined;
  if (apply === undefined) return { outcome: { kind: 'skipped' }, handlerMs: -1 };
  const handlerStarted = performance.now();
  try {
    await runBounded(
      {
        transaction: t,
        timeoutMs: pipeline.handlerTimeoutMs,
        heartbeat: () => control.heartbeat(),
        cancel: pipeline.cancelBackend,
        messageId,
      },
      async (lease) => {
        const attemptSteps = attempt.steps.attempt(lease.signal);
        await apply(
          new MessageContext(
            t,
            prepared.info,
            pipeline.inboxScope,
            messageId,
            attempt.attempt,
            pipeline.logger,
            lease,
            attemptSteps.step,
          ),
        );
        attemptSteps.finish();
      },
    );
  } catch (error) {
    throw new HandlerFailure(error);
  }
  return { outcome: { kind: 'processed', attempts: attempt.attempt }, handlerMs: performance.now() - handlerStarted };
}

export function claimFor(
  pipeline: PipelineContext,
  prepared: PreparedRecord,
  messageId: string,
): Omit<ClaimRequest, 'status' | 'attempts'> {
  return {
    groupId: pipeline.groupId,
    inboxScope: pipeline.inboxScope,
    messageId,
    topic: prepared.record.topic,
    partition: prepared.record.partition,
    offset: prepared.record.offset,
    nextOffset: prepared.nextOffset,
    payloadHash: prepared.payloadHash,
    timestamp: prepared.record.timestamp,
    firstSeenAt: prepared.firstSeenAt,
  };
}

/**
 * Dead-letters a record in a transaction of its own, retried until it commits (see
 * {@link untilCommitted}). A record with a valid id claims it, so a redelivery is a duplicate of
 * this outcome; one without is stored by its coordinates with the partition's next offset.
 */
export function deadLetter(
  pipeline: PipelineContext,
  control: PartitionControl,
  prepared: PreparedRecord,
  reason: DeadLetterReason,
  error: StoredError,
  attempts: number,
): Promise<Outcome> {
  const { messageId, record } = prepared;
  const store =
    (letter: DeadLetterInput) =>
    async (t: OpenTransaction): Promise<Outcome> => {
      if (messageId === null) {
        const stored =
          control.lane === undefined
            ? await deadLetterUnclaimable(pipeline, t, prepared.nextOffset, prepared.payloadHash, letter)
            : await recordDeadLetter(pipeline, t, letter);
        // On lanes the dead letter moved no offset: the partition's watermark is recorded last.
        await control.lane?.recordResumePoint(t, [record]);
        return stored
          ? { kind: 'dead_lettered', reason, error: letter.error, attempts }
          : deadLetteredBefore(record, prepared.payloadHash);
      }
      const claim = claimFor(pipeline, prepared, messageId);
      const claimed = await claimAndDeadLetter(pipeline, t, claim, letter, claimWith(control));
      await control.lane?.recordResumePoint(t, [record]);
      return claimed.claimed
        ? { kind: 'dead_lettered', reason, error: letter.error, attempts }
        : resolveDuplicate(pipeline, t, record, messageId, prepared.payloadHash, claimed.existing);
    };
  const letter: DeadLetterInput = { record, messageId, reason, error, attempts };
  return untilCommitted(pipeline, control, prepared.where, store(letter), store(minimalLetter(letter)));
}

/**
 * How a record's id is claimed: with the partition's next offset (in offset order), or on lanes
 * without it (the watermark is recorded at the end of the transaction instead).
 */
function claimWith(
  control: PartitionControl,
): (client: OpenTransaction['client'], request: ClaimRequest) => Promise<ClaimResult> {
  return control.lane === undefined ? claimMessage : claimUnordered;
}
