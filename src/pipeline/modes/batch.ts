import { performance } from 'node:perf_hooks';

import {
  claimChunk,
  type ChunkClaimRequest,
  type ClaimResult,
  findChunkHolders,
  findInboxEntries,
  type InboxEntry,
  insertChunkClaims,
  isClaimRace,
  reclassifyChunkClaims,
} from '../../inbox/claims.js';
import type { StoredError } from '../../inbox/dead-letters.js';
import type { OpenTransaction } from '../../inbox/transaction.js';
import type { ConsumedRecord } from '../../kafka/runner.js';

import { afterClaim, CLAIMED, holderOf, invalidIdError, type Reclassified } from '../record/after-claim.js';
import { announce, announceAll } from '../record/announce.js';
import type { Outcome, PartitionControl, PipelineContext } from '../context.js';
import { recordDeadLetter } from '../record/dead-letter.js';
import { deadLetteredBefore, duplicateOf } from '../record/duplicates.js';
import { describeError, redactError } from '../record/error-record.js';
import type { BatchEvent, BatchHandlerDefinition } from '../handler.js';
import { concatDigests, type PreparedRecord, prepareRecords } from '../record/prepare.js';
import { deadLetter } from './one-by-one.js';
import { classifyAttemptFailure, FailureBudget, HandlerFailure } from '../retry.js';
import { batchContext, runBounded } from '../record/run-handler.js';
import { batchAttemptSteps, compensateSteps, stepsOfRecord } from '../record/steps.js';
import { waitHeartbeating } from '../record/waiting.js';

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
  const prepared = await prepareRecords(pipeline, handler, records);
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
  const modes = claimModesOf(pipeline);
  const partitionKey = `${last.record.topic}\u0000${last.record.partition}`;
  let mode = modes.get(partitionKey) ?? 'insert';
  for (;;) {
    const attempt = budget.attempts + 1;
    const started = performance.now();
    let failure: unknown;
    try {
      const timing = { handlerMs: -1 };
      const claimMode = mode;
      const { outcomes, conflicted } = await control.transactions.run((t) =>
        chunkTransaction(pipeline, handler, chunk, t, attempt, control, timing, claimMode),
      );
      // What this chunk found decides how the partition's next chunk is claimed.
      modes.set(partitionKey, conflicted ? 'read-first' : 'insert');
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
      announceAll(pipeline, chunk, outcomes, () => durationMs);
      return { kind: 'done' };
    } catch (error) {
      if (error instanceof ClaimRaced && mode !== 'on-conflict') {
        // Nothing ran but the claim, and the rollback undid it: claim again, more carefully. Not
        // an attempt of the handler's, so nothing is counted and nothing waited for.
        mode = mode === 'insert' ? 'read-first' : 'on-conflict';
        continue;
      }
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
  mode: ClaimMode,
): Promise<{ readonly outcomes: Outcome[]; readonly conflicted: boolean }> {
  const first = chunk[0];
  const last = chunk.at(-1);
  if (first === undefined || last === undefined) return { outcomes: [], conflicted: false };
  const { holders, itself, anyHeld } = await claimIds(pipeline, t, chunk, attempt, mode);

  const outcomes: Outcome[] = [];
  // Outcomes are read-only: every record of the chunk with the same one shares one object.
  const processed: Outcome = { kind: 'processed', attempts: attempt };
  const skipped: Outcome = { kind: 'skipped' };
  const events: BatchEvent<unknown>[] = [];
  // The record of each event, in the same order: ctx.step finds an event's record among them.
  const eventRecords: PreparedRecord[] = [];
  // Claimed rows whose message turns out invalid or a skipped tombstone, by id.
  const reclassified: Reclassified = { deadLettered: [], skipped: [] };
  for (let i = 0; i < chunk.length; i++) {
    const p = chunk[i]!;
    const { record, messageId } = p;
    if (messageId === null) {
      const error = invalidIdError(p);
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
    const existing = holders[i];
    if (existing !== undefined) {
      // A redelivery or republish, decided here without a promise: a replay is nothing else. The
      // holder read already compared the record itself (place and fingerprint) with its row.
      const duplicate =
        itself[i] === 1
          ? { kind: 'duplicate' as const, duplicateClass: 'redelivery' as const, original: existing }
          : duplicateOf(record, p.payloadHash, existing);
      if (duplicate !== undefined) {
        outcomes.push(duplicate);
        continue;
      }
    }
    if (existing === undefined) {
      // Claimed: decoded now, without a promise when decoding needs none. A valid event (nearly
      // every claimed record) goes to the handler here; the rest are settled by afterClaim.
      const decided = p.decideNow();
      const verdict = decided instanceof Promise ? await decided : decided;
      if (verdict.kind === 'apply') {
        events.push({ event: verdict.event, messageId, message: p.info });
        eventRecords.push(p);
        outcomes.push(processed);
        continue;
      }
    }
    const claimed: ClaimResult = existing === undefined ? CLAIMED : { claimed: false, existing };
    // Every id was claimed with this attempt's count, a skipped tombstone's too: corrected by id.
    const after = await afterClaim(pipeline, t, p, messageId, claimed, reclassified, {
      locate: messageId,
      skipClaimed: true,
    });
    // A valid claimed event went to the handler above: what is left is settled here, or a tombstone
    // for the handler's function, which batch handlers cannot have (handler.ts refuses one in batch
    // mode), recorded as skipped.
    outcomes.push(after.kind === 'settled' ? after.outcome : skipped);
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
        async (lease) => {
          const steps = batchAttemptSteps(pipeline, eventRecords, lease.signal);
          await handler.handleBatch(
            events,
            batchContext(t, first.where, pipeline.inboxScope, attempt, pipeline.logger, lease, steps.step),
          );
          steps.finish();
        },
      );
    } catch (error) {
      throw new HandlerFailure(error);
    }
    timing.handlerMs = performance.now() - handlerStarted;
  }
  return { outcomes, conflicted: anyHeld };
}

