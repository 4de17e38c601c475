/**
 * The printed report: one row per variant, the ratios next to their targets, the database's own
 * limits, and what each figure means. Targets are reported, never enforced.
 */
import type { DatabaseLimits } from './db-limits.js';
import type { LatencySummary } from './meter.js';
import { VARIANT_DESCRIPTIONS, type VariantName, type VariantResult } from './protocol.js';

export interface Ratio {
  readonly name: string;
  /** undefined when one of its variants did not run. */
  readonly value: number | undefined;
  readonly target: number;
  readonly aim: number | undefined;
  readonly verdict: 'meets aim' | 'meets target' | 'below target' | 'not measured';
}

/** Peak RSS every variant should stay under. */
export const RSS_LIMIT_MB = 300;

const RATIO_TARGETS: readonly { name: string; of: VariantName; to: VariantName; target: number; aim?: number }[] = [
  { name: 'B/R', of: 'B', to: 'R', target: 0.5, aim: 0.7 },
  { name: 'B/B0', of: 'B', to: 'B0', target: 0.85, aim: 0.9 },
  { name: 'P/P0', of: 'P', to: 'P0', target: 0.85, aim: 0.9 },
  { name: 'D/R', of: 'D', to: 'R', target: 0.5, aim: 0.7 },
  { name: 'B-full/B', of: 'B-full', to: 'B', target: 0.9 },
  // Metrics must cost at most 5 % of B's throughput.
  { name: 'B-metrics/B', of: 'B-metrics', to: 'B', target: 0.95 },
];

export function computeRatios(results: readonly VariantResult[]): Ratio[] {
  const rate = (name: VariantName): number | undefined => results.find((r) => r.variant === name)?.messagesPerSecond;
  return RATIO_TARGETS.map(({ name, of, to, target, aim }) => {
    const a = rate(of);
    const b = rate(to);
    const value = a === undefined || b === undefined ? undefined : a / b;
    const verdict =
      value === undefined
        ? 'not measured'
        : aim !== undefined && value >= aim
          ? 'meets aim'
          : value >= target
            ? 'meets target'
            : 'below target';
    return { name, value, target, aim, verdict };
  });
}

export const DEFINITIONS = {
  throughput:
    'msgs/s = outcomes committed ÷ seconds from the first message kafkajs delivered to the last commit (setup and shutdown excluded)',
  workLatency:
    'work p50/p99 = per message, start of the unit of work that carries it → the commit covering it: the message’s own transaction (decode and validation included) in P0/P, the chunk’s transaction in B0/B/B-full/D; oncely’s figure is the durationMs of its outcome event; none for R',
  deliveryLatency:
    'deliv p50/p99 = per message, kafkajs handing over the fetched batch that contains it → the commit covering it (includes waiting behind earlier messages of that batch)',
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

export function formatRatios(ratios: readonly Ratio[], results: readonly VariantResult[]): string {
  const rows = ratios.map((r) => [
    r.name,
    r.value === undefined ? '–' : r.value.toFixed(2),
    `≥ ${r.target.toFixed(2)}`,
    r.aim === undefined ? '' : `aim ${r.aim.toFixed(2)}`,
    r.verdict,
  ]);
  const peak = Math.max(0, ...results.map((r) => r.peakRssMb));
  rows.push([
    'peak RSS',
    `${int(peak)} MB`,
    `< ${RSS_LIMIT_MB} MB`,
    '',
    results.length === 0 ? 'not measured' : peak < RSS_LIMIT_MB ? 'meets target' : 'above target',
  ]);
  return columns(rows, [false, true, false, false, false]);
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
  return results.map((r) => `  ${r.variant.padEnd(7)} ${VARIANT_DESCRIPTIONS[r.variant]}`).join('\n');
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
