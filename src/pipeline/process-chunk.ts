import { performance } from 'node:perf_hooks';

import { claimChunk, findInboxEntries, type InboxEntry, reclassifyChunkClaims } from '../inbox/claims.js';
import type { StoredError } from '../inbox/dead-letters.js';
import type { OpenTransaction } from '../inbox/transaction.js';
import type { ConsumedRecord } from '../kafka/runner.js';
import { recordDeadLetter } from './dead-letter.js';
import { describeError, redactError } from './error-record.js';
import type { BatchEvent, BatchHandlerDefinition } from './handler.js';
import {
  announce,
  classifyAttemptFailure,
  deadLetteredBefore,
  FailureBudget,
  HandlerFailure,
  type Outcome,
  type PartitionControl,
  type PipelineContext,
  resolveDuplicate,
  waitHeartbeating,
} from './outcomes.js';
import { concatDigests, type PreparedRecord, prepareRecords } from './prepare.js';
import { deadLetter } from './process-record.js';
import { batchContext, runBounded } from './run-handler.js';
import { batchAttemptSteps, compensateSteps, stepsOfRecord } from './steps.js';

export type ChunkResult =
  | { readonly kind: 'done' }
  /** Stopped (or lost the partition) first: the records after the last committed one are redelivered. */
  | { readonly kind: 'abandoned' }
  /** `onExhausted: 'pause'`: the partition must stop at this record. */
  | { readonly kind: 'paused'; readonly at: PreparedRecord; readonly error: StoredError; readonly attempts: number }
  /** Not even the record's dead letter could be stored: the partition must stop at it, with an alert. */
  | {
      readonly kind: 'unrecordable';
      readonly at: PreparedRecord;
      readonly error: StoredError;
      readonly attempts: number;
    };

/**
 * Takes a chunk of one partition's records (in offset order) to their recorded outcomes with as
 * few transactions as possible: one transaction and one claim statement for the whole chunk, the
 * handler called once with the freshly claimed events. `committed(offset)` is called after each
 * commit with the last offset it covers: the caller may let Kafka's offset pass it then, not before.
 *
 * A chunk that keeps failing is split in two, and each half processed on its own, until the
 * failing record is alone; then it gets its own full set of attempts and is dead-lettered (or
 * pauses the partition). The good records still commit exactly once: every failed attempt rolled
 * back its claims with everything else. Halves are processed left first, so offset order holds.
 */
export async function processChunk(
  pipeline: PipelineContext,
  handler: BatchHandlerDefinition,
  records: readonly ConsumedRecord[],
  control: PartitionControl,
  committed: (lastOffset: string) => void,
): Promise<ChunkResult> {
  const prepared = prepareRecords(pipeline, handler, records);
  return runChunk(pipeline, handler, prepared, control, committed, pipeline.retry.attempts);
}

async function runChunk(
  pipeline: PipelineContext,
  handler: BatchHandlerDefinition,
  chunk: readonly PreparedRecord[],
  control: PartitionControl,
  committed: (lastOffset: string) => void,
  attemptBudget: number,
): Promise<ChunkResult> {
  const last = chunk.at(-1);
  if (last === undefined) return { kind: 'done' };
  const budget = new FailureBudget(pipeline.retry, attemptBudget);
  for (;;) {
    const attempt = budget.attempts + 1;
    const started = performance.now();
    let failure: unknown;
    try {
      const timing = { handlerMs: -1 };
      const outcomes = await control.transactions.run((t) =>
        chunkTransaction(pipeline, handler, chunk, t, attempt, control, timing),
      );
      // Committed: every record of the chunk has its outcome, and the partition's next offset is
      // past the chunk — only now may Kafka's offset move past it.
      committed(last.record.offset);
      const durationMs = performance.now() - started;
      if (timing.handlerMs >= 0) {
        const { groupId, topic, partition } = last.where;
        const messages = chunk.length;
        pipeline.events.emit('transaction:committed', () => ({
          groupId,
          topic,
          partition,
          messages,
          durationMs,
          handlerMs: timing.handlerMs,
        }));
      }
      outcomes.forEach((outcome, i) => {
        const prepared = chunk[i];
        if (prepared !== undefined) announce(pipeline, prepared.where, outcome, durationMs, prepared.record);
      });
      return { kind: 'done' };
    } catch (error) {
      failure = error;
    }

    const { error, kind } = classifyAttemptFailure(failure);
    const first = chunk[0] ?? last;
    const where = { ...last.where, chunk: chunk.length, firstOffset: first.record.offset };
    const next = budget.next(kind);
    if (!next.retry) {
      if (chunk.length > 1) return bisect(pipeline, handler, chunk, control, committed, where, error);
      return exhausted(pipeline, first, control, committed, describeError(error), budget.attempts);
    }
    if (next.counted) {
      pipeline.logger.warn(
        { ...where, err: redactError(error), attempt: budget.attempts, delayMs: next.delayMs },
        'batch handler failed; retrying the chunk',
      );
      pipeline.events.emit('chunk:retrying', () => ({
        groupId: pipeline.groupId,
        topic: first.record.topic,
        partition: first.record.partition,
        firstOffset: first.record.offset,
        lastOffset: last.record.offset,
        size: chunk.length,
        attempt: budget.attempts,
        delayMs: next.delayMs,
        error,
      }));
    } else {
      // The database failed (or lost a race), not the chunk: nothing of the attempt remains.
      pipeline.logger.warn(
        { ...where, err: redactError(error), delayMs: next.delayMs, failure: kind },
        kind === 'transient' ? 'database unavailable; retrying the chunk' : 'transaction conflict; retrying the chunk',
      );
    }
    // Waiting heartbeats the group, so the member keeps its partitions while it backs off.
    if (!(await waitHeartbeating(next.delayMs, control))) return { kind: 'abandoned' };
  }
}