/**
 * How a chunk's ids are claimed:
 * - `insert`: a plain INSERT of every id, betting that none is taken — the common case of new
 *   work, which then skips both a read and `ON CONFLICT`'s speculative insertion;
 * - `read-first`: the holders of the ids are read first (one primary-key lookup each), then the
 *   free ones inserted plainly — a replay of duplicates then writes no inbox row at all;
 * - `on-conflict`: one `INSERT … ON CONFLICT DO NOTHING`, which cannot lose a race.
 * A partition's chunk starts in the mode its previous chunk called for (`read-first` after one
 * with duplicates, `insert` otherwise). A plain INSERT that meets a taken id fails on the unique
 * index (a duplicate, an id twice in the chunk, or a concurrent claimer); the failed statement
 * aborts the transaction, so the chunk is rolled back (nothing but the claim had run) and claimed
 * again in the next, more careful mode — no savepoint on the common path.
 */
type ClaimMode = 'insert' | 'read-first' | 'on-conflict';

/** Thrown inside a chunk's transaction when its plain INSERT met a taken id (SQLSTATE 23505). */
class ClaimRaced extends Error {
  constructor(cause: unknown) {
    super('a chunk claim met an id that is already taken; claiming again', { cause });
  }
}

const claimModes = new WeakMap<PipelineContext, Map<string, ClaimMode>>();

/** Per partition (`topic\u0000partition`), how its next chunk is claimed. */
function claimModesOf(pipeline: PipelineContext): Map<string, ClaimMode> {
  let modes = claimModes.get(pipeline);
  if (modes === undefined) {
    modes = new Map();
    claimModes.set(pipeline, modes);
  }
  return modes;
}

/** What a chunk's claim found: see {@link claimIds}. */
interface ClaimedIds {
  /** By position in the chunk: the row holding the record's id, where it was not claimed. */
  readonly holders: readonly (InboxEntry | undefined)[];
  /** By position: 1 where the holder is the record itself (a redelivery, checked by the database). */
  readonly itself: Uint8Array;
  /** Whether any id was held. */
  readonly anyHeld: boolean;
}

const NONE_HELD: readonly (InboxEntry | undefined)[] = [];
const NOT_ITSELF = new Uint8Array(0);

/**
 * Claims the chunk's ids in `mode`, records the partition's next offset past the chunk and turns
 * synchronous_commit on for this transaction. Returns, by position in the chunk, the rows holding
 * the ids that were not claimed.
 */
