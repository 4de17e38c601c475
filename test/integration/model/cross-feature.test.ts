/**
 * A model-based test across features (issue 19): fast-check generates command sequences (produce,
 * republish, start/stop, consumer and relay crashes, purges, replay plan/run, a renamed group, a
 * deleted and re-created topic, offset resets), runs them against the real broker and database,
 * and after every command compares the system with a small reference model.
 *
 * The model, per inbox scope (DESIGN.md §3a: the key of everything that decides "was this
 * applied"): the inbox (ids and the coordinates of their first claim), the ids a purge removed,
 * the offset horizons and the time of its latest purge (records carry when they were written, on
 * one clock with purges), and how often each id was applied. Per group slot: running or not, the
 * next offset per partition, the partitions that must be paused. Consumption is deterministic: a record whose id is
 * in the scope's inbox is a duplicate, any other is applied (a second time only when its row was
 * purged: §7, "a duplicate that arrives after the window is not detected").
 *
 * Knobs: ONCELY_MODEL_SEED replays a run (with ONCELY_MODEL_PATH and ONCELY_MODEL_REPLAY_PATH, the
 * shrunk counterexample the failure message names); ONCELY_MODEL_BUDGET_MS (default
 * 70 s) and ONCELY_MODEL_RUNS (default unbounded within the budget) make it longer, and
 * ONCELY_MODEL_SHRINK_MS (default 60 s) is the time shrinking a failure may take;
 * ONCELY_MODEL_COMMANDS (default 20) is the most commands per run; ONCELY_MODEL_WITHOUT=kind,…
 * leaves command kinds out (to look past a failure already known); ONCELY_MODEL_VERBOSE=1 prints
 * each command as it runs.
 */
import fc from 'fast-check';
import { describe, it } from 'vitest';

import {
  hasErrorCode,
  planReplay,
  purge,
  purgeSentOutbox,
  resetOffsets,
  runReplay,
  type RunReplayOptions,
} from '../../../src/index.js';
import { type TestEnvironment, useTestEnvironment } from '../../support/integration.js';
import { ModelSystem, type Slot } from './system.js';

const env = useTestEnvironment();

