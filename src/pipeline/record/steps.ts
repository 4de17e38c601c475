/**
 * How the pipeline gives handlers `ctx.step` and undoes completed steps when a message is finally
 * dead-lettered (docs/steps.md). The steps themselves live in src/steps/.
 */
import type pg from 'pg';

import type { StoredError } from '../../inbox/dead-letters.js';
import {
  type CompensationReport,
  createStepRunner,
  type StepFunction,
  type StepRunner,
  stepRunnerWithRecorded,
} from '../../steps/runner.js';
import { loadMessageSteps, type StoredStep } from '../../steps/store.js';

import { locate } from './announce.js';
import type { PartitionControl, PipelineContext } from '../context.js';
import type { MessageCoordinates } from '../../events/index.js';
import type { BatchStepFunction } from '../handler.js';
import { backoffDelay } from '../retry.js';
import { waitHeartbeating } from './waiting.js';

/** The steps of one handler attempt. `finish()` runs after the handler returned. */
export interface AttemptSteps<F> {
  readonly step: F;
  /** Throws (non-retriable) when the attempt found the message's compensation begun. */
  finish(): void;
}

/**
 * One message's steps across its attempts: each attempt gets a fresh runner (step names are unique
 * per run) that carries the compensate functions of the earlier ones, so the dead-letter point
 * knows every compensation this process saw. Runners are made on the first `ctx.step` call only:
 * handlers without steps pay nothing.
 */
export class MessageSteps {
  private last: StepRunner | undefined;
  /** The message's step rows as read after its claim, for the first attempt only (see readGroupSteps). */
  private recorded: ReadonlyMap<string, StoredStep> | undefined;
  /** The handler the steps run in: once it calls a step, its commit groups read steps ahead. */
  private readonly handler: object | undefined;

  /** `handler` and `recorded`: a commit group's member (see readGroupSteps); neither elsewhere. */
  constructor(
    private readonly pool: pg.Pool,
    readonly scope: string,
    readonly ownerId: string,
    handler?: object,
    recorded?: ReadonlyMap<string, StoredStep>,
  ) {
    this.handler = handler;
    this.recorded = recorded;
  }

  /**
   * Forgets the rows read with the group's claim: called when the group failed before this
   * message's attempt took them, so that its next attempt, in another transaction, reads afresh.
   */
  forgetRecorded(): void {
    this.recorded = undefined;
  }

  attempt(signal: () => AbortSignal): AttemptSteps<StepFunction> {
    let runner: StepRunner | undefined;
    // Read after this attempt's claim, so current for it; a later attempt reads afresh.
    const recorded = this.recorded;
    this.recorded = undefined;
    const current = (): StepRunner => {
      if (runner !== undefined) return runner;
      if (this.handler !== undefined) handlersWithSteps.add(this.handler);
      const options = { pool: this.pool, scope: this.scope, ownerId: this.ownerId, signal, previous: this.last };
      runner = this.last =
        recorded === undefined ? createStepRunner(options) : stepRunnerWithRecorded(options, recorded);
      return runner;
    };
    return {
      step: (name, fn, options) => current().step(name, fn, options),
      finish: () => runner?.assertNotCompensating(),
    };
  }

  /** The runner compensation uses: the last attempt's (with every compensate function seen). */
  runner(): StepRunner {
    this.last ??= createStepRunner({ pool: this.pool, scope: this.scope, ownerId: this.ownerId });
    return this.last;
  }
}

/**
 * Handlers seen calling `ctx.step` in a commit group: their groups read every member's step rows in
 * one statement after the claim, instead of one read per member at its first step. A handler
 * without steps never pays for the read.
 */
const handlersWithSteps = new WeakSet<object>();

/** No step rows: what a member whose id has none was read to have. */
const NO_STEPS: ReadonlyMap<string, StoredStep> = new Map();

/**
 * The step rows of a commit group's claimed members, when the group's handler uses steps: for each
 * id read, its rows (most have none); undefined for any other id, and in place of the whole read
 * when it cannot be current (see loadMessageSteps). Runs in the group's transaction, after its
 * claim, which is what makes the read current.
 */
export async function readGroupSteps(
  pipeline: PipelineContext,
  handler: object,
  client: pg.ClientBase,
  messageIds: readonly string[],
): Promise<((messageId: string) => ReadonlyMap<string, StoredStep> | undefined) | undefined> {
  if (messageIds.length === 0 || !handlersWithSteps.has(handler)) return undefined;
  const steps = await loadMessageSteps(client, pipeline.inboxScope, messageIds);
  if (steps === undefined) return undefined;
  const read = new Set(messageIds);
  // An id the claim did not take (a duplicate) was not read: its map would be empty, not current.
  return (messageId) => (read.has(messageId) ? (steps.get(messageId) ?? NO_STEPS) : undefined);
}