async function claimIds(
  pipeline: PipelineContext,
  t: OpenTransaction,
  chunk: readonly PreparedRecord[],
  attempt: number,
  mode: ClaimMode,
): Promise<ClaimedIds> {
  const first = chunk[0];
  const last = chunk.at(-1);
  if (first === undefined || last === undefined) return { holders: NONE_HELD, itself: NOT_ITSELF, anyHeld: false };
  // The records with an id, and where each sits in the chunk.
  const claimable: PreparedRecord[] = [];
  const positions: number[] = [];
  const messageIds: string[] = [];
  for (let i = 0; i < chunk.length; i++) {
    const p = chunk[i]!;
    if (p.messageId === null) continue;
    claimable.push(p);
    positions.push(i);
    messageIds.push(p.messageId);
  }
  const claimOf = (records: readonly PreparedRecord[], ids: readonly string[]): ChunkClaimRequest => ({
    groupId: pipeline.groupId,
    inboxScope: pipeline.inboxScope,
    topic: first.record.topic,
    partition: first.record.partition,
    messageIds: ids,
    offsets: records.map((p) => p.record.offset),
    payloadHashes: concatDigests(records),
    attempts: attempt,
    nextOffset: last.nextOffset,
    // The chunk's last record, claimable or not, is the one before the resume point it records.
    last: { payloadHash: last.payloadHash, timestamp: last.record.timestamp },
    firstSeenAt: first.firstSeenAt,
  });

  if (mode === 'insert') {
    await insertOrRace(t, claimOf(claimable, messageIds));
    return { holders: NONE_HELD, itself: NOT_ITSELF, anyHeld: false };
  }

  const holders = new Array<InboxEntry | undefined>(chunk.length);
  const itself = new Uint8Array(chunk.length);
  // The holders of the ids at these positions, whose claim conflicted, read with a fresh snapshot:
  // it sees holders committed concurrently and the rows just inserted for an id twice in the chunk.
  const readHoldersAt = async (conflicted: readonly number[]): Promise<void> => {
    const idAt = (i: number): string => chunk[i]?.messageId ?? '';
    const found = await findInboxEntries(t.client, pipeline.inboxScope, conflicted.map(idAt));
    for (const i of conflicted) holders[i] = holderOf(found, idAt(i));
  };
  if (mode === 'on-conflict') {
    const { conflicts } = await claimChunk(t.client, claimOf(claimable, messageIds));
    if (conflicts.size === 0) return { holders, itself, anyHeld: false };
    await readHoldersAt(positions.filter((i) => conflicts.has(chunk[i]!.record.offset)));
    return { holders, itself, anyHeld: true };
  }

  // read-first: the holders, read with the resume point's move (a replayed chunk sends nothing
  // else), then the free ids (each once: a later occurrence of an id in the chunk conflicts with the
  // first, like any duplicate).
  const read = await findChunkHolders(t.client, claimOf(claimable, messageIds), {
    everyRecordHasId: claimable.length === chunk.length,
  });
  const free: PreparedRecord[] = [];
  const freeIds: string[] = [];
  const seen = new Set<string>();
  const repeated: number[] = [];
  for (let k = 0; k < claimable.length; k++) {
    const i = positions[k]!;
    const id = messageIds[k]!;
    const holder = read.holders[k];
    if (holder !== undefined) {
      holders[i] = holder;
      itself[i] = read.itself[k]!;
    } else if (seen.has(id)) {
      repeated.push(i);
    } else {
      seen.add(id);
      free.push(claimable[k]!);
      freeIds.push(id);
    }
  }
  // Every id is held (a replay): nothing to insert; the read moved the resume point.
  if (free.length === 0) return { holders, itself, anyHeld: read.anyHeld };
  // The free ids, claimed as in `insert` mode (the statement moves the resume point again, to the
  // same place, and makes the commit durable). The read already holds the resume point's row: a
  // second owner of the partition during a rebalance overlap, claiming the other way round, can
  // deadlock with this transaction; PostgreSQL aborts one (40P01), retried as contention.
  await insertOrRace(t, claimOf(free, freeIds));
  // An id twice in the chunk: its holder is the row just inserted for its first occurrence.
  if (repeated.length > 0) await readHoldersAt(repeated);
  return { holders, itself, anyHeld: read.anyHeld || repeated.length > 0 };
}

async function insertOrRace(t: OpenTransaction, request: ChunkClaimRequest): Promise<void> {
  try {
    await insertChunkClaims(t.client, request);
  } catch (error) {
    throw isClaimRace(error) ? new ClaimRaced(error) : error;
  }
}