const numberFromEnv = (name: string, fallback: number): number => {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${name} must be a number, got "${raw}"`);
  return value;
};

const BUDGET_MS = numberFromEnv('ONCELY_MODEL_BUDGET_MS', 70_000);
const RUNS = numberFromEnv('ONCELY_MODEL_RUNS', 1_000);
const MAX_COMMANDS = numberFromEnv('ONCELY_MODEL_COMMANDS', 20);
const SHRINK_MS = numberFromEnv('ONCELY_MODEL_SHRINK_MS', 60_000);
const SEED = process.env.ONCELY_MODEL_SEED === undefined ? undefined : numberFromEnv('ONCELY_MODEL_SEED', 0);
const PATH = process.env.ONCELY_MODEL_PATH;
const REPLAY_PATH = process.env.ONCELY_MODEL_REPLAY_PATH;
const VERBOSE = process.env.ONCELY_MODEL_VERBOSE === '1';
const PARTITIONS = 2;
/** How long the system may take to reach what the model says (outcomes, the downstream topic). */
const SETTLE_MS = 30_000;
/** A wait for outcomes ends early once nothing changed for this long (a consumer joins its group well within it). */
const STALL_MS = 15_000;

// ----- the reference model ----------------------------------------------------------------------

interface LogRecord {
  readonly id: string;
  readonly value: string;
  /** When it was written, on the model's clock (its record timestamp, compared with purge times). */
  readonly written: number;
}

interface ScopeModel {
  /** Ids with an inbox row (processed), with where they were first claimed. */
  readonly inbox: Map<string, { partition: number; offset: number }>;
  /** Ids whose rows a purge removed, ever. */
  readonly purged: Set<string>;
  /** The offset horizon per partition: one past the highest offset of a row a purge removed. */
  readonly horizons: Map<number, number>;
  /** When a purge last removed rows of the scope, on the model's clock (`inbox_horizons.purged_at`). */
  purgedAt: number | undefined;
  /** Times each id was applied (an effect row, a charge key, a downstream event). */
  readonly applied: Map<string, number>;
  /** Why an id was applied more than once (the model allows it only after its row was purged). */
  readonly doubled: Map<string, string>;
}

interface SlotModel {
  running: boolean;
  /** Next offset to consume, per partition (the database resume point). */
  positions: number[];
  /** Partitions that must be paused with an offsets mismatch while running. */
  readonly paused: Set<number>;
  renamed: boolean;
  /**
   * Whether the group has offsets for the topic in either store (it recorded an outcome, or an
   * operator reset it): a replay of a group without any is refused as a misspelt name.
   */
  hasOffsets: boolean;
  /** After a replay or an offsets reset: outcomes arriving after `mark` must cover each partition from `from`. */
  rewound: { readonly mark: number; readonly from: readonly number[] } | undefined;
}

interface Model {
  partitions: number;
  log: LogRecord[][];
  recreated: boolean;
  relay: boolean;
  readonly slots: SlotModel[];
  readonly scopes: ScopeModel[];
  seq: number;
  /** Orders writes and purges: record timestamps against the scope's latest purge time. */
  clock: number;
  /** The commands run so far (for failure messages). */
  readonly history: string[];
}

function initialModel(): Model {
  const slot = (): SlotModel => ({
    running: true,
    positions: Array.from({ length: PARTITIONS }, () => 0),
    paused: new Set(),
    renamed: false,
    hasOffsets: false,
    rewound: undefined,
  });
  const scope = (): ScopeModel => ({
    inbox: new Map(),
    purged: new Set(),
    horizons: new Map(),
    purgedAt: undefined,
    applied: new Map(),
    doubled: new Map(),
  });
  return {
    partitions: PARTITIONS,
    log: Array.from({ length: PARTITIONS }, () => []),
    recreated: false,
    relay: true,
    slots: [slot(), slot()],
    scopes: [scope(), scope()],
    seq: 0,
    clock: 0,
    history: [],
  };
}

/** New records with fresh ids, appended to the model's log. */
function freshRecords(m: Model, partitionPicks: readonly number[]) {
  return partitionPicks.map((pick) => {
    const partition = pick % m.partitions;
    const n = m.seq++;
    const record = { id: `e${n}`, value: JSON.stringify({ n }) };
    m.log[partition]?.push({ ...record, written: ++m.clock });
    return { partition, ...record };
  });
}

/** Every running slot consumes its partitions (not paused) to the end of the log. */
function consumeAll(m: Model, why: string): void {
  m.slots.forEach((slot, index) => {
    if (!slot.running) return;
    const scope = m.scopes[index];
    if (scope === undefined) return;
    for (let p = 0; p < m.partitions; p++) {
      if (slot.paused.has(p)) continue;
      const log = m.log[p] ?? [];
      for (let offset = slot.positions[p] ?? 0; offset < log.length; offset++) {
        const record = log[offset];
        if (record === undefined || scope.inbox.has(record.id)) continue;
        const times = (scope.applied.get(record.id) ?? 0) + 1;
        scope.applied.set(record.id, times);
        scope.inbox.set(record.id, { partition: p, offset });
        if (times > 1) {
          if (!scope.purged.has(record.id)) throw new Error(`model bug: ${record.id} applied twice without a purge`);
          scope.doubled.set(record.id, `applied ${times}× (${why} after its row was purged)`);
        }
      }
      if (log.length > (slot.positions[p] ?? 0)) slot.hasOffsets = true;
      slot.positions[p] = log.length;
    }
  });
}

interface PlanTotals {
  messages: number;
  skipped: number;
  applied: number;
  atRisk: number;
  deadLettered: number;
  gone: number;
}

/**
 * The plan per DESIGN.md §7 and §3a, as the README's "What at risk means, exactly" states it: in
 * the inbox (or applied earlier in this replay) → skipped; not in the inbox and below its
 * partition's offset horizon, or written at or before the scope's latest purge (wherever it sits
 * in the log: a copy consumed while its id's row still existed was skipped and left no row) → at
 * risk; otherwise → applied. A copy of a purged id written after the last purge is new: it cannot
 * have met the purged row, and live consumption applies it too (§7, a duplicate after the window
 * is not detected). Reads [from, end of log) of every partition.
 */
function modelPlan(m: Model, index: number, from: number): PlanTotals {
  const scope = m.scopes[index];
  const totals: PlanTotals = { messages: 0, skipped: 0, applied: 0, atRisk: 0, deadLettered: 0, gone: 0 };
  if (scope === undefined) return totals;
  const willApply = new Set<string>();
  for (let p = 0; p < m.partitions; p++) {
    const log = m.log[p] ?? [];
    for (let offset = from; offset < log.length; offset++) {
      const record = log[offset];
      if (record === undefined) continue;
      totals.messages++;
      if (scope.inbox.has(record.id) || willApply.has(record.id)) totals.skipped++;
      else if (
        offset < (scope.horizons.get(p) ?? 0) ||
        (scope.purgedAt !== undefined && record.written <= scope.purgedAt)
      ) {
        totals.atRisk++;
      } else {
        totals.applied++;
        willApply.add(record.id);
      }
    }
  }
  return totals;
}

// ----- checks after every command ---------------------------------------------------------------

class ModelMismatch extends Error {
  override name = 'ModelMismatch';
}

function fail(m: Model, what: string, details: unknown): never {
  throw new ModelMismatch(
    `${what}\n  details: ${JSON.stringify(details, (_k, v: unknown) => (v instanceof Set ? [...v] : v))}\n  after: ${m.history.join(' → ')}`,
  );
}

async function poll<T>(timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** What the system still lacks for "every record has an outcome, or its partition is paused with an alert". */
function missingOutcomes(m: Model, r: ModelSystem): string[] {
  const missing: string[] = [];
  m.slots.forEach((slot, index) => {
    const real = r.slots[index];
    if (!slot.running || real === undefined) return;
    const seen = r.outcomeOffsets(real.groupId);
    const again = slot.rewound === undefined ? undefined : r.outcomeOffsets(real.groupId, slot.rewound.mark);
    const paused = r.paused(real);
    for (let p = 0; p < m.partitions; p++) {
      const isPaused = paused.some((x) => x.partition === p && x.reason === 'offsets-mismatch');
      const length = m.log[p]?.length ?? 0;
      const offsets = seen.get(p) ?? new Set<number>();
      if (slot.paused.has(p)) {
        if (!isPaused) {
          missing.push(
            `${real.name}(${real.groupId}) p${p}: should be paused with an offsets mismatch (resume point ` +
              `${slot.positions[p]} from the deleted topic, new log of ${length}), but is not paused and has ` +
              `outcomes only for offsets [${[...offsets].sort((a, b) => a - b).join(',')}]`,
          );
        }
        continue;
      }
      const from = slot.rewound?.from[p] ?? length;
      const reread = again?.get(p) ?? new Set<number>();
      const lacking = Array.from({ length }, (_, o) => o).filter(
        (o) => !offsets.has(o) || (o >= from && !reread.has(o)),
      );
      if (lacking.length > 0) {
        missing.push(
          `${real.name}(${real.groupId}) p${p}: no outcome for offsets [${lacking.join(',')}] of ${length}` +
            (isPaused ? ' (paused)' : ' (not paused)'),
        );
      }
    }
  });
  return missing;
}

const pairKey = (scope: string, id: string): string => `${scope}|${id}`;

async function verify(m: Model, r: ModelSystem): Promise<void> {
  // G2: no partition without an outcome.
  // Done when nothing is missing; given up after SETTLE_MS, or once nothing changed for STALL_MS.
  let last = '';
  let changedAt = Date.now();
  const missing = await poll(SETTLE_MS, () => {
    const lacking = missingOutcomes(m, r);
    if (lacking.length === 0) return [];
    const now = lacking.join(';');
    if (now !== last) [last, changedAt] = [now, Date.now()];
    return Date.now() - changedAt > STALL_MS ? lacking : undefined;
  });
  const deadLetters = await r.storedDeadLetters();
  if (deadLetters.length > 0) {
    fail(m, `G2: the model expects no dead letter, but ${deadLetters.length} were stored`, deadLetters.slice(0, 5));
  }
  if (missing === undefined || missing.length > 0) fail(m, 'G2: records without an outcome', missingOutcomes(m, r));

  // G1: the ledger holds exactly the model's applications per (scope, id).
  const expected = new Map<string, number>();
  m.scopes.forEach((scope, index) => {
    const name = r.slots[index]?.scope ?? '';
    for (const [id, times] of scope.applied) expected.set(pairKey(name, id), times);
  });
  const ledger = await r.ledger();
  const ledgerDiff = [...new Set([...expected.keys(), ...ledger.keys()])]
    .filter((key) => (expected.get(key) ?? 0) !== (ledger.get(key) ?? 0))
    .map((key) => ({ key, model: expected.get(key) ?? 0, ledger: ledger.get(key) ?? 0 }));
  if (ledgerDiff.length > 0) fail(m, 'G1: ledger effects differ from the model', ledgerDiff.slice(0, 10));

  // The inbox of every scope holds exactly the model's ids.
  for (const [index, scope] of m.scopes.entries()) {
    const name = r.slots[index]?.scope ?? '';
    const rows = await r.inbox(name);
    const extra = [...rows.keys()].filter((id) => !scope.inbox.has(id) || rows.get(id) !== 'processed');
    const lacking = [...scope.inbox.keys()].filter((id) => !rows.has(id));
    if (extra.length > 0 || lacking.length > 0) {
      fail(m, `G6: the inbox of scope ${name} differs from the model`, {
        unexpected: extra.slice(0, 10),
        lacking: lacking.slice(0, 10),
      });
    }
  }

  // G9: one charge per (scope, id) ever applied, one call per idempotency key, keys distinct per scope.
  const scopes = new Set(r.slots.map((s) => s.scope));
  const keyOfPair = new Map<string, Set<string>>();
  const callsOfKey = new Map<string, { calls: number; pair: string }>();
  for (const call of r.provider.calls) {
    const body = call.body as { scope?: string; id?: string };
    if (body.scope === undefined || !scopes.has(body.scope) || call.idempotencyKey === undefined) continue;
    const pair = pairKey(body.scope, String(body.id));
    keyOfPair.set(pair, (keyOfPair.get(pair) ?? new Set()).add(call.idempotencyKey));
    const entry = callsOfKey.get(call.idempotencyKey) ?? { calls: 0, pair };
    entry.calls++;
    if (entry.pair !== pair) fail(m, 'G9: one idempotency key for two messages', { key: call.idempotencyKey, pair });
    callsOfKey.set(call.idempotencyKey, entry);
  }
  const reran = [...callsOfKey].filter(([, e]) => e.calls > 1);
  if (reran.length > 0) fail(m, 'G9: a completed step ran again', reran.slice(0, 5));
  const unstable = [...keyOfPair].filter(([, keys]) => keys.size > 1);
  if (unstable.length > 0) fail(m, 'G9: the idempotency key changed between calls', unstable.slice(0, 5));
  const charged = [...keyOfPair.keys()].sort();
  const appliedPairs = [...expected.keys()].sort();
  if (JSON.stringify(charged) !== JSON.stringify(appliedPairs)) {
    fail(m, 'G9: charges differ from the applied messages', {
      charged: charged.filter((p) => !expected.has(p)).slice(0, 10),
      notCharged: appliedPairs.filter((p) => !keyOfPair.has(p)).slice(0, 10),
    });
  }

  // G8: every event of an applied message arrives downstream, with one stable id per (scope, id).
  const arrived = (): Set<string> => new Set(r.downstream.map((e) => pairKey(e.scope, e.id)));
  if (m.relay) {
    await poll(SETTLE_MS, () => {
      const seen = arrived();
      return appliedPairs.every((p) => seen.has(p)) ? true : undefined;
    });
    const seen = arrived();
    const lost = appliedPairs.filter((p) => !seen.has(p));
    if (lost.length > 0) fail(m, 'G8: events of applied messages never arrived downstream', lost.slice(0, 10));
  }
  const strays = [...arrived()].filter((p) => !expected.has(p));
  if (strays.length > 0) fail(m, 'G8: downstream events of messages the model did not apply', strays.slice(0, 10));
  const idsOfPair = new Map<string, Set<string>>();
  const pairOfId = new Map<string, string>();
  for (const event of r.downstream) {
    const pair = pairKey(event.scope, event.id);
    idsOfPair.set(pair, (idsOfPair.get(pair) ?? new Set()).add(event.messageId));
    const owner = pairOfId.get(event.messageId);
    if (owner !== undefined && owner !== pair) {
      fail(m, 'G8: one downstream message-id for events of two messages', { id: event.messageId, owner, pair });
    }
    pairOfId.set(event.messageId, pair);
  }
  const changing = [...idsOfPair].filter(([, ids]) => ids.size > 1);
  if (changing.length > 0) fail(m, 'G8: a downstream message-id changed between sends', changing.slice(0, 5));
}

// ----- commands ---------------------------------------------------------------------------------

type Cmd = fc.AsyncCommand<Model, ModelSystem>;

const SLOT_NAMES = ['A', 'B'] as const;

function realSlot(r: ModelSystem, index: number): Slot {
  const slot = r.slots[index];
  if (slot === undefined) throw new Error(`no slot ${index}`);
  return slot;
}

/** Operator functions are given the inbox scope of a renamed group (the option the fix of case 6 needs). */
function scopeOption(slot: Slot): { inboxScope?: string } {
  return slot.renamed ? { inboxScope: slot.scope } : {};
}

async function step(m: Model, r: ModelSystem, label: string, action: () => Promise<void>): Promise<void> {
  m.history.push(label);
  const started = Date.now();
  try {
    await action();
  } catch (error) {
    if (error instanceof ModelMismatch) throw error;
    // Not a disagreement with the model: the system (or the harness) failed while acting.
    throw new Error(`${label} threw: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  consumeAll(m, label);
  await verify(m, r);
  if (VERBOSE) console.log(`[model ${r.tag}] ${m.history.at(-1) ?? label} (${Date.now() - started} ms)`);
}

