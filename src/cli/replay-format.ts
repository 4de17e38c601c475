import { table as outputTable } from './output.js';
import type { ReplayPlan } from '../replay/plan.js';

/** The plan as an operator reads it: one row per partition and the totals. */
export function formatReplayPlan(plan: ReplayPlan): string {
  const table = outputTable([
    'partition',
    'range',
    'messages',
    'skip (in inbox)',
    'apply (new)',
    'AT RISK',
    'dead-lettered',
    'gone from Kafka',
  ]);
  for (const p of plan.partitions) {
    table.push([
      String(p.partition),
      `${p.start}–${p.end}`,
      String(p.messages),
      String(p.skipped),
      String(p.applied),
      p.atRiskRange === null ? String(p.atRisk) : `${p.atRisk} (${p.atRiskRange.first}–${p.atRiskRange.last})`,
      String(p.deadLettered),
      String(p.gone),
    ]);
  }
  const t = plan.totals;
  table.push([
    'total',
    '',
    String(t.messages),
    String(t.skipped),
    String(t.applied),
    String(t.atRisk),
    String(t.deadLettered),
    String(t.gone),
  ]);
  const extended = plan.partitions.filter((p) => p.extendedFrom !== null);
  const horizons = plan.partitions.filter((p) => p.horizon !== null).map((p) => `${p.partition}: ${p.horizon}`);
  return [
    `Replay plan · group ${plan.groupId}${plan.inboxScope === plan.groupId ? '' : ` · inbox scope ${plan.inboxScope}`} · topic ${plan.topic} · from ${plan.from} to ${plan.to} (end exclusive)`,
    table.toString(),
    ...(extended.length === 0
      ? []
      : [
          `Extended to the group's position (a run re-reads up to there): ${extended.map((p) => `partition ${p.partition} ${p.extendedFrom} → ${p.end}`).join(', ')}`,
        ]),
    `Inbox horizons (complete at and above): ${horizons.length === 0 ? 'none (nothing purged)' : horizons.join(', ')}` +
      (plan.purgedUntil === null
        ? ''
        : `; last purge of the scope ${plan.purgedUntil} (messages written before it and not in the inbox are at risk)`),
    t.atRisk > 0
      ? `${t.atRisk} message(s) AT RISK: below the horizon or written before the last purge, their inbox rows may have been purged and they could apply twice. \`replay run\` refuses without --force.`
      : 'Nothing at risk: `replay run` would apply only the messages counted as new.',
    `Planned in ${plan.durationMs} ms.`,
  ].join('\n');
}
