/**
 * Message mode's partition loop, with commit grouping: consecutive records of one partition, each
 * with its own claim and its own handler call, share one transaction and one durable commit
 * (docs/guarantees.md, "Commit grouping"). A durable commit per message is what bounds one-transaction-per-
 * message consumers; a group of 100 pays it once.
 *
 * What does not change: every record gets exactly one recorded outcome, and Kafka's offset moves
 * past a record only after the transaction holding its outcome committed (G3). What grouping adds:
 * when one message of a group fails, the whole group rolls back, so the messages before it are
 * run again — their handlers are called again, in a new transaction — and the failing message
 * then gets its retries alone, exactly as with `maxMessagesPerTransaction: 1`. Handlers' writes
 * are rolled back with the group; external calls are safe in `ctx.step` (recorded outside it).
 */
import { performance } from 'node:perf_hooks';

import { findInboxEntries, type InboxEntry, recordOffset } from '../../inbox/claims.js';
import type { StoredError } from '../../inbox/dead-letters.js';
import { claimGroup, releaseGroupClaims } from '../../inbox/group-claim.js';
import type { OpenTransaction } from '../../inbox/transaction.js';
import type { ConsumedRecord } from '../../kafka/runner.js';

import { claimAmong } from '../record/after-claim.js';
import { announceAll } from '../record/announce.js';
import type { Outcome, PartitionControl, PipelineContext } from '../context.js';
import { redactError } from '../record/error-record.js';
import type { PauseReason } from '../../events/index.js';
import type { HandlerDefinition } from '../handler.js';
import { concatDigests, type PreparedRecord, prepareRecordNow } from '../record/prepare.js';
import { applyRecord, type EarlierAttempt, processRecord } from './one-by-one.js';
import { classifyAttemptFailure, HandlerFailure } from '../retry.js';
import { MessageSteps, readGroupSteps } from '../record/steps.js';

/** A group also commits once it has been open this long, so a slow handler does not hold many rows' locks. */
export const MAX_GROUP_MS = 100;

export interface RecordsOptions {
  /** The most records in one transaction (`maxMessagesPerTransaction`); 1 disables grouping. */
  readonly maxMessages: number;
  /** Called after each commit with the last offset it covers: Kafka may pass it then, not before. */
  readonly committed: (lastOffset: string) => void;
}

export type RecordsResult =
  | { readonly kind: 'done' }
  /** Stopped (or lost the partition) first: records after the last committed one are redelivered. */
  | { readonly kind: 'abandoned' }
  /** The partition must stop at this record (attempts exhausted with `pause`, or its outcome unrecordable). */
  | {
      readonly kind: 'stopped';
      readonly record: ConsumedRecord;
      readonly messageId: string | null;
      readonly reason: PauseReason;
      readonly error: StoredError;
      readonly attempts: number;
    };

type GroupResult =
  /** `count` records committed, from the first. */
  | { readonly kind: 'committed'; readonly count: number; readonly lastOffset: string }
  /** The first record must go alone: it has no id to claim, or is known invalid without decoding. */
  | { readonly kind: 'alone' }
  /**
   * Rolled back. `at`: the index of the record whose claim or handler failed; undefined when the
   * failure came at BEGIN or COMMIT, where no single record is to blame. `attempted`: records tried.
   */
  | {
      readonly kind: 'failed';
      readonly at: number | undefined;
      readonly attempted: number;
      readonly error: unknown;
      /** The failing record's steps (see EarlierAttempt); undefined when `at` is. */
      readonly steps: MessageSteps | undefined;
    };

/**
 * Takes one partition's records, in offset order, to their recorded outcomes. With grouping on,
 * records run in groups; a group that fails is taken apart as described at the top of this file.
 */