async function stopSlot(m: Model, r: ModelSystem, index: number): Promise<boolean> {
  const slot = m.slots[index];
  if (slot === undefined || !slot.running) return false;
  await r.stop(realSlot(r, index));
  slot.running = false;
  return true;
}

async function startSlot(m: Model, r: ModelSystem, index: number): Promise<void> {
  const slot = m.slots[index];
  if (slot === undefined || slot.running) return;
  await r.start(realSlot(r, index));
  slot.running = true;
}

class Produce implements Cmd {
  constructor(readonly partitions: readonly number[]) {}
  check = (): boolean => true;
  run = (m: Model, r: ModelSystem) => step(m, r, this.toString(), () => r.produce(freshRecords(m, this.partitions)));
  toString = (): string => `produce(${this.partitions.map((p) => `p${p % PARTITIONS}`).join(',')})`;
}

/** The same id and bytes again at a later offset of the same partition: a producer retry or a re-publish. */
class Republish implements Cmd {
  constructor(
    readonly pick: number,
    readonly times: number,
  ) {}
  check = (m: Readonly<Model>): boolean => m.log.some((l) => l.length > 0);
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      const all = m.log.flatMap((log, partition) => log.map((record) => ({ partition, ...record })));
      const chosen = all[this.pick % all.length];
      if (chosen === undefined) return;
      const copies = Array.from({ length: this.times }, () => chosen);
      for (const copy of copies) m.log[copy.partition]?.push({ id: copy.id, value: copy.value, written: ++m.clock });
      m.history[m.history.length - 1] = `${this.toString()}=${chosen.id}`;
      await r.produce(copies);
    });
  toString = (): string => `republish(#${this.pick}×${this.times})`;
}

