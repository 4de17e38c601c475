/**
 * Per-key lanes inside a partition (docs/concurrency.md). The
 * records of one fetched batch are handed, in offset order, to the lane of their key; each lane
 * takes its records through message mode (commit grouping included) in its own transactions on its
 * own connection, while the other lanes do the same with theirs. One key's records stay in offset
 * order on one lane (G4 per key); the partition's offsets move only with its watermark
 * (watermark.ts), so G1–G3 and G5 hold as without lanes.
 *
 * Bounded: at most `maxInFlight` records are handed out past the watermark — what a crash delivers
 * again at most, and all that a slow or hot key lets the others run ahead. The batch is kafkajs's
 * hand-over: it fetches the partition again only once this returns, after every lane has finished
 * (stop, a lost partition or a paused one end the lanes early: each finishes or rolls back the
 * transaction it is in, and nothing past the watermark is resolved).
 */
import type pg from 'pg';

import type { TransactionBinder } from '../../inbox/database.js';
import { TransactionChain } from '../../inbox/transaction.js';
import type { ConsumedRecord, PartitionBatch } from '../../kafka/runner.js';

import type { PartitionControl, PipelineContext } from '../context.js';
import type { HandlerDefinition } from '../handler.js';
import { MAX_GROUP_MS, processRecords, type RecordsResult } from '../modes/commit-group.js';
import { redactError } from '../record/error-record.js';
import { LaneAssigner } from './lane-key.js';
import type { ResolvedLanes } from './options.js';
import { LaneTransactions, PartitionWatermark } from './watermark.js';

/** A lane takes at most this many groups' worth of its queue at a time (see PartitionLanes.#groupSize). */
const TAKE_GROUPS = 4;
/** A lane's first group size, before its handler's pace is known. */
const FIRST_GROUP = 8;

/** Where the lanes of one partition get their connections and their settings. */
export interface LaneSettings {
  readonly pool: pg.Pool;
  readonly bind: TransactionBinder;
  readonly lanes: ResolvedLanes;
  readonly maxMessagesPerTransaction: number;
}

/** How the lanes of a batch ended, when not all their records got an outcome. */
export type LanesResult =
  | { readonly kind: 'done' }
  | { readonly kind: 'abandoned' }
  /** A lane must stop the partition at this record (attempts exhausted with `pause`, or unrecordable). */
  | Extract<RecordsResult, { kind: 'stopped' }>;

/** A lane: its queue of records (in offset order), its transactions, and how fast its records go. */
class Lane {
  readonly queue: ConsumedRecord[] = [];
  readonly transactions: LaneTransactions;
  #wake: (() => void) | undefined;
  busy = false;
  /** Milliseconds per record lately (a moving average); undefined until the lane ran some. */
  recordMs: number | undefined;

  constructor(transactions: LaneTransactions) {
    this.transactions = transactions;
  }

  push(record: ConsumedRecord): void {
    this.queue.push(record);
    this.notify();
  }

  notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Resolves at the next push (or notify). */
  waitForWork(): Promise<void> {
    return new Promise((resolve) => (this.#wake = resolve));
  }
}

/**
 * One batch of one partition on lanes. `run()` hands the records out and resolves once every lane
 * is done with what it was given; a lane's failure (a rebalance seen by its heartbeat, an error of
 * oncely's) stops the others and is thrown once they have settled.
 */
export class PartitionLanes {
  readonly #pipeline: PipelineContext;
  readonly #handler: HandlerDefinition;
  readonly #batch: PartitionBatch;
  readonly #settings: LaneSettings;
  readonly #records: readonly ConsumedRecord[];
  readonly #watermark: PartitionWatermark;
  readonly #lanes: Lane[];
  #handedOut = 0;
  #allHandedOut = false;
  /** Why the lanes stop early: the first lane's result other than `done`, or its error. */
  #stop: { readonly result: LanesResult } | { readonly error: unknown } | undefined;

  constructor(
    pipeline: PipelineContext,
    handler: HandlerDefinition,
    batch: PartitionBatch,
    records: readonly ConsumedRecord[],
    settings: LaneSettings,
  ) {
    this.#pipeline = pipeline;
    this.#handler = handler;
    this.#batch = batch;
    this.#settings = settings;
    this.#records = records;
    this.#watermark = new PartitionWatermark(records, {
      groupId: pipeline.groupId,
      resolve: (offset) => batch.resolve(offset),
    });
    this.#lanes = Array.from(
      { length: settings.lanes.count },
      () =>
        new Lane(
          new LaneTransactions(new TransactionChain(settings.pool, settings.bind), this.#watermark, pipeline.groupId),
        ),
    );
  }