/**
 * Splits a failing chunk to isolate the record(s) that make it fail. Halves of more than one
 * record get a single attempt before splitting again (the chunk as a whole already had its
 * retries); a record alone gets the full retry policy, exactly as in per-message mode.
 */
async function bisect(
  pipeline: PipelineContext,
  handler: BatchHandlerDefinition,
  chunk: readonly PreparedRecord[],
  control: PartitionControl,
  committed: (lastOffset: string) => void,
  where: object,
  error: unknown,
): Promise<ChunkResult> {
  pipeline.logger.warn({ ...where, err: error }, 'chunk keeps failing; splitting it to isolate the failing message');
  const middle = Math.ceil(chunk.length / 2);
  for (const half of [chunk.slice(0, middle), chunk.slice(middle)]) {
    const budget = half.length === 1 ? pipeline.retry.attempts : 1;
    const result = await runChunk(pipeline, handler, half, control, committed, budget);
    if (result.kind !== 'done') return result;
  }
  return { kind: 'done' };
}

/** A single record whose attempts ran out: dead-lettered on its own, or the partition pauses. */
async function exhausted(
  pipeline: PipelineContext,
  prepared: PreparedRecord,
  control: PartitionControl,
  committed: (lastOffset: string) => void,
  error: StoredError,
  attempts: number,
): Promise<ChunkResult> {
  const messageId = prepared.messageId;
  if (pipeline.onExhausted === 'pause' && messageId !== null) {
    announce(pipeline, prepared.where, { kind: 'paused', messageId, error, attempts }, 0, prepared.record);
    return { kind: 'paused', at: prepared, error, attempts };
  }
  const started = performance.now();
  // A record without an id fails alone only when storing its own dead letter failed: try once more
  // on its own, the same way, with the fallback.
  let stored = error;
  if (messageId !== null) {
    // Its completed steps' external effects are compensated first (steps.ts says why before).
    const compensated = await compensateSteps(
      pipeline,
      control,
      stepsOfRecord(pipeline, prepared, messageId),
      prepared.where,
      error,
    );
    if (compensated === undefined) return { kind: 'abandoned' };
    stored = compensated;
  }
  const reason = messageId === null ? 'invalid_message_id' : 'handler_failed';
  const outcome = await deadLetter(pipeline, control, prepared, reason, stored, attempts);
  if (outcome.kind === 'abandoned') return { kind: 'abandoned' };
  if (outcome.kind === 'unrecordable') {
    announce(pipeline, prepared.where, outcome, performance.now() - started, prepared.record);
    return { kind: 'unrecordable', at: prepared, error: outcome.error, attempts };
  }
  // The dead letter and the partition's next offset committed together.
  committed(prepared.record.offset);
  announce(pipeline, prepared.where, outcome, performance.now() - started, prepared.record);
  return { kind: 'done' };
}