class Start implements Cmd {
  constructor(readonly index: number) {}
  check = (m: Readonly<Model>): boolean => m.slots[this.index]?.running === false;
  run = (m: Model, r: ModelSystem) => step(m, r, this.toString(), () => startSlot(m, r, this.index));
  toString = (): string => `start(${SLOT_NAMES[this.index]})`;
}

class Stop implements Cmd {
  constructor(readonly index: number) {}
  check = (m: Readonly<Model>): boolean => m.slots[this.index]?.running === true;
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      await stopSlot(m, r, this.index);
    });
  toString = (): string => `stop(${SLOT_NAMES[this.index]})`;
}

/** New records while one attempt is held before its commit; the consumer's sessions are terminated, then it restarts. */
class CrashConsumer implements Cmd {
  constructor(
    readonly index: number,
    readonly partitions: readonly number[],
  ) {}
  check = (m: Readonly<Model>): boolean => m.slots[this.index]?.running === true;
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      const records = freshRecords(m, this.partitions);
      const held = await r.crashConsumer(realSlot(r, this.index), () => r.produce(records));
      m.history[m.history.length - 1] = `${this.toString()}=${held ? 'held an attempt' : 'nothing in flight'}`;
    });
  toString = (): string =>
    `crash-consumer(${SLOT_NAMES[this.index]}, ${this.partitions.map((p) => `p${p % PARTITIONS}`).join(',')})`;
}

