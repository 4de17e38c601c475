/** Waiting out a failure: backing off while heartbeating, and storing an outcome until it commits. */
import type { OpenTransaction } from '../../inbox/transaction.js';

import { locate } from './announce.js';
import type { Outcome, PartitionControl, PipelineContext } from '../context.js';
import { describeError, redactError } from './error-record.js';
import type { MessageCoordinates } from '../../events/index.js';
import { classifyAttemptFailure, FailureBudget } from '../retry.js';

/**
 * Runs an oncely-only transaction (dead-lettering) until it commits. An outage is waited out for
 * as long as the partition is ours: giving up would lose the record's outcome. Any other failure
 * is retried per the policy, then `fallback` (a smaller record of the same outcome) is tried the
 * same way; if that cannot be stored either, the partition stops here with `unrecordable`, an
 * alert — never a skip, never an endless loop.
 */
export async function untilCommitted(
  pipeline: PipelineContext,
  control: PartitionControl,
  where: MessageCoordinates,
  work: (t: OpenTransaction) => Promise<Outcome>,
  fallback?: (t: OpenTransaction) => Promise<Outcome>,
): Promise<Outcome> {
  let budget = new FailureBudget(pipeline.retry);
  for (;;) {
    let failure: unknown;
    try {
      return await control.transactions.run(work);
    } catch (caught) {
      failure = caught;
    }
    const { error, kind } = classifyAttemptFailure(failure);
    const next = budget.next(kind);
    if (!next.retry) {
      if (fallback !== undefined) {
        pipeline.logger.error(
          { ...locate(where), err: redactError(error) },
          'the outcome could not be stored as it is; storing it without headers and with a shortened error',
        );
        work = fallback;
        fallback = undefined;
        budget = new FailureBudget(pipeline.retry);
        continue;
      }
      const stored = describeError(error);
      pipeline.logger.error(
        { ...locate(where), err: redactError(error) },
        'the outcome of this message cannot be stored; stopping the partition here instead of skipping it',
      );
      return { kind: 'unrecordable', messageId: where.messageId, error: stored, attempts: budget.attempts };
    }
    pipeline.logger.warn(
      { ...locate(where), err: redactError(error), delayMs: next.delayMs },
      'could not record the outcome; retrying',
    );
    if (!(await waitHeartbeating(next.delayMs, control))) return { kind: 'abandoned' };
  }
}

/** Waits `ms`, heartbeating; false when the partition stopped being ours to work on meanwhile. */
export async function waitHeartbeating(ms: number, control: PartitionControl): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (!control.isActive()) return false;
    await control.heartbeat();
    const left = until - Date.now();
    if (left <= 0) return control.isActive();
    await new Promise((resolve) => setTimeout(resolve, Math.min(left, 250)));
  }
}