  async run(): Promise<LanesResult> {
    const loops = this.#lanes.map((lane) => this.#laneLoop(lane));
    try {
      await this.#handOut();
    } finally {
      this.#allHandedOut = true;
      for (const lane of this.#lanes) lane.notify();
      // Every lane finishes (or rolls back) the transaction it is in before the batch returns:
      // kafkajs may then hand the partition to another member, and no transaction of ours is left.
      await Promise.all(loops);
      await this.#catchUp();
      await Promise.all(this.#lanes.map((lane) => lane.transactions.close()));
    }
    const stop = this.#stop;
    if (stop === undefined) return { kind: 'done' };
    if ('error' in stop) throw stop.error;
    return stop.result;
  }

  /**
   * Two lanes that committed at the same moment may have left the recorded resume point behind the
   * watermark: write it once more, so the batch ends with both offsets where the watermark is. A
   * failure changes nothing that matters: the resume point only lags (its records come again as
   * duplicates), it never leads.
   */
  async #catchUp(): Promise<void> {
    const lane = this.#lanes[0];
    if (lane === undefined) return;
    await lane.transactions.catchUp().catch((error: unknown) => {
      this.#pipeline.logger.warn(
        { topic: this.#batch.topic, partition: this.#batch.partition, err: redactError(error) },
        'could not record the partition’s resume point at its watermark; it stays a little behind (duplicates, never a loss)',
      );
    });
  }

  /** Hands records to their lanes in offset order, never more than maxInFlight past the watermark. */
  async #handOut(): Promise<void> {
    const assigner = new LaneAssigner(this.#settings.lanes, (error, record) => {
      this.#pipeline.logger.warn(
        { topic: record.topic, partition: record.partition, offset: record.offset, err: redactError(error) },
        'the lanes key function threw: the record runs on the lane of records without a key',
      );
    });
    const { maxInFlight } = this.#settings.lanes;
    for (const record of this.#records) {
      while (this.#handedOut - this.#watermark.recorded >= maxInFlight && this.#running()) {
        // A full window with no lane left working cannot move: its records ended without an
        // outcome (the lanes stopped). Give up the rest; it is fetched again from the watermark.
        if (this.#lanes.every((lane) => !lane.busy && lane.queue.length === 0)) return;
        await this.#watermark.moved();
      }
      if (!this.#running()) return;
      const lane = this.#lanes[assigner.laneOf(record)];
      lane?.push(record);
      this.#handedOut += 1;
    }
  }

  #running(): boolean {
    return this.#stop === undefined && this.#batch.isActive();
  }

  /** Takes whatever the lane was given, through message mode, until everything is handed out. */
  async #laneLoop(lane: Lane): Promise<void> {
    const control: PartitionControl = {
      heartbeat: () => this.#batch.heartbeat(),
      isActive: () => this.#running(),
      transactions: lane.transactions,
      lane: lane.transactions,
    };
    for (;;) {
      if (lane.queue.length === 0) {
        if (this.#allHandedOut || !this.#running()) return;
        await lane.waitForWork();
        continue;
      }
      if (!this.#running()) return;
      const maxMessages = this.#groupSize(lane);
      // A few groups' worth at a time, so the group size follows the handler's pace.
      const records = lane.queue.splice(0, maxMessages * TAKE_GROUPS);
      lane.busy = true;
      const started = performance.now();
      try {
        const result = await processRecords(this.#pipeline, this.#handler, records, control, {
          maxMessages,
          // Kafka's offset moves with the watermark (watermark.ts), not with a lane's commits.
          committed: () => undefined,
        });
        const ms = (performance.now() - started) / records.length;
        lane.recordMs = lane.recordMs === undefined ? ms : 0.7 * lane.recordMs + 0.3 * ms;
        if (result.kind !== 'done') this.#halt({ result });
      } catch (error) {
        this.#halt({ error });
      } finally {
        lane.busy = false;
        // A window held by records that ended without an outcome must not wait for them.
        this.#watermark.wake();
      }
    }
  }

  /**
   * How many records a lane's next commit group may hold: as many as its handler gets through in
   * a group's time (MAX_GROUP_MS), at most `maxMessagesPerTransaction`. A group claims all its ids
   * up front and releases those it did not reach in time, so a group sized for fast handlers would
   * claim and release ~100 rows per slow message (a 20 ms provider call) — on every lane at once.
   */
  #groupSize(lane: Lane): number {
    const most = this.#settings.maxMessagesPerTransaction;
    // Unknown yet: start small, the pace is known after the first take.
    if (lane.recordMs === undefined) return Math.min(most, FIRST_GROUP);
    if (lane.recordMs <= 0) return most;
    return Math.max(1, Math.min(most, Math.ceil(MAX_GROUP_MS / lane.recordMs)));
  }

  /** The first reason to stop wins; every lane and the hand-out see it at their next step. */
  #halt(stop: { readonly result: LanesResult } | { readonly error: unknown }): void {
    this.#stop ??= stop;
    this.#watermark.wake();
    for (const lane of this.#lanes) lane.notify();
  }
}