/** One attempt at a chunk, inside its transaction. Returns each record's outcome, in chunk order. */
async function chunkTransaction(
  pipeline: PipelineContext,
  handler: BatchHandlerDefinition,
  chunk: readonly PreparedRecord[],
  t: OpenTransaction,
  attempt: number,
  control: PartitionControl,
  timing: { handlerMs: number },
): Promise<Outcome[]> {
  const first = chunk[0];
  const last = chunk.at(-1);
  if (first === undefined || last === undefined) return [];
  const claimable: PreparedRecord[] = [];
  const messageIds: string[] = [];
  const offsets: string[] = [];
  for (const p of chunk) {
    if (p.messageId === null) continue;
    claimable.push(p);
    messageIds.push(p.messageId);
    offsets.push(p.record.offset);
  }
  // One statement claims every id, records the partition's next offset past the chunk and turns
  // synchronous_commit on for this transaction.
  const { conflicts } = await claimChunk(t.client, {
    groupId: pipeline.groupId,
    inboxScope: pipeline.inboxScope,
    topic: first.record.topic,
    partition: first.record.partition,
    messageIds,
    offsets,
    payloadHashes: concatDigests(claimable),
    attempts: attempt,
    nextOffset: last.nextOffset,
    firstSeenAt: first.firstSeenAt,
  });
  // Read with a fresh snapshot: it sees holders committed concurrently and the rows this
  // statement inserted for an id that occurs twice in the chunk.
  const holders =
    conflicts.size === 0
      ? new Map<string, InboxEntry>()
      : await findInboxEntries(
          t.client,
          pipeline.inboxScope,
          claimable.filter((p) => conflicts.has(p.record.offset)).map((p) => p.messageId ?? ''),
        );

  const outcomes: Outcome[] = [];
  const events: BatchEvent<unknown>[] = [];
  const stepRecords = new Map<string, PreparedRecord>();
  // Claimed rows whose message turns out invalid or a skipped tombstone, by id.
  const reclassified = { deadLettered: [] as string[], skipped: [] as string[] };
  for (const p of chunk) {
    const { record, messageId } = p;
    if (messageId === null) {
      const error = p.verdict.kind === 'unclaimable' ? p.verdict.error : describeError(new Error('invalid message id'));
      const stored = await recordDeadLetter(pipeline, t, {
        record,
        messageId: null,
        reason: 'invalid_message_id',
        error,
        attempts: 0,
      });
      outcomes.push(
        stored
          ? { kind: 'dead_lettered', reason: 'invalid_message_id', error, attempts: 0 }
          : deadLetteredBefore(record, p.payloadHash),
      );
      continue;
    }
    if (conflicts.has(record.offset)) {
      // A duplicate: classified by fingerprint and coordinates, never decoded.
      const existing = holders.get(messageId);
      // Deleted between the conflict and the read (a retention purge): retry the whole chunk.
      if (existing === undefined)
        throw new Error(`message id ${messageId} conflicted but its inbox row vanished; retrying`);
      outcomes.push(await resolveDuplicate(pipeline, t, record, messageId, p.payloadHash, existing));
      continue;
    }
    // Claimed: only now is the message decoded and validated.
    const verdict = p.verdict;
    if (verdict.kind === 'invalid') {
      reclassified.deadLettered.push(messageId);
      await recordDeadLetter(pipeline, t, {
        record,
        messageId,
        reason: 'invalid_payload',
        error: verdict.error,
        attempts: 0,
      });
      outcomes.push({ kind: 'dead_lettered', reason: 'invalid_payload', error: verdict.error, attempts: 0 });
    } else if (verdict.kind === 'apply') {
      events.push({ event: verdict.event, messageId, message: p.info });
      stepRecords.set(messageId, p);
      outcomes.push({ kind: 'processed', attempts: attempt });
    } else {
      reclassified.skipped.push(messageId);
      outcomes.push({ kind: 'skipped' }); // a tombstone recorded and skipped
    }
  }
  await reclassifyChunkClaims(t.client, pipeline.inboxScope, reclassified);

  if (events.length > 0) {
    const handlerStarted = performance.now();
    try {
      await runBounded(
        {
          transaction: t,
          timeoutMs: pipeline.handlerTimeoutMs,
          heartbeat: () => control.heartbeat(),
          cancel: pipeline.cancelBackend,
        },
        async (signal) => {
          const steps = batchAttemptSteps(pipeline, stepRecords, signal);
          await handler.handleBatch(events, batchContext(t, first.where, attempt, pipeline.logger, signal, steps.step));
          steps.finish();
        },
      );
    } catch (error) {
      throw new HandlerFailure(error);
    }
    timing.handlerMs = performance.now() - handlerStarted;
  }
  return outcomes;
}