/** New records while the relay is held between the broker's ack and the mark; it is stopped there. */
class CrashRelay implements Cmd {
  constructor(readonly partitions: readonly number[]) {}
  check = (m: Readonly<Model>): boolean => m.relay;
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      const records = freshRecords(m, this.partitions);
      const held = await r.crashRelay(
        () => r.produce(records),
        m.slots.some((s) => s.running),
      );
      m.history[m.history.length - 1] = `${this.toString()}=${held ? 'held a sent batch' : 'nothing in flight'}`;
      m.relay = false;
    });
  toString = (): string => `crash-relay(${this.partitions.map((p) => `p${p % PARTITIONS}`).join(',')})`;
}

class StartRelay implements Cmd {
  check = (m: Readonly<Model>): boolean => !m.relay;
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      await r.startRelay();
      m.relay = true;
    });
  toString = (): string => 'start-relay';
}

/**
 * Retention purge of a slot's group (window 0, so every row the bounds allow really goes), with
 * the sent outbox rows. The group is stopped for it, so its bounds stay still; the relay is
 * running and drained first, so a re-applied message never meets its old outbox row.
 */
class Purge implements Cmd {
  constructor(readonly index: number) {}
  check = (m: Readonly<Model>): boolean => m.relay;
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      const slot = realSlot(r, this.index);
      const scope = m.scopes[this.index];
      if (scope === undefined) return;
      const wasRunning = await stopSlot(m, r, this.index);
      const pending = await r.waitForOutboxDrained(SETTLE_MS);
      if (pending > 0) fail(m, `G8: ${pending} outbox rows never sent`, { pending });
      // Rows below the purged group's bound may go; rows below every bound of the scope's groups must.
      const own = await r.purgeBounds(slot.groupId);
      const all = await Promise.all(slot.groups.map((g) => r.purgeBounds(g)));
      const mustBound = (p: number): number => Math.min(...all.map((b) => b.get(p) ?? 0));
      const mustGo = [...scope.inbox].filter(([, at]) => at.offset < mustBound(at.partition)).map(([id]) => id);
      const mayGo = new Set(
        [...scope.inbox].filter(([, at]) => at.offset < (own.get(at.partition) ?? 0)).map(([id]) => id),
      );
      await purge({
        pool: envRef().pool,
        kafka: envRef().kafka,
        groupId: slot.groupId,
        inboxFor: 0,
        pauseMs: 0,
        extraPurgers: { outboxSent: (pool) => purgeSentOutbox(pool, { olderThan: 0 }) },
        ...scopeOption(slot),
      });
      const rows = await r.inbox(slot.scope);
      const deleted = [...scope.inbox.keys()].filter((id) => !rows.has(id));
      const kept = mustGo.filter((id) => rows.has(id));
      const wrong = deleted.filter((id) => !mayGo.has(id));
      if (kept.length > 0 || wrong.length > 0) {
        fail(m, `G6: purge of ${slot.groupId} (scope ${slot.scope}) deleted other rows than its bounds allow`, {
          keptThoughBelowEveryBound: kept.slice(0, 10),
          deletedThoughAboveTheBound: wrong.slice(0, 10),
          bounds: Object.fromEntries(own),
        });
      }
      for (const id of deleted) {
        const at = scope.inbox.get(id);
        if (at !== undefined)
          scope.horizons.set(at.partition, Math.max(scope.horizons.get(at.partition) ?? 0, at.offset + 1));
        scope.inbox.delete(id);
        scope.purged.add(id);
      }
      // A purge that removed rows stamps the scope's purge time; one that removed none leaves it.
      if (deleted.length > 0) scope.purgedAt = ++m.clock;
      m.history[m.history.length - 1] = `${this.toString()}=${deleted.length} rows`;
      if (wasRunning) await startSlot(m, r, this.index);
    });
  toString = (): string => `purge(${SLOT_NAMES[this.index]})`;
}