/** The steps of a message handled outside a partition's loop (a dead letter retried by hand). */
export function singleAttemptSteps(
  pool: pg.Pool,
  scope: string,
  ownerId: string,
  signal: () => AbortSignal,
): AttemptSteps<StepFunction> {
  return new MessageSteps(pool, scope, ownerId).attempt(signal);
}

/** Per-record steps of batch processing, kept across chunk attempts and splits with the record. */
const recordSteps = new WeakMap<object, MessageSteps>();

/** The steps of one record (any object that lives as long as the record is in flight) of a group. */
export function stepsOfRecord(pipeline: PipelineContext, record: object, messageId: string): MessageSteps {
  let steps = recordSteps.get(record);
  if (steps === undefined) {
    steps = new MessageSteps(pipeline.pool, pipeline.inboxScope, messageId);
    recordSteps.set(record, steps);
  }
  return steps;
}

/**
 * `ctx.step(event, name, fn)` for one attempt of a batch handler: steps belong to the event's
 * message. `records` are the attempt's events' records.
 */
export function batchAttemptSteps(
  pipeline: PipelineContext,
  records: readonly { readonly messageId: string | null }[],
  signal: () => AbortSignal,
): AttemptSteps<BatchStepFunction> {
  const attempts = new Map<string, AttemptSteps<StepFunction>>();
  // By id, made at the first ctx.step: most batch handlers never call it.
  let byId: Map<string | null, object> | undefined;
  return {
    step: (event, name, fn, options) => {
      const messageId = event.messageId;
      let steps = attempts.get(messageId);
      if (steps === undefined) {
        byId ??= new Map(records.map((r) => [r.messageId, r]));
        const record = byId.get(messageId);
        if (record === undefined) {
          throw new TypeError(`ctx.step: message ${messageId} is not one of this batch's events; pass an event of it`);
        }
        steps = stepsOfRecord(pipeline, record, messageId).attempt(signal);
        attempts.set(messageId, steps);
      }
      return steps.step(name, fn, options);
    },
    finish: () => {
      for (const steps of attempts.values()) steps.finish();
    },
  };
}

/**
 * Undoes a message's completed steps before its dead letter is recorded, with the consumer's retry
 * policy per compensation, and returns the error to store with the dead letter (the compensation
 * report added when there was anything to undo). Runs before the dead letter commits on purpose: a
 * crash mid-way leaves the message without an outcome, so it is redelivered, its handler re-run
 * (completed steps replay from their rows, which brings back their compensate functions, and the
 * `compensate:` marker makes the attempt give up at once), and compensation resumes where it
 * stopped — each compensation is a recorded step, never repeated. `undefined`: the partition was
 * lost meanwhile (the message is redelivered and compensation resumes there).
 */
export async function compensateSteps(
  pipeline: PipelineContext,
  control: PartitionControl,
  steps: MessageSteps,
  where: MessageCoordinates,
  error: StoredError,
): Promise<StoredError | undefined> {
  for (let failures = 1; ; failures++) {
    let report: CompensationReport;
    // A slow refund must not get the member evicted meanwhile, as in runBounded.
    const heartbeats = setInterval(() => void control.heartbeat().catch(() => undefined), 1_000);
    try {
      report = await steps.runner().compensate({
        attempts: pipeline.retry.attempts,
        delayMs: (n) => backoffDelay(pipeline.retry, n),
        // Heartbeating while waiting keeps the partition ours; losing it stops compensation here.
        wait: (ms) => waitHeartbeating(ms, control),
        // Each try gets the handler's time limit: a hung refund must not hold the partition forever.
        timeoutMs: pipeline.handlerTimeoutMs,
      });
    } catch (failure) {
      // The database failed (reading or recording a step): retry while the partition is ours.
      const delayMs = backoffDelay(pipeline.retry, failures);
      pipeline.logger.warn({ ...locate(where), err: failure, delayMs }, 'could not compensate the steps; retrying');
      if (!(await waitHeartbeating(delayMs, control))) return undefined;
      continue;
    } finally {
      clearInterval(heartbeats);
    }
    if (report.stopped) return undefined;
    if (report.failed.length > 0 || report.unknown.length > 0) {
      pipeline.logger.error(
        { ...locate(where), compensation: { failed: report.failed.map((f) => f.step), unknown: report.unknown } },
        'some steps of a dead-lettered message could not be compensated',
      );
    }
    const nothing = report.compensated.length === 0 && report.failed.length === 0 && report.unknown.length === 0;
    if (nothing) return error;
    const { stopped: _stopped, ...compensation } = report;
    return { ...error, compensation };
  }
}
