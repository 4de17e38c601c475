import type { KafkaClient } from '../kafka/client.js';
import type pg from 'pg';
import type { Logger } from 'pino';

import { configError } from '../errors.js';
import { resolveInboxScope, type ScopeReader, scopeReaders } from '../inbox/scopes.js';
import { committedOffsets } from '../kafka/offsets.js';
import { withAdmin } from '../kafka/admin.js';
import {
  deleteInboxBatch,
  deleteResolvedDeadLetters,
  groupResumePoints,
  type PurgeBound,
  scopeHorizons,
  tryLockPurge,
  unlockPurge,
} from './store.js';

export const DAY_MS = 24 * 60 * 60 * 1000;

/** Extra work for the same job (sent outbox rows, expired idempotency keys): returns rows deleted. */
export type ExtraPurger = (pool: pg.Pool) => Promise<number>;

export interface PurgeOptions {
  readonly pool: pg.Pool;
  /** Kafka's committed offsets bound what may go: a kafkajs client. */
  readonly kafka: KafkaClient;
  /** The group asked about: the purge works on its inbox scope (see `inboxScope`). */
  readonly groupId: string;
  /**
   * The inbox scope to purge. Default: the scope the group's consumer recorded at its last start
   * (`oncely.group_scopes`), or the group id when it recorded none. A scope that contradicts the
   * recorded one is refused (`ONCELY_CONFIG`).
   */
  readonly inboxScope?: string;
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
  /** False when another process held this scope's purge lock: nothing was done. */
  readonly ran: boolean;
  /** The inbox scope purged. */
  readonly inboxScope: string;
  readonly inboxDeleted: number;
  readonly deadLettersDeleted: number;
  /** Rows each extra purger deleted, by name. */
  readonly extra: Readonly<Record<string, number>>;
  readonly batches: number;
  /** The scope's horizons after the purge. */
  readonly horizons: readonly { topic: string; partition: number; horizon: string }[];
}

/**
 * Deletes the inbox rows of the group's inbox scope that no redelivery can still need, and the
 * scope's resolved dead letters past their window. An inbox row goes only when it is older than
 * `inboxFor` **and** its offset is below both Kafka's committed offset and the `oncely.offsets`
 * resume point of its partition, for **every** group that reads the scope: a message Kafka or the
 * database could still hand to a consumer of the scope keeps its row (a consumer down longer than
 * the window, with processed but uncommitted messages, must still find them). Each batch raises
 * the partition's horizon in the same transaction. One purge per scope at a time: a second
 * caller returns at once with `ran: false`.
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
  const inboxScope = await resolveInboxScope(pool, groupId, options.inboxScope);

  const client = await pool.connect();
  let broken: unknown;
  let done: PurgeResult | undefined;
  let readerIds: string[] = [];
  try {
    if (!(await tryLockPurge(client, inboxScope))) {
      options.logger?.info({ groupId, inboxScope }, 'another process is purging this inbox scope; skipped');
      return { ran: false, inboxScope, inboxDeleted: 0, deadLettersDeleted: 0, extra: {}, batches: 0, horizons: [] };
    }
    try {
      const readers = await scopeReaders(client, inboxScope, groupId);
      const bounds = await purgeBounds(client, options.kafka, readers);
      const cutoff = new Date(now.getTime() - inboxFor);
      let inboxDeleted = 0;
      let batches = 0;
      let after: Date | undefined;
      // Oldest first; `after` skips the rows older than the last deleted one that were kept
      // (offsets not yet committed), so they are not scanned again on every batch.
      while (bounds.length > 0 && options.signal?.aborted !== true) {
        const batch = await deleteInboxBatch(client, { inboxScope, bounds, cutoff, after, limit: batchSize });
        batches++;
        inboxDeleted += batch.deleted;
        if (batch.deleted < batchSize) break;
        after = batch.last;
        await pause(pauseMs);
      }
      let deadLettersDeleted = 0;
      const deadLetterCutoff = new Date(now.getTime() - deadLettersFor);
      while (options.signal?.aborted !== true) {
        const deleted = await deleteResolvedDeadLetters(client, inboxScope, deadLetterCutoff, batchSize);
        batches++;
        deadLettersDeleted += deleted;
        if (deleted < batchSize) break;
        await pause(pauseMs);
      }
      const horizons = (await scopeHorizons(client, inboxScope)).map((h) => ({ ...h, horizon: h.horizon.toString() }));
      readerIds = readers.map((r) => r.groupId);
      done = { ran: true, inboxScope, inboxDeleted, deadLettersDeleted, extra: {}, batches, horizons };
    } finally {
      await unlockPurge(client, inboxScope).catch((error: unknown) => {
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
  // The extra purgers take connections of their own from the pool: run after this one went back,
  // never while holding it (DESIGN §3a: no connection held while waiting for another). Each of
  // them is safe to run from several processes at once, so the scope's lock is not needed.
  if (done === undefined) throw new Error('retention purge ended without a result');
  const extra: Record<string, number> = {};
  for (const [name, purger] of Object.entries(options.extraPurgers ?? {})) {
    if (options.signal?.aborted === true) break;
    extra[name] = await purger(pool);
  }
  const result: PurgeResult = { ...done, extra };
  options.logger?.info(
    {
      groupId,
      inboxScope,
      readers: readerIds,
      inboxDeleted: result.inboxDeleted,
      deadLettersDeleted: result.deadLettersDeleted,
      extra,
      batches: result.batches,
    },
    'retention purge done',
  );
  return result;
}

/**
 * Per partition any reader of the scope has a resume point for: the lowest, over every group that
 * reads the scope and consumes that topic, of the lower of its resume point and Kafka's committed
 * offset. A reader of the topic with no committed offset or no resume point on that partition
 * gives 0 — nothing of it may go, since a consumer starting there could be handed every record
 * again (a renamed group that has not caught up yet, a group retired but not forgotten).
 */
