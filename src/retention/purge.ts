import type { Kafka } from 'kafkajs';
import type pg from 'pg';
import type { Logger } from 'pino';

import { configError } from '../errors.js';
import { committedOffsets } from '../kafka/offsets.js';
import { withAdmin } from '../replay/kafka-admin.js';
import {
  deleteInboxBatch,
  deleteResolvedDeadLetters,
  groupHorizons,
  groupResumePoints,
  type PurgeBound,
  tryLockPurge,
  unlockPurge,
} from './store.js';

export const DAY_MS = 24 * 60 * 60 * 1000;

/** Extra work for the same job (sent outbox rows, expired idempotency keys): returns rows deleted. */
export type ExtraPurger = (pool: pg.Pool) => Promise<number>;

export interface PurgeOptions {
  readonly pool: pg.Pool;
  /** Kafka's committed offsets bound what may go: a kafkajs client. */
  readonly kafka: Kafka;
  readonly groupId: string;
  /** Keep inbox rows processed within this many milliseconds. Default 7 days. */
  readonly inboxFor?: number;
  /** Keep resolved (retried or discarded) dead letters resolved within this many ms. Default 30 days. Open ones are never purged. */
  readonly deadLettersFor?: number;
  /** Rows deleted per statement (each its own short transaction). Default 5,000. */
  readonly batchSize?: number;
  /** Pause between batches, so claims never queue behind the purge. Default 20 ms. */
  readonly pauseMs?: number;
  /** Further purgers run by the same job, by name. Default none. */
  readonly extraPurgers?: Readonly<Record<string, ExtraPurger>>;
  /** Stops between batches when aborted; what was deleted stays deleted. */
  readonly signal?: AbortSignal;
  readonly logger?: Logger;
  /** The clock, for tests. Default `() => new Date()`. */
  readonly now?: () => Date;
}

export interface PurgeResult {
  /** False when another process held this group's purge lock: nothing was done. */
  readonly ran: boolean;
  readonly inboxDeleted: number;
  readonly deadLettersDeleted: number;
  /** Rows each extra purger deleted, by name. */
  readonly extra: Readonly<Record<string, number>>;
  readonly batches: number;
  /** The group's horizons after the purge. */
  readonly horizons: readonly { topic: string; partition: number; horizon: string }[];
}

/**
 * Deletes the group's inbox rows that no redelivery can still need, and resolved dead letters
 * past their window. An inbox row goes only when it is older than `inboxFor` **and** its offset
 * is below both Kafka's committed offset and the `oncely.offsets` resume point of its partition:
 * a message Kafka or the database could still hand to a consumer keeps its row (a consumer down
 * longer than the window, with processed but uncommitted messages, must still find them).
 * Each batch raises the partition's horizon in the same transaction. One purge per group at a
 * time: a second caller returns at once with `ran: false`.
 */
export async function purge(options: PurgeOptions): Promise<PurgeResult> {
  const inboxFor = options.inboxFor ?? 7 * DAY_MS;
  const deadLettersFor = options.deadLettersFor ?? 30 * DAY_MS;
  const batchSize = options.batchSize ?? 5_000;
  const pauseMs = options.pauseMs ?? 20;
  if (!(inboxFor >= 0) || !(deadLettersFor >= 0)) throw configError('inboxFor', 'windows must be 0 ms or more');
  if (!Number.isInteger(batchSize) || batchSize < 1) throw configError('batchSize', 'must be a whole number ≥ 1');
  const now = (options.now ?? (() => new Date()))();
  const { pool, groupId } = options;

  const client = await pool.connect();
  let broken: unknown;
  try {
    if (!(await tryLockPurge(client, groupId))) {
      options.logger?.info({ groupId }, 'another process is purging this group; skipped');
      return { ran: false, inboxDeleted: 0, deadLettersDeleted: 0, extra: {}, batches: 0, horizons: [] };
    }
    try {
      const bounds = await purgeBounds(client, options.kafka, groupId);
      const cutoff = new Date(now.getTime() - inboxFor);
      let inboxDeleted = 0;
      let batches = 0;
      let after: Date | undefined;
      // Oldest first; `after` skips the rows older than the last deleted one that were kept
      // (offsets not yet committed), so they are not scanned again on every batch.
      while (bounds.length > 0 && options.signal?.aborted !== true) {
        const batch = await deleteInboxBatch(client, { groupId, bounds, cutoff, after, limit: batchSize });
        batches++;
        inboxDeleted += batch.deleted;
        if (batch.deleted < batchSize) break;
        after = batch.last;
        await pause(pauseMs);
      }
      let deadLettersDeleted = 0;
      const deadLetterCutoff = new Date(now.getTime() - deadLettersFor);
      while (options.signal?.aborted !== true) {
        const deleted = await deleteResolvedDeadLetters(client, groupId, deadLetterCutoff, batchSize);
        batches++;
        deadLettersDeleted += deleted;
        if (deleted < batchSize) break;
        await pause(pauseMs);
      }
      const extra: Record<string, number> = {};
      for (const [name, purger] of Object.entries(options.extraPurgers ?? {})) {
        if (options.signal?.aborted === true) break;
        extra[name] = await purger(pool);
      }
      const horizons = (await groupHorizons(client, groupId)).map((h) => ({ ...h, horizon: h.horizon.toString() }));
      options.logger?.info({ groupId, inboxDeleted, deadLettersDeleted, extra, batches }, 'retention purge done');
      return { ran: true, inboxDeleted, deadLettersDeleted, extra, batches, horizons };
    } finally {
      await unlockPurge(client, groupId).catch((error: unknown) => {
        broken = error;
      });
    }
  } catch (error) {
    broken ??= error;
    throw error;
  } finally {
    // A connection that failed mid-purge may still hold the session lock: destroy it, which frees the lock.
    client.release(broken instanceof Error ? broken : undefined);
  }
}

/**
 * Per partition the group has a resume point for: the lower of that resume point and Kafka's
 * committed offset. A partition Kafka has no committed offset for gets 0 — nothing of it may go,
 * since a consumer starting there could be handed every record again.
 */
async function purgeBounds(client: pg.ClientBase, kafka: Kafka, groupId: string): Promise<PurgeBound[]> {
  const resume = await groupResumePoints(client, groupId);
  const topics = [...new Set(resume.map((r) => r.topic))];
  const committed = new Map<string, Map<number, bigint>>();
  await withAdmin(kafka, async (admin) => {
    for (const topic of topics) committed.set(topic, await committedOffsets(admin, groupId, topic));
  });
  return resume
    .map((r) => {
      const kafkaOffset = committed.get(r.topic)?.get(r.partition) ?? 0n;
      return { topic: r.topic, partition: r.partition, below: kafkaOffset < r.nextOffset ? kafkaOffset : r.nextOffset };
    })
    .filter((b) => b.below > 0n);
}

function pause(ms: number): Promise<void> {
  return ms <= 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, ms));
}
