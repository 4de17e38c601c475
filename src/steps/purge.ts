import type pg from 'pg';

import { configError } from '../errors.js';
import { deleteOldSteps } from './store.js';

export interface PurgeStepsOptions {
  /**
   * The retention window: a number of milliseconds before now, or a cutoff time. A row goes when it
   * is older than this AND its owner's inbox row is gone or older too (a message's steps go with its
   * inbox row; an HTTP request's steps, which have no inbox row, by age alone). Required.
   */
  readonly olderThan: number | Date;
  /** Rows deleted per statement (short lock times). Default 1000. */
  readonly batchSize?: number;
}

/**
 * Deletes expired `oncely.steps` rows in small batches, oldest first; returns how many. Safe to run
 * from several processes at once (rows locked by another purge are skipped). Steps of a message
 * whose inbox row is still kept stay: while a message can be delivered again, its completed steps
 * must still be found, or a redelivery would call the provider again.
 */
export async function purgeSteps(pool: pg.Pool, options: PurgeStepsOptions): Promise<number> {
  const { olderThan } = options;
  const batchSize = options.batchSize ?? 1000;
  if (
    !(olderThan instanceof Date) &&
    !(typeof olderThan === 'number' && Number.isFinite(olderThan) && olderThan >= 0)
  ) {
    throw configError('purgeSteps.olderThan', 'give the window in milliseconds (e.g. 7 * 24 * 3600_000) or a Date');
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw configError('purgeSteps.batchSize', 'give a positive integer (default 1000)');
  }
  const cutoff = olderThan instanceof Date ? olderThan : new Date(Date.now() - olderThan);
  return deleteOldSteps(pool, cutoff, batchSize);
}