async function purgeBounds(
  client: pg.ClientBase,
  kafka: KafkaClient,
  readers: readonly ScopeReader[],
): Promise<PurgeBound[]> {
  const positions = await Promise.all(
    readers.map(async (reader) => {
      const resume = await groupResumePoints(client, reader.groupId);
      // The topics it consumes now, and every topic it has a position on (it may consume it again).
      const topics = new Set([...(reader.topics ?? []), ...resume.map((r) => r.topic)]);
      return { reader, resume, topics };
    }),
  );
  const below = new Map<string, { topic: string; partition: number; below: bigint }>();
  const key = (topic: string, partition: number): string => JSON.stringify([topic, partition]);
  await withAdmin(kafka, async (admin) => {
    const perReader = await Promise.all(
      positions.map(async ({ reader, resume, topics }) => {
        const committed = new Map<string, Map<number, bigint>>();
        for (const topic of topics) committed.set(topic, await committedOffsets(admin, reader.groupId, topic));
        return { resume, topics, committed };
      }),
    );
    // The partitions in question: every one some reader has a resume point for.
    for (const { resume } of perReader) {
      for (const r of resume)
        below.set(key(r.topic, r.partition), { topic: r.topic, partition: r.partition, below: -1n });
    }
    for (const bound of below.values()) {
      for (const { resume, topics, committed } of perReader) {
        if (!topics.has(bound.topic)) continue;
        const resumePoint = resume.find((r) => r.topic === bound.topic && r.partition === bound.partition)?.nextOffset;
        const kafkaOffset = committed.get(bound.topic)?.get(bound.partition);
        // Without both positions nothing of the partition may go. A missing Kafka offset is not
        // replaced by the resume point alone: after a topic was deleted and re-created that
        // resume point belongs to the old log (the partition pauses as other-log), and its rows
        // must stay until an operator decides where the group resumes.
        const mine =
          resumePoint === undefined || kafkaOffset === undefined
            ? 0n
            : kafkaOffset < resumePoint
              ? kafkaOffset
              : resumePoint;
        if (bound.below < 0n || mine < bound.below) bound.below = mine;
      }
    }
  });
  return [...below.values()].filter((b) => b.below > 0n);
}

function pause(ms: number): Promise<void> {
  return ms <= 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, ms));
}
