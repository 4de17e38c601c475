import { performance } from 'node:perf_hooks';

import { type ChunkClaim, claimChunk, findInboxEntries, type InboxEntry, reclassifyClaims } from '../inbox/claims.js';
import type { StoredError } from '../inbox/dead-letters.js';
import type { OpenTransaction } from '../inbox/transaction.js';
import type { ConsumedRecord } from '../kafka/runner.js';
import { recordDeadLetter } from './dead-letter.js';
import { describeError } from './error-record.js';
import type { BatchEvent, BatchHandlerDefinition } from './handler.js';
import {
  announce,
  classifyAttemptFailure,
  HandlerFailure,
  type Outcome,
  type PartitionControl,
  type PipelineContext,
  resolveDuplicate,
  waitHeartbeating,
} from './outcomes.js';
import { type PreparedRecord, prepareRecord } from './prepare.js';
import { claimFor, deadLetter } from './process-record.js';
import { backoffDelay } from './retry.js';
import { batchContext, runBounded } from './run-handler.js';

export type ChunkResult =
  | { readonly kind: 'done' }
  /** Stopped (or lost the partition) first: the records after the last committed one are redelivered. */
  | { readonly kind: 'abandoned' }
  /** `onExhausted: 'pause'`: the partition must stop at this record. */
  | { readonly kind: 'paused'; readonly at: PreparedRecord; readonly error: StoredError; readonly attempts: number };

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
  const prepared = records.map((record) => prepareRecord(pipeline, handler, record));
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
  let attempts = 0;
  let transientFailures = 0;
  for (;;) {
    const attempt = attempts + 1;
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
    const where = { ...last.where, chunk: chunk.length, firstOffset: chunk[0]?.record.offset };
    if (kind === 'transient') {
      // The database failed, not the chunk: nothing of the attempt remains. Retry it whole.
      transientFailures += 1;
      const delayMs = backoffDelay(pipeline.retry, transientFailures);
      pipeline.logger.warn({ ...where, err: error, delayMs }, 'database unavailable; retrying the chunk');
      if (!(await waitHeartbeating(delayMs, control))) return { kind: 'abandoned' };
      continue;
    }
    attempts = attempt;
    if (kind === 'non_retriable' || attempts >= attemptBudget) {
      if (chunk.length > 1) return bisect(pipeline, handler, chunk, control, committed, where, error);
      return exhausted(pipeline, chunk[0] ?? last, control, committed, describeError(error), attempts);
    }
    const delayMs = backoffDelay(pipeline.retry, attempts);
    pipeline.logger.warn(
      { ...where, err: error, attempt: attempts, delayMs },
      'batch handler failed; retrying the chunk',
    );
    // Waiting heartbeats the group, so the member keeps its partitions while it backs off.
    if (!(await waitHeartbeating(delayMs, control))) return { kind: 'abandoned' };
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
  if (messageId === null) throw new Error('a record without an id never reaches the handler');
  if (pipeline.onExhausted === 'pause') {
    announce(pipeline, prepared.where, { kind: 'paused', messageId, error, attempts }, 0, prepared.record);
    return { kind: 'paused', at: prepared, error, attempts };
  }
  const started = performance.now();
  const claim = claimFor(pipeline, prepared, messageId);
  const outcome = await deadLetter(pipeline, control, prepared, messageId, claim, 'handler_failed', error, attempts);
  if (outcome.kind === 'abandoned') return { kind: 'abandoned' };
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
  const claims: ChunkClaim[] = [];
  for (const p of chunk) {
    if (p.messageId !== null)
      claims.push({ messageId: p.messageId, offset: p.record.offset, payloadHash: p.payloadHash });
  }
  // One statement claims every id, records the partition's next offset past the chunk and turns
  // synchronous_commit on for this transaction.
  const claimed = await claimChunk(t.client, {
    groupId: pipeline.groupId,
    topic: first.record.topic,
    partition: first.record.partition,
    claims,
    attempts: attempt,
    nextOffset: last.nextOffset,
    firstSeenAt: first.firstSeenAt,
  });
  const taken = chunk.filter((p) => p.messageId !== null && !claimed.has(p.record.offset));
  // Read with a fresh snapshot: it sees holders committed concurrently and the rows this
  // statement inserted for an id that occurs twice in the chunk.
  const holders =
    taken.length === 0
      ? new Map<string, InboxEntry>()
      : await findInboxEntries(
          t.client,
          pipeline.groupId,
          taken.map((p) => p.messageId ?? ''),
        );

  const outcomes: Outcome[] = [];
  const events: BatchEvent<unknown>[] = [];
  const reclassified = { deadLettered: [] as string[], skipped: [] as string[] };
  for (const p of chunk) {
    const { record, messageId } = p;
    if (messageId === null) {
      const error = p.verdict.kind === 'unclaimable' ? p.verdict.error : describeError(new Error('invalid message id'));
      await recordDeadLetter(pipeline, t, {
        record,
        messageId: null,
        reason: 'invalid_message_id',
        error,
        attempts: 0,
      });
      outcomes.push({ kind: 'dead_lettered', reason: 'invalid_message_id', error, attempts: 0 });
      continue;
    }
    const row = claimed.get(record.offset);
    if (row === undefined) {
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
      reclassified.deadLettered.push(row);
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
      outcomes.push({ kind: 'processed', attempts: attempt });
    } else {
      reclassified.skipped.push(row);
      outcomes.push({ kind: 'skipped' }); // a tombstone recorded and skipped
    }
  }
  await reclassifyClaims(t.client, reclassified);

  if (events.length > 0) {
    const handlerStarted = performance.now();
    try {
      await runBounded(
        { transaction: t, timeoutMs: pipeline.handlerTimeoutMs, heartbeat: () => control.heartbeat() },
        (signal) => handler.handleBatch(events, batchContext(t, first.where, attempt, pipeline.logger, signal)),
      );
    } catch (error) {
      throw new HandlerFailure(error, t);
    }
    timing.handlerMs = performance.now() - handlerStarted;
  }
  return outcomes;
}