/** `planReplay` compared with the model's plan, then `runReplay` (forced or not): refused exactly when the model has messages at risk. */
class Replay implements Cmd {
  constructor(
    readonly index: number,
    readonly from: number | 'earliest',
    readonly force: boolean,
  ) {}
  // A re-created topic's plan depends on what the fix of case 7 decides for old horizons: not modelled.
  check = (m: Readonly<Model>): boolean => !m.recreated;
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      const slot = realSlot(r, this.index);
      const model = m.slots[this.index];
      if (model === undefined) return;
      const wasRunning = await stopSlot(m, r, this.index);
      const start = this.from === 'earliest' ? 0 : this.from;
      const expected = modelPlan(m, this.index, start);
      const options: RunReplayOptions = {
        pool: envRef().pool,
        kafka: envRef().kafka,
        groupId: slot.groupId,
        topic: r.topic,
        from: this.from,
        force: this.force,
        requestedBy: 'model-test',
        ...scopeOption(slot),
      };
      if (!model.hasOffsets) {
        // A group that never consumed the topic has nothing to replay: the name is refused as a
        // likely typo, and nothing moves.
        const refused = await planReplay(options).then(
          () => 'planned' as const,
          (error: unknown) => error,
        );
        if (!hasErrorCode(refused, 'ONCELY_CONFIG')) {
          fail(m, 'G6: a replay of a group without offsets was not refused', { outcome: String(refused) });
        }
        m.history[m.history.length - 1] = `${this.toString()}=refused(no offsets)`;
        if (wasRunning) await startSlot(m, r, this.index);
        return;
      }
      const pastEveryEnd = this.from !== 'earliest' && m.log.every((records) => (this.from as number) > records.length);
      if (pastEveryEnd) {
        // An offset past the end of every partition is a slip, refused as `offsets reset` refuses it.
        const refused = await planReplay(options).then(
          () => 'planned' as const,
          (error: unknown) => error,
        );
        if (!hasErrorCode(refused, 'ONCELY_OFFSET_OUT_OF_RANGE')) {
          fail(m, 'G6: a replay from past the end of every partition was not refused', { outcome: String(refused) });
        }
        m.history[m.history.length - 1] = `${this.toString()}=refused(past every log end)`;
        if (wasRunning) await startSlot(m, r, this.index);
        return;
      }
      const plan = await planReplay(options);
      const actual: PlanTotals = { ...plan.totals };
      if (JSON.stringify(actual) !== JSON.stringify(expected)) {
        fail(m, `G6: replay plan of ${slot.groupId} (scope ${slot.scope}) from ${this.from} differs from the model`, {
          model: expected,
          plan: actual,
        });
      }
      const outcome = await runReplay(options).then(
        () => 'ran' as const,
        (error: unknown) => error,
      );
      const refuse = expected.atRisk > 0 && !this.force;
      if (refuse) {
        if (!hasErrorCode(outcome, 'ONCELY_REPLAY_AT_RISK')) {
          fail(m, 'G6: a replay with messages at risk was not refused', {
            atRisk: expected.atRisk,
            outcome: String(outcome),
          });
        }
      } else {
        if (outcome !== 'ran') fail(m, 'G6: a replay the model allows failed', { outcome: String(outcome) });
        const before = model.positions;
        model.positions = model.positions.map((position, p) =>
          start < (m.log[p]?.length ?? 0) ? Math.min(position, start) : position,
        );
        model.rewound = {
          mark: r.outcomeMark(),
          from: model.positions.map((position, p) => (position < (before[p] ?? 0) ? position : Infinity)),
        };
      }
      m.history[m.history.length - 1] =
        `${this.toString()}=${refuse ? 'refused' : 'ran'}(atRisk ${expected.atRisk}, apply ${expected.applied})`;
      if (wasRunning) await startSlot(m, r, this.index);
    });
  toString = (): string => `replay(${SLOT_NAMES[this.index]} from ${this.from}${this.force ? ', forced' : ''})`;
}

