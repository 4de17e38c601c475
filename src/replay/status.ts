import type pg from 'pg';

import { markReplayCompleted, readReplays, replayProgressCounts } from './store.js';

export interface ReplayProgress {
  readonly id: string;
  readonly groupId: string;
  readonly topic: string;
  readonly from: string;
  readonly to: string;
  readonly forced: boolean;
  readonly requestedBy: string;
  readonly createdAt: Date;
  /** Set once the group's resume point passed the end of every range. */
  readonly completedAt: Date | null;
  readonly partitions: readonly {
    readonly partition: number;
    readonly start: string;
    readonly end: string;
    /** The group's resume point now. */
    readonly position: string | null;
    /** Messages newly applied in the range since the replay began (never processed before). */
    readonly appliedSoFar: number;
    /** Offsets re-read and recorded as duplicates (skipped or dead-lettered before) so far. */
    readonly skippedSoFar: number;
  }[];
}

/**
 * Each recent replay's progress: the group's resume point against the range end, per partition.
 * A replay whose group has passed every range end is marked completed (once) and kept listed.
 */
export async function replayStatus(
  pool: pg.Pool,
  filter: { readonly groupId?: string; readonly limit?: number } = {},
): Promise<ReplayProgress[]> {
  const replays = await readReplays(pool, filter);
  const result: ReplayProgress[] = [];
  for (const replay of replays) {
    const counts = await replayProgressCounts(pool, replay);
    const partitions = replay.ranges.map((range) => {
      const count = counts.get(range.partition);
      const position = count?.position;
      const reached =
        position === undefined ? BigInt(range.start) : position < BigInt(range.end) ? position : BigInt(range.end);
      const covered = reached > BigInt(range.start) ? Number(reached - BigInt(range.start)) : 0;
      const appliedSoFar = count?.appliedSince ?? 0;
      return {
        partition: range.partition,
        start: range.start,
        end: range.end,
        position: position?.toString() ?? null,
        appliedSoFar,
        skippedSoFar: Math.max(0, covered - appliedSoFar),
      };
    });
    let completedAt = replay.completedAt;
    if (completedAt === null && partitions.every((p) => p.position !== null && BigInt(p.position) >= BigInt(p.end))) {
      await markReplayCompleted(pool, replay.id);
      completedAt = new Date();
    }
    result.push({
      id: replay.id,
      groupId: replay.groupId,
      topic: replay.topic,
      from: replay.from,
      to: replay.to,
      forced: replay.forced,
      requestedBy: replay.requestedBy,
      createdAt: replay.createdAt,
      completedAt,
      partitions,
    });
  }
  return result;
}
