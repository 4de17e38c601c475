/**
 * The printed report: one row per variant, the ratios next to their targets, the database's own
 * limits, and what each figure means. Targets are reported, never enforced.
 */
import type { DatabaseLimits } from './db-limits.js';
import type { LatencySummary } from './meter.js';
import { VARIANT_DESCRIPTIONS, type VariantName, type VariantResult } from './protocol.js';

/** How a measured figure compares with a bound: `≥ bound` for ratios, `< bound` for peak RSS. */
export type Verdict = 'PASS' | 'MISS' | 'not measured' | 'report';

export interface Ratio {
  /** The key in latest.json's `ratios`, e.g. `B/B1`. */
  readonly name: string;
  /** undefined when one of its variants did not run. */
  readonly value: number | undefined;
  /** What the figure should reach; undefined: reported only. */
  readonly goal: number | undefined;
  /** What it must reach; undefined: reported only. */
  readonly must: number | undefined;
  readonly goalVerdict: Verdict;
  readonly mustVerdict: Verdict;
}

/** Peak RSS every variant must stay under, and the goal. */
export const RSS_LIMIT_MB = 300;
export const RSS_GOAL_MB = 250;

/**
 * The ratios of throughput, with the goal and the must of each. The first seven are the
 * per-message-handlers-at-batch-speed targets: against what a team would write by hand (B1, P1),
 * per-message handlers against batch mode (G/B), a replay against new work (D/B), the inbox's whole
 * cost (B/B0, reported only), and a long-lived inbox (B-full/B). The rest stay for comparison with
 * earlier runs: P/P1 and the raw/hand-written ones are reported only, B-metrics/B is the cost of
 * metrics (at most 5 %). G/G0 and G0/B split a grouped message's cost: the handler's own statement
 * against everything else. SK/S, GK/G and GK/B measure per-key lanes.
 */
const RATIO_TARGETS: readonly { name: string; of: VariantName; to: VariantName; goal?: number; must?: number }[] = [
  { name: 'B/B1', of: 'B', to: 'B1', goal: 1, must: 0.9 },
  { name: 'B/B0', of: 'B', to: 'B0', goal: 0.7 },
  { name: 'G/P1', of: 'G', to: 'P1', goal: 5, must: 3 },
  { name: 'G/B', of: 'G', to: 'B', goal: 0.8, must: 0.5 },
  { name: 'P/P1', of: 'P', to: 'P1' },
  { name: 'D/B', of: 'D', to: 'B', goal: 3, must: 2 },
  { name: 'B-full/B', of: 'B-full', to: 'B', goal: 0.95, must: 0.9 },
  { name: 'B-metrics/B', of: 'B-metrics', to: 'B', must: 0.95 },
  { name: 'P/P0', of: 'P', to: 'P0' },
  { name: 'G/P0', of: 'G', to: 'P0' },
  { name: 'G/G0', of: 'G', to: 'G0' },
  { name: 'G0/B', of: 'G0', to: 'B' },
  // Per-key lanes: a provider-bound handler (a step costs a 20 ms call and a synchronous commit of
  // its own), and commit grouping on lanes against grouping alone and against batch mode.
  { name: 'SK/S', of: 'SK', to: 'S', goal: 12, must: 6 },
  { name: 'GK/G', of: 'GK', to: 'G', goal: 2 },
  { name: 'GK/B', of: 'GK', to: 'B', goal: 0.5 },
  { name: 'B/R', of: 'B', to: 'R' },
  { name: 'D/R', of: 'D', to: 'R' },
];

const verdict = (
  value: number | undefined,
  bound: number | undefined,
  met: (v: number, b: number) => boolean,
): Verdict =>
  value === undefined ? 'not measured' : bound === undefined ? 'report' : met(value, bound) ? 'PASS' : 'MISS';

export function computeRatios(results: readonly VariantResult[]): Ratio[] {
  const rate = (name: VariantName): number | undefined => results.find((r) => r.variant === name)?.messagesPerSecond;
  const atLeast = (v: number, b: number): boolean => v >= b;
  return RATIO_TARGETS.map(({ name, of, to, goal, must }) => {
    const a = rate(of);
    const b = rate(to);
    const value = a === undefined || b === undefined ? undefined : a / b;
    return {
      name,
      value,
      goal,
      must,
      goalVerdict: verdict(value, goal, atLeast),
      mustVerdict: verdict(value, must, atLeast),
    };
  });
}

/** The largest peak RSS of the variants that ran, with its goal and must. */
export function peakRss(results: readonly VariantResult[]): Ratio {
  const value = results.length === 0 ? undefined : Math.max(...results.map((r) => r.peakRssMb));
  const below = (v: number, b: number): boolean => v < b;
  return {
    name: 'peakRssMb',
    value,
    goal: RSS_GOAL_MB,
    must: RSS_LIMIT_MB,
    goalVerdict: verdict(value, RSS_GOAL_MB, below),
    mustVerdict: verdict(value, RSS_LIMIT_MB, below),
  };
}

/** latest.json's `ratios`: each ratio and `peakRssMb` by name, null when not measured. */
export function ratiosByName(ratios: readonly Ratio[], rss: Ratio): Record<string, number | null> {
  const round = (v: number | undefined, digits: number): number | null =>
    v === undefined ? null : Number(v.toFixed(digits));
  const byName: Record<string, number | null> = {};
  for (const r of ratios) byName[r.name] = round(r.value, 3);
  byName[rss.name] = round(rss.value, 0);
  return byName;
}