/** Group B is replaced by a new group id with `inboxScope` set to B (the README's recipe); it starts from the beginning. */
class Rename implements Cmd {
  check = (m: Readonly<Model>): boolean => m.slots[1]?.renamed === false;
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      const slot = realSlot(r, 1);
      const model = m.slots[1];
      if (model === undefined) return;
      await stopSlot(m, r, 1);
      slot.groups.push(`${slot.scope}-v2`);
      model.renamed = true;
      model.hasOffsets = false;
      model.rewound = undefined;
      model.positions = Array.from({ length: m.partitions }, () => 0);
      model.paused.clear();
      await startSlot(m, r, 1);
    });
  toString = (): string => 'rename(B → B-v2, inboxScope B)';
}

/**
 * The topic is deleted and re-created (maybe with one more partition) and `fresh` new records are
 * written; the groups that were running restart. Every partition a group had a resume point in
 * must then pause with an offsets mismatch, whatever the new log's length (§3a, topic identity).
 */
class Recreate implements Cmd {
  constructor(
    readonly morePartitions: boolean,
    readonly fresh: readonly number[],
  ) {}
  check = (m: Readonly<Model>): boolean => !m.recreated;
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      const running = [0, 1].filter((i) => m.slots[i]?.running === true);
      for (const i of running) await stopSlot(m, r, i);
      const old = m.partitions;
      m.partitions = old + (this.morePartitions ? 1 : 0);
      await r.recreateTopic(m.partitions);
      m.recreated = true;
      m.log = Array.from({ length: m.partitions }, () => []);
      for (const slot of m.slots) {
        slot.rewound = undefined;
        for (let p = 0; p < old; p++) if ((slot.positions[p] ?? 0) > 0) slot.paused.add(p);
        slot.positions = Array.from({ length: m.partitions }, (_, p) => slot.positions[p] ?? 0);
      }
      await r.produce(freshRecords(m, this.fresh));
      for (const i of running) await startSlot(m, r, i);
    });
  toString = (): string =>
    `recreate-topic(${this.morePartitions ? '+1 partition, ' : ''}${this.fresh.length} new records)`;
}

/** The operator's answer to a mismatch: `resetOffsets` to the log start, then the group starts again. */
class ResetOffsets implements Cmd {
  constructor(readonly index: number) {}
  check = (m: Readonly<Model>): boolean => (m.slots[this.index]?.paused.size ?? 0) > 0;
  run = (m: Model, r: ModelSystem) =>
    step(m, r, this.toString(), async () => {
      const model = m.slots[this.index];
      if (model === undefined) return;
      const wasRunning = await stopSlot(m, r, this.index);
      await resetOffsets({
        pool: envRef().pool,
        kafka: envRef().kafka,
        groupId: realSlot(r, this.index).groupId,
        topic: r.topic,
        to: 'earliest',
      });
      model.positions = Array.from({ length: m.partitions }, () => 0);
      model.paused.clear();
      model.hasOffsets = true;
      model.rewound = { mark: r.outcomeMark(), from: model.positions };
      if (wasRunning) await startSlot(m, r, this.index);
    });
  toString = (): string => `reset-offsets(${SLOT_NAMES[this.index]} to earliest)`;
}

function envRef(): TestEnvironment {
  return env;
}

const slotIndex = fc.constantFrom(0, 1);
const somePartitions = fc.array(fc.nat(5), { minLength: 1, maxLength: 4 });
const replayFrom = fc.oneof(fc.constant('earliest' as const), fc.nat(6));