export async function processRecords(
  pipeline: PipelineContext,
  handler: HandlerDefinition,
  records: readonly ConsumedRecord[],
  control: PartitionControl,
  options: RecordsOptions,
): Promise<RecordsResult> {
  // Records to run one per transaction before grouping resumes, and the size limit of the next group.
  let alone = 0;
  let limit = options.maxMessages;
  // A record whose group failed because of it: once the records before it are committed, it goes
  // alone, that failure counting as its first attempt.
  let isolate: { readonly offset: string; readonly earlier: EarlierAttempt } | undefined;
  let index = 0;
  while (index < records.length) {
    if (!control.isActive()) return { kind: 'abandoned' };
    const record = records[index];
    if (record === undefined) break;
    const isolated = record.offset === isolate?.offset ? isolate.earlier : undefined;
    if (alone > 0 || options.maxMessages === 1 || isolated !== undefined) {
      alone = Math.max(0, alone - 1);
      isolate = undefined;
      // The next record's BEGIN may ride with this record's COMMIT.
      control.transactions.expectMore?.(index < records.length - 1);
      const outcome = await processRecord(pipeline, handler, record, control, isolated);
      if (outcome.kind === 'abandoned') return { kind: 'abandoned' };
      if (outcome.kind === 'paused' || outcome.kind === 'unrecordable') {
        const reason = outcome.kind === 'paused' ? 'exhausted' : 'unrecordable';
        return {
          kind: 'stopped',
          record,
          messageId: outcome.messageId,
          reason,
          error: outcome.error,
          attempts: outcome.attempts,
        };
      }
      // The outcome (and the partition's next offset) is committed in PostgreSQL: Kafka may now
      // commit past this record. Never earlier — that is guarantee G3.
      options.committed(record.offset);
      await control.heartbeat();
      index += 1;
      continue;
    }

    control.transactions.expectMore?.(index + limit < records.length);
    const result = await runGroup(pipeline, handler, records, index, limit, control);
    limit = options.maxMessages;
    switch (result.kind) {
      case 'committed':
        // The group's outcomes and the partition's next offset are committed: Kafka may pass them (G3).
        options.committed(result.lastOffset);
        index += result.count;
        await control.heartbeat();
        break;
      case 'alone':
        alone = 1;
        break;
      case 'failed': {
        const { error, kind } = classifyAttemptFailure(result.error);
        const where = { topic: record.topic, partition: record.partition };
        if (result.at === undefined) {
          // Failed at BEGIN or COMMIT (a deferred constraint, a swallowed error, a lost connection):
          // no record is known to be at fault, so the group's records go one per transaction,
          // which finds the culprit and waits out an outage the way a single message does.
          alone = Math.max(1, result.attempted);
        } else {
          // The records before the failing one did nothing wrong: run them again as a group of
          // their own, then the failing record alone, with the attempts it has left.
          const failing = records[index + result.at];
          if (failing !== undefined && result.steps !== undefined) {
            isolate = { offset: failing.offset, earlier: { failure: ownFailure(result.error), steps: result.steps } };
          }
          if (result.at > 0) limit = result.at;
        }
        pipeline.logger.debug(
          { ...where, firstOffset: record.offset, failedAt: result.at, err: redactError(error), failure: kind },
          'a message of a commit group failed; the group rolled back and its messages run again, the failing one alone',
        );
        break;
      }
    }
  }
  return { kind: 'done' };
}

/**
 * The failure to count as the record's first attempt: only its own handler's. A failed oncely
 * statement, or a query of its handler refused because an earlier handler of the group left the
 * transaction aborted (25P02), may be a neighbour's fault: the record then starts afresh alone.
 */
function ownFailure(error: unknown): unknown {
  if (!(error instanceof HandlerFailure)) return undefined;
  const code = (error.error as { code?: unknown } | null)?.code;
  return code === '25P02' ? undefined : error;
}

/**
 * One transaction for records[from…] — at most `limit`, ending early at a record that must go alone,
 * after MAX_GROUP_MS, or when the partition is no longer ours. Announces the outcomes once committed.
 *
 * The group's ids are claimed together, in one statement, before the first handler runs: a
 * message costs its handler's statements and no round trip of oncely's own. A group that ends
 * early releases the claims of the messages it did not reach, in the same transaction.
 */
