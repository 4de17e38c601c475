/**
 * What a variant measures about itself, the same way for every variant:
 *
 * - throughput: outcomes committed ÷ seconds from the first delivered message to the last commit;
 * - work latency: per message, from the start of the unit of work that carries it (its own
 *   transaction in per-message variants, its chunk in batch variants) to the commit covering it;
 * - delivery latency: per message, from kafkajs handing over the fetched batch that contains it
 *   to the commit covering it (includes waiting behind earlier messages of that batch);
 * - CPU seconds and peak RSS of the process, and how busy the whole machine was meanwhile (Kafka
 *   and PostgreSQL share its cores: a variant can be bound by the machine, not by itself).
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

export interface LatencySummary {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly samples: number;
}

export interface Measurement {
  readonly messages: number;
  readonly seconds: number;
  readonly messagesPerSecond: number;
  /** Work start → commit, ms; undefined where the variant has no such unit of work. */
  readonly workLatencyMs: LatencySummary | undefined;
  /** kafkajs batch handed over → commit, ms. */
  readonly deliveryLatencyMs: LatencySummary | undefined;
  /** user + system CPU between the first delivery and the last commit. */
  readonly cpuSeconds: number;
  /** The system (kernel) part of `cpuSeconds`: socket writes and reads, mostly. */
  readonly cpuSystemSeconds: number;
  /** user + system CPU of the whole process, start-up and shutdown included. */
  readonly cpuSecondsTotal: number;
  readonly peakRssMb: number;
  /** Share of all cores' time the machine was busy during the window, 0–1; undefined off Linux. */
  readonly hostBusy: number | undefined;
}

export class Meter {
  private firstDeliveryAt: number | undefined;
  private lastCommitAt = 0;
  private cpuAtFirstDelivery: NodeJS.CpuUsage | undefined;
  private cpuAtLastCommit: NodeJS.CpuUsage | undefined;
  private hostAtFirstDelivery: HostTimes | undefined;
  private hostAtLastCommit: HostTimes | undefined;
  /** Per partition, when each offset was first handed over (0 = not yet). */
  private readonly deliveredAt: Float64Array[];
  private readonly work: number[] = [];
  private readonly delivery: number[] = [];
  private waiter: { target: number; resolve: () => void } | undefined;
  private failure: Error | undefined;
  committed = 0;

  constructor(endOffsets: readonly number[]) {
    this.deliveredAt = endOffsets.map((end) => new Float64Array(end));
  }

  /** A kafkajs batch was handed over; a redelivered offset keeps its first delivery time. */
  delivered(partition: number, offsets: readonly string[]): void {
    const now = performance.now();
    if (this.firstDeliveryAt === undefined && offsets.length > 0) {
      this.firstDeliveryAt = now;
      this.cpuAtFirstDelivery = process.cpuUsage();
      this.hostAtFirstDelivery = hostTimes();
    }
    const times = this.deliveredAt[partition];
    if (times === undefined) return;
    for (const offset of offsets) {
      const index = Number(offset);
      if (index < times.length && times[index] === 0) times[index] = now;
    }
  }

  /**
   * The outcome of `partition/offset` is committed now. `workMs` is how long its unit of work took
   * up to this commit, when the variant knows it.
   */
  outcome(partition: number, offset: string, workMs?: number): void {
    const now = performance.now();
    this.committed += 1;
    this.lastCommitAt = now;
    if (workMs !== undefined) this.work.push(workMs);
    const deliveredAt = this.deliveredAt[partition]?.[Number(offset)];
    if (deliveredAt !== undefined && deliveredAt > 0) this.delivery.push(now - deliveredAt);
    const waiter = this.waiter;
    if (waiter !== undefined && this.committed >= waiter.target) {
      this.markEnd();
      this.waiter = undefined;
      waiter.resolve();
    }
  }

  /**
   * Ends the wait at once with `error`: something happened that a correct run of this workload
   * never does (a retry, a dead letter), so waiting for the rest would only burn the time budget.
   */
  fail(error: Error): void {
    this.failure ??= error;
  }

  /**
   * Resolves once `target` outcomes are committed; rejects when nothing is committed for
   * `idleMs` (a variant that stalls must fail the run, not hang it).
   */
  async until(target: number, idleMs: number): Promise<void> {
    if (this.committed >= target) {
      this.markEnd();
      return;
    }
    const done = new Promise<void>((resolve) => (this.waiter = { target, resolve }));
    let seen = this.committed;
    let lastProgress = performance.now();
    for (;;) {
      const settled = await Promise.race([done.then(() => true), sleep(1_000).then(() => false)]);
      if (settled) return;
      if (this.failure !== undefined) {
        this.waiter = undefined;
        throw this.failure;
      }
      if (this.committed !== seen) {
        seen = this.committed;
        lastProgress = performance.now();
      } else if (performance.now() - lastProgress > idleMs) {
        this.waiter = undefined;
        throw new Error(`stalled: ${this.committed} of ${target} outcomes committed, none for ${idleMs / 1000} s`);
      }
    }
  }

  private markEnd(): void {
    this.cpuAtLastCommit = process.cpuUsage();
    this.hostAtLastCommit = hostTimes();
  }

  summary(): Measurement {
    const start = this.firstDeliveryAt ?? this.lastCommitAt;
    const seconds = Math.max(1e-9, (this.lastCommitAt - start) / 1000);
    const cpuStart = this.cpuAtFirstDelivery ?? { user: 0, system: 0 };
    const cpuEnd = this.cpuAtLastCommit ?? process.cpuUsage();
    const total = process.cpuUsage();
    return {
      messages: this.committed,
      seconds,
      messagesPerSecond: this.committed / seconds,
      workLatencyMs: summarize(this.work),
      deliveryLatencyMs: summarize(this.delivery),
      cpuSeconds: (cpuEnd.user + cpuEnd.system - cpuStart.user - cpuStart.system) / 1e6,
      cpuSystemSeconds: (cpuEnd.system - cpuStart.system) / 1e6,
      cpuSecondsTotal: (total.user + total.system) / 1e6,
      // maxRSS is in kilobytes.
      peakRssMb: process.resourceUsage().maxRSS / 1024,
      hostBusy: hostBusyBetween(this.hostAtFirstDelivery, this.hostAtLastCommit ?? hostTimes()),
    };
  }
}

interface HostTimes {
  readonly busy: number;
  readonly total: number;
}

/** The machine's CPU time so far (all cores, in clock ticks) from /proc/stat; undefined off Linux. */
function hostTimes(): HostTimes | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    // cpu  user nice system idle iowait irq softirq steal …: idle and iowait are the idle time.
    const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = ticks.reduce((a, b) => a + b, 0);
    const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
    return Number.isFinite(total) && total > 0 ? { busy: total - idle, total } : undefined;
  } catch {
    return undefined;
  }
}

function hostBusyBetween(from: HostTimes | undefined, to: HostTimes | undefined): number | undefined {
  if (from === undefined || to === undefined || to.total <= from.total) return undefined;
  return (to.busy - from.busy) / (to.total - from.total);
}

/** Nearest-rank percentiles. */
export function summarize(samples: readonly number[]): LatencySummary | undefined {
  if (samples.length === 0) return undefined;
  const sorted = Float64Array.from(samples).sort();
  const at = (p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? NaN;
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? NaN, samples: sorted.length };
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