/** Every command kind, by name, with its weight (how many times it is offered). */
const COMMAND_KINDS: readonly (readonly [string, number, fc.Arbitrary<Cmd>])[] = [
  ['produce', 3, somePartitions.map((p) => new Produce(p))],
  [
    'republish',
    3,
    fc.tuple(fc.nat(1_000), fc.integer({ min: 1, max: 2 })).map(([pick, times]) => new Republish(pick, times)),
  ],
  ['start', 1, slotIndex.map((i) => new Start(i))],
  ['stop', 1, slotIndex.map((i) => new Stop(i))],
  ['crash-consumer', 1, fc.tuple(slotIndex, somePartitions).map(([i, p]) => new CrashConsumer(i, p))],
  ['crash-relay', 1, somePartitions.map((p) => new CrashRelay(p))],
  ['start-relay', 1, fc.constant(new StartRelay())],
  ['purge', 3, slotIndex.map((i) => new Purge(i))],
  ['replay', 3, fc.tuple(slotIndex, replayFrom, fc.boolean()).map(([i, from, force]) => new Replay(i, from, force))],
  ['rename', 2, fc.constant(new Rename())],
  [
    'recreate-topic',
    1,
    fc.tuple(fc.boolean(), fc.array(fc.nat(5), { maxLength: 10 })).map(([more, fresh]) => new Recreate(more, fresh)),
  ],
  ['reset-offsets', 1, slotIndex.map((i) => new ResetOffsets(i))],
];

/** ONCELY_MODEL_WITHOUT=recreate-topic,… leaves command kinds out (to look past a known failure). */
const WITHOUT = new Set((process.env.ONCELY_MODEL_WITHOUT ?? '').split(',').filter((name) => name !== ''));
for (const name of WITHOUT) {
  if (!COMMAND_KINDS.some(([kind]) => kind === name)) {
    throw new Error(`ONCELY_MODEL_WITHOUT: no command kind "${name}" (${COMMAND_KINDS.map(([k]) => k).join(', ')})`);
  }
}
const commandArbitraries: fc.Arbitrary<Cmd>[] = COMMAND_KINDS.filter(([kind]) => !WITHOUT.has(kind)).flatMap(
  ([, weight, arbitrary]) => Array.from({ length: weight }, () => arbitrary),
);

describe('a model-based test across features', () => {
  it(
    'G1 G2 G6 G8 G9: two groups, publishes, steps, purges, replays, kills and a re-created topic agree with the model',
    async () => {
      // The budget is kept here, not by fast-check's interrupt plugin: that one abandons the run in
      // progress, whose consumers would then outlive the test. Past the budget a run passes at once;
      // after a failure, shrinking gets SHRINK_MS more.
      const started = Date.now();
      let deadline = started + BUDGET_MS;
      let runs = 0;
      const property = fc.asyncProperty(
        fc.commands(commandArbitraries, {
          maxCommands: MAX_COMMANDS,
          size: 'max',
          ...(REPLAY_PATH === undefined ? {} : { replayPath: REPLAY_PATH }),
        }),
        async (commands) => {
          if (Date.now() > deadline) return;
          runs++;
          const real = await ModelSystem.create(env, PARTITIONS);
          try {
            await fc.asyncModelRun(async () => {
              try {
                for (const slot of real.slots) await real.start(slot);
                await real.startRelay();
              } catch (error) {
                throw new Error(`setup threw: ${error instanceof Error ? error.message : String(error)}`, {
                  cause: error,
                });
              }
              return { model: initialModel(), real };
            }, commands);
          } catch (error) {
            if (deadline === started + BUDGET_MS) deadline = Date.now() + SHRINK_MS;
            throw error;
          } finally {
            await real.close();
          }
        },
      );
      const details = await fc.check(property, {
        numRuns: RUNS,
        ...(SEED === undefined ? {} : { seed: SEED }),
        // A replayed counterexample is run as it is, not shrunk again.
        ...(PATH === undefined ? {} : { path: PATH, endOnFailure: true }),
      });
      const summary = `seed ${details.seed}, ${runs} run(s), shrinking included, in ${Math.round((Date.now() - started) / 1000)} s`;
      if (details.failed) {
        const commands = (details.counterexample as readonly { toString(): string }[] | null)?.[0];
        const error = details.errorInstance;
        throw new Error(
          [
            `the system disagrees with the model (${summary}, shrunk ${details.numShrinks} time(s) within ${SHRINK_MS / 1000} s)`,
            `replay: ONCELY_MODEL_SEED=${details.seed} (the first failing run), or the shrunk case with ` +
              `ONCELY_MODEL_SEED=${details.seed} ONCELY_MODEL_PATH=${details.counterexamplePath ?? ''} ONCELY_MODEL_REPLAY_PATH=<replayPath below>`,
            `commands: ${commands === undefined ? '?' : commands.toString()}`,
            `failure: ${error instanceof Error ? error.message : String(error)}`,
          ].join('\n'),
          { cause: error },
        );
      }
      if (runs === 0) throw new Error(`no run completed within the budget (${summary})`);
      console.log(`model test: ${summary}`);
    },
    BUDGET_MS + SHRINK_MS + 180_000,
  );
});
