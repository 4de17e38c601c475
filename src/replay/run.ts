import { hostname, userInfo } from 'node:os';

import { OncelyError } from '../errors.js';
import { assertNoLiveMembers, withAdmin } from '../kafka/admin.js';
import { moveGroupOffsets, type ResetResult } from './offsets.js';
import { type PlanReplayOptions, planReplay, type ReplayPlan } from './plan.js';
import { insertReplay } from './store.js';

export interface RunReplayOptions extends PlanReplayOptions {
  /**
   * Proceed although messages in the range are at risk (their ids' inbox rows may have been
   * purged, so they could be applied twice). Default false: refused.
   */
  readonly force?: boolean;
  /** Who asked, for the audit row. Default `<os user>@<host>`. */
  readonly requestedBy?: string;
}

export interface ReplayRunResult {
  /** The id of the audit row in `oncely.replays`. */
  readonly replayId: string;
  readonly plan: ReplayPlan;
  readonly forced: boolean;
  /** The offsets moved, per partition (partitions already at or before the range start are left as they are). */
  readonly offsets: ResetResult;
}

/**
 * Plans the replay, then rewinds the group: refuses while the group has live members
 * (`ONCELY_GROUP_ACTIVE`, naming them) and, unless `force`, when anything is at risk
 * (`ONCELY_REPLAY_AT_RISK`, naming the ranges). Moves Kafka's committed offsets and
 * `oncely.offsets` to the first offset to re-read, and writes the audit row in the same
 * database transaction as the resume points. The group's own consumers then re-consume.
 */
export async function runReplay(options: RunReplayOptions): Promise<ReplayRunResult> {
  const { groupId, topic } = options;
  // Fail fast, before reading the range; moveGroupOffsets checks again right before moving.
  await withAdmin(options.kafka, (admin) => assertNoLiveMembers(admin, groupId, `replay ${topic}`));
  const plan = await planReplay(options);
  const forced = options.force === true;
  if (plan.totals.atRisk > 0 && !forced) {
    const ranges = plan.partitions
      .filter((p) => p.atRiskRange !== null)
      .map((p) => `partition ${p.partition} offsets ${p.atRiskRange?.first}–${p.atRiskRange?.last} (${p.atRisk})`)
      .join('; ');
    throw new OncelyError(
      'ONCELY_REPLAY_AT_RISK',
      `Refused: ${plan.totals.atRisk} message${plan.totals.atRisk === 1 ? ' is' : 's are'} at risk of being applied twice, ` +
        `their inbox rows in scope "${plan.inboxScope}" may have been purged (below the horizon, or written before the last purge): ${ranges}. ` +
        'Start the range after them, or pass --force (force: true) if applying them again is acceptable.',
      { context: { groupId, inboxScope: plan.inboxScope, topic, atRisk: plan.totals.atRisk } },
    );
  }
  // Only partitions the group would re-read: one already at or before the range start is left
  // alone (moving it forward would skip messages it has not processed).
  const targets = plan.partitions
    .filter((p) => p.position === null || BigInt(p.readFrom) < BigInt(p.position))
    .filter((p) => BigInt(p.readFrom) < BigInt(p.end))
    .map((p) => ({ partition: p.partition, offset: BigInt(p.readFrom) }));
  let replayId = '';
  const offsets = await moveGroupOffsets(
    { pool: options.pool, kafka: options.kafka, groupId, topic, to: 'earliest' },
    async (client) => {
      replayId = await insertReplay(client, {
        groupId,
        inboxScope: plan.inboxScope,
        topic,
        from: plan.from,
        to: plan.to,
        ranges: plan.partitions
          .filter((p) => targets.some((t) => t.partition === p.partition))
          .map((p) => ({ partition: p.partition, start: p.readFrom, end: p.end })),
        report: plan,
        forced,
        requestedBy: options.requestedBy ?? defaultRequester(),
      });
    },
    targets,
  );
  return { replayId, plan, forced, offsets };
}

function defaultRequester(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (some containers): keep 'unknown'
  }
  return `${user}@${hostname()}`;
}