export const DEFINITIONS = {
  throughput:
    'msgs/s = outcomes committed ÷ seconds from the first message kafkajs delivered to the last commit (setup and shutdown excluded)',
  workLatency:
    'work p50/p99 = per message, start of the unit of work that carries it → the commit covering it: the message’s own transaction (decode and validation included) in P0/P1/P, the chunk’s transaction in B0/B1/B/B-full/D; oncely’s figure is the durationMs of its outcome event (G: as oncely reports it for a grouped transaction); none for R',
  deliveryLatency:
    'deliv p50/p99 = per message, kafkajs handing over the fetched batch that contains it → the commit covering it (includes waiting behind earlier messages of that batch); P1 uses eachMessage, which hands over one message at a time, so its figure starts at that hand-over',
  cpu: 'cpu s = user+system CPU seconds of the variant’s process over the measured window; cpu % = cpu s ÷ wall s (one core = 100 %)',
  host: 'host % = how busy the whole machine (all cores: Kafka, PostgreSQL and the variant together) was over the window; 100 % = saturated',
  other:
    'other % = share of the machine used by processes outside this run (not the variant, the broker or the database) while the variant ran',
  rss: 'RSS = peak resident set of the variant’s process (process.resourceUsage().maxRSS)',
} as const;

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const ms = (l: LatencySummary | undefined, p: 'p50' | 'p99'): string =>
  l === undefined ? '–' : l[p] >= 100 ? int(l[p]) : l[p].toFixed(l[p] >= 10 ? 1 : 2);

export function formatTable(results: readonly VariantResult[]): string {
  const header = [
    'variant',
    'msgs/s',
    'wall s',
    'work p50',
    'work p99',
    'deliv p50',
    'deliv p99',
    'cpu s',
    'cpu %',
    'host %',
    'other %',
    'RSS MB',
    'check',
  ];
  const rows = results.map((r) => [
    r.variant,
    int(r.messagesPerSecond),
    r.seconds.toFixed(r.seconds < 10 ? 2 : 1),
    ms(r.workLatencyMs, 'p50'),
    ms(r.workLatencyMs, 'p99'),
    ms(r.deliveryLatencyMs, 'p50'),
    ms(r.deliveryLatencyMs, 'p99'),
    r.cpuSeconds.toFixed(1),
    `${Math.round((100 * r.cpuSeconds) / r.seconds)}`,
    r.hostBusy === undefined ? '–' : `${Math.round(100 * r.hostBusy)}`,
    r.otherLoad === undefined ? '–' : `${Math.round(100 * r.otherLoad)}`,
    int(r.peakRssMb),
    r.problems.length === 0 ? 'ok' : 'FAILED',
  ]);
  return columns([header, ...rows], [false, true, true, true, true, true, true, true, true, true, true, true, false]);
}

/** Processes outside the run using more than this share of the machine make a variant's figures suspect. */
export const DISTURBANCE_LIMIT = 0.1;

/** A warning line for each variant that shared the machine with something else. */
export function formatDisturbance(results: readonly VariantResult[]): string[] {
  const disturbed = results.filter((r) => (r.otherLoad ?? 0) > DISTURBANCE_LIMIT);
  if (disturbed.length === 0) return [];
  return [
    '',
    `  ⚠ other processes used more than ${100 * DISTURBANCE_LIMIT} % of the machine during ${disturbed.map((r) => r.variant).join(', ')}:`,
    '    those figures (and the ratios built on them) are low; run again on a quiet machine.',
  ];
}

export function formatRatios(ratios: readonly Ratio[], rss: Ratio): string {
  const bound = (b: number | undefined, op: string, unit: string, v: Verdict): string =>
    b === undefined
      ? v === 'not measured'
        ? ''
        : 'report'
      : `${op} ${b.toFixed(unit === '' ? 2 : 0)}${unit} ${v === 'not measured' ? '' : v}`.trimEnd();
  const rows = [
    ['ratio', 'value', 'goal', 'must'],
    ...ratios.map((r) => [
      r.name,
      r.value === undefined ? 'not measured' : r.value.toFixed(2),
      bound(r.goal, '≥', '', r.goalVerdict),
      bound(r.must, '≥', '', r.mustVerdict),
    ]),
    [
      'peak RSS',
      rss.value === undefined ? 'not measured' : `${int(rss.value)} MB`,
      bound(rss.goal, '<', ' MB', rss.goalVerdict),
      bound(rss.must, '<', ' MB', rss.mustVerdict),
    ],
  ];
  return columns(rows, [false, true, false, false]);
}

export function formatLimits(limits: DatabaseLimits): string {
  return columns(
    [
      ['commits/s, 1 connection (BEGIN; INSERT 1 row; COMMIT)', int(limits.commitsPerSecond1)],
      ['commits/s, 4 connections at once', int(limits.commitsPerSecond4)],
      ['rows/s, 1 connection, 500-row unnest INSERT per transaction', int(limits.batchedRowsPerSecond)],
    ],
    [false, true],
  );
}

export function formatVariantLegend(results: readonly VariantResult[]): string {
  return results.map((r) => `  ${r.variant.padEnd(9)} ${VARIANT_DESCRIPTIONS[r.variant]}`).join('\n');
}

function columns(rows: readonly (readonly string[])[], rightAligned: readonly boolean[]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((row) => [...(row[c] ?? '')].length))) ?? [];
  return rows
    .map((row) =>
      row
        .map((cell, c) => {
          const pad = ' '.repeat(Math.max(0, (widths[c] ?? 0) - [...cell].length));
          return rightAligned[c] === true ? pad + cell : cell + pad;
        })
        .join('  ')
        .trimEnd(),
    )
    .map((line) => `  ${line}`)
    .join('\n');
}
