/**
 * How much of the machine something outside this run used while a variant ran. The bench shares
 * the machine's cores with whatever else runs there (a test suite, a build); on two cores even one
 * busy neighbour halves a variant's figures, so every variant reports it, and the report warns.
 *
 * Linux only (/proc); elsewhere, and when the broker or the database were not started by this
 * run, the figure is unknown.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on every Linux platform Node runs on). */
const TICKS_PER_SECOND = 100;
/** kthreadd, the parent of every kernel thread. */
const KERNEL_THREADS = 2;
/**
 * Processes are sampled this often: a database backend lives only as long as the variant's
 * connection, so its CPU must be read before it exits.
 */
const SAMPLE_MS = 250;

interface Seen {
  ppid: number;
  /** user + system CPU in clock ticks: when first seen in the window, and at the last sample. */
  firstTicks: number;
  lastTicks: number;
}

/** CPU time spent in processes (user, nice, system), all cores, in clock ticks; and the total. */
function machineTicks(): { process: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  // cpu  user nice system idle iowait irq softirq steal. Interrupt time is left out: it is not
  // charged to any process, and here it is mostly this run's own network and disk traffic.
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  return { process: (ticks[0] ?? 0) + (ticks[1] ?? 0) + (ticks[2] ?? 0), total: ticks.reduce((a, b) => a + b, 0) };
}

function readProcesses(): Map<number, { ppid: number; ticks: number }> {
  const processes = new Map<number, { ppid: number; ticks: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name may contain spaces and parentheses: fields are counted after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      processes.set(Number(entry), { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // The process exited while /proc was listed.
    }
  }
  return processes;
}

export interface HostMonitor {
  /**
   * Stops sampling. Returns the share of the machine's capacity (0–1) that processes outside this
   * run used: process time minus what this run's processes — `ownRoots` and their descendants,
   * the variant's process among them — and the kernel's threads (they do the WAL's fsyncs: mostly
   * this run's work) used. The variant has exited by now, so its last moments were not sampled:
   * its own report of its CPU (`variant`) is used when larger. Undefined when it cannot be told.
   */
  stop(variant: { pid: number | undefined; cpuSeconds: number }): number | undefined;
}

export function monitorHost(ownRoots: readonly (number | undefined)[]): HostMonitor {
  const unknown: HostMonitor = { stop: () => undefined };
  if (ownRoots.some((pid) => pid === undefined)) return unknown;
  let start: { process: number; total: number };
  const seen = new Map<number, Seen>();
  const sample = (initial: boolean): void => {
    for (const [pid, { ppid, ticks }] of readProcesses()) {
      const entry = seen.get(pid);
      if (entry === undefined) seen.set(pid, { ppid, firstTicks: initial ? ticks : 0, lastTicks: ticks });
      else entry.lastTicks = ticks;
    }
  };
  try {
    start = machineTicks();
    sample(true);
  } catch {
    return unknown;
  }
  const timer = setInterval(() => sample(false), SAMPLE_MS);
  timer.unref();
  return {
    stop(variant) {
      clearInterval(timer);
      sample(false);
      const end = machineTicks();
      const total = end.total - start.total;
      if (total <= 0) return undefined;
      let ownTicks = 0;
      for (const pid of descendants(seen, [...(ownRoots as number[]), KERNEL_THREADS])) {
        const entry = seen.get(pid);
        if (entry === undefined) continue;
        const ticks = entry.lastTicks - entry.firstTicks;
        ownTicks += pid === variant.pid ? Math.max(ticks, variant.cpuSeconds * TICKS_PER_SECOND) : ticks;
      }
      return Math.max(0, end.process - start.process - ownTicks) / total;
    },
  };
}

function descendants(processes: ReadonlyMap<number, Seen>, roots: readonly number[]): Set<number> {
  const children = new Map<number, number[]>();
  for (const [pid, { ppid }] of processes) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  const found = new Set<number>();
  const queue = [...roots];
  for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
    if (found.has(pid)) continue;
    found.add(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return found;
}