async function runGroup(
  pipeline: PipelineContext,
  handler: HandlerDefinition,
  records: readonly ConsumedRecord[],
  from: number,
  limit: number,
  control: PartitionControl,
): Promise<GroupResult> {
  const members = await groupMembers(pipeline, handler, records, from, limit);
  if (members.length === 0) return { kind: 'alone' };
  const outcomes: Outcome[] = [];
  const durations: number[] = [];
  const began = performance.now();
  let handlerMs = 0;
  let reached = 0;
  let current: number | undefined;
  let currentSteps: MessageSteps | undefined;
  try {
    await control.transactions.run(async (t) => {
      const { conflicts, holders } = await claimMembers(pipeline, t, members);
      // After the claim: an earlier owner of an id that the claim waited for has ended, and the
      // steps it recorded are committed and seen here.
      const recordedSteps = await readGroupSteps(pipeline, handler, t.client, claimedIds(members, conflicts));
      for (let i = 0; i < members.length; i++) {
        const p = members[i] as PreparedRecord & { readonly messageId: string };
        if (i > 0 && (performance.now() - began >= MAX_GROUP_MS || !control.isActive())) break;
        current = i;
        const started = performance.now();
        const messageId = p.messageId;
        const steps = new MessageSteps(
          pipeline.pool,
          pipeline.inboxScope,
          messageId,
          handler,
          recordedSteps?.(messageId),
        );
        currentSteps = steps;
        const applied = await applyRecord(pipeline, handler, p, t, control, {
          messageId,
          // A tombstone to skip is recorded with 0 attempts, as alone.
          attempt: p.decided && p.verdict.kind === 'skip' ? 0 : 1,
          steps,
          claim: () => Promise.resolve(claimAmong(p, messageId, conflicts, holders)),
        });
        if (applied.handlerMs >= 0) handlerMs += applied.handlerMs;
        outcomes.push(applied.outcome);
        durations.push(performance.now() - started);
        reached = i + 1;
        current = undefined;
      }
      // Ended early: the messages not reached are delivered again and must find their ids free.
      await releaseGroupClaims(t.client, pipeline.inboxScope, claimedIds(members, conflicts, reached));
      const last = members[reached - 1];
      if (last === undefined) return;
      if (control.lane !== undefined) {
        // On lanes the group's records are not the partition's next ones: the resume point is the
        // partition's watermark as this commit leaves it (lanes/watermark.ts).
        await control.lane.recordResumePoint(
          t,
          members.slice(0, reached).map((p) => p.record),
        );
        return;
      }
      // The partition's next offset once, past the group's last record, with synchronous_commit on:
      // the group's outcomes and its resume point commit together.
      await recordOffset(t.client, {
        groupId: pipeline.groupId,
        topic: last.record.topic,
        partition: last.record.partition,
        nextOffset: last.nextOffset,
        previous: { payloadHash: last.payloadHash, timestamp: last.record.timestamp },
      });
    });
  } catch (error) {
    // The failing record's attempt may not have taken the rows read with this (rolled back)
    // claim: its next attempt, alone, in another transaction, must read them afresh.
    currentSteps?.forgetRecorded();
    const attempted = reached + (current === undefined ? 0 : 1);
    return { kind: 'failed', at: current, attempted, error, steps: current === undefined ? undefined : currentSteps };
  }
  const last = members[reached - 1];
  if (last === undefined) return { kind: 'alone' };
  // Committed: every record of the group has its outcome, and the partition's next offset is past it.
  const durationMs = performance.now() - began;
  const { groupId, topic, partition } = last.where;
  const messages = reached;
  pipeline.events.emit('transaction:committed', () => ({ groupId, topic, partition, messages, durationMs, handlerMs }));
  announceAll(pipeline, members, outcomes, (i) => durations[i] ?? 0);
  return { kind: 'committed', count: messages, lastOffset: last.record.offset };
}

/**
 * The records of the next group, prepared: up to `limit` from `from`, ending before the first one
 * that must go alone (no id to claim, or known invalid without decoding: dead-lettered without a
 * claim by the single-record path and its fallbacks). Empty when the first record must go alone.
 */
async function groupMembers(
  pipeline: PipelineContext,
  handler: HandlerDefinition,
  records: readonly ConsumedRecord[],
  from: number,
  limit: number,
): Promise<PreparedRecord[]> {
  const members: PreparedRecord[] = [];
  const firstSeenAt = new Date();
  for (let i = 0; i < limit; i++) {
    const record = records[from + i];
    if (record === undefined) break;
    const prepared = prepareRecordNow(pipeline, handler, record, firstSeenAt);
    const p = prepared instanceof Promise ? await prepared : prepared;
    if (p.messageId === null || (p.decided && p.verdict.kind === 'invalid')) break;
    members.push(p);
  }
  return members;
}

/** Claims the members' ids in one statement, and reads the holders of those already taken. */
async function claimMembers(
  pipeline: PipelineContext,
  t: OpenTransaction,
  members: readonly PreparedRecord[],
): Promise<{ readonly conflicts: ReadonlySet<string>; readonly holders: ReadonlyMap<string, InboxEntry> }> {
  const first = members[0];
  if (first === undefined) return { conflicts: new Set(), holders: new Map() };
  const messageIds = members.map((p) => p.messageId ?? '');
  const conflicts = await claimGroup(t.client, {
    inboxScope: pipeline.inboxScope,
    topic: first.record.topic,
    partition: first.record.partition,
    messageIds,
    offsets: members.map((p) => p.record.offset),
    payloadHashes: concatDigests(members),
    attempts: members.map((p) => (p.decided && p.verdict.kind === 'skip' ? 0 : 1)),
    firstSeenAt: first.firstSeenAt,
  });
  if (conflicts.size === 0) return { conflicts, holders: new Map() };
  // Read with a fresh snapshot: it sees holders committed concurrently (the claim waited for
  // them) and the rows the claim inserted for an id that occurs twice in the group.
  const taken = members.filter((p) => conflicts.has(p.record.offset));
  const holders = await findInboxEntries(
    t.client,
    pipeline.inboxScope,
    taken.map((p) => p.messageId ?? ''),
    concatDigests(taken),
  );
  return { conflicts, holders };
}

/** The ids the claim took (not in `conflicts`) for members from `from` on (those a group ended before). */
function claimedIds(members: readonly PreparedRecord[], conflicts: ReadonlySet<string>, from = 0): string[] {
  const ids: string[] = [];
  for (let i = from; i < members.length; i++) {
    const p = members[i];
    if (p !== undefined && p.messageId !== null && !conflicts.has(p.record.offset)) ids.push(p.messageId);
  }
  return ids;
}
