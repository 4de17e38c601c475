/**
 * A partition's watermark while its records run on lanes. Lanes commit outcomes out of offset
 * order, so "this record + 1" is no longer a safe resume point: the partition's resume point (in
 * `oncely.offsets`) and Kafka's committed offset both stop at the watermark, the lowest offset
 * whose outcome is not recorded yet. Everything below it is recorded; above it, some records may
 * be recorded too, and a crash delivers those again as duplicates the inbox recognises (G1).
 *
 * Exactness: a lane's transaction writes the watermark as it will stand once that transaction
 * commits. Computing that, committing, and counting the records as done happen in one turn per
 * partition, so two lanes committing at once cannot each miss the other's records and leave the
 * recorded resume point behind the watermark. The turn covers the end of a transaction only (its
 * resume point statement and its COMMIT); PostgreSQL would serialise exactly that part anyway,
 * on the partition's `oncely.offsets` row.
 */
import { recordOffset } from '../../inbox/claims.js';
import type { OpenTransaction, Transactions, TransactionChain } from '../../inbox/transaction.js';
import { payloadFingerprint } from '../../kafka/message-identity.js';
import type { ConsumedRecord } from '../../kafka/runner.js';

import type { LaneCommits } from '../context.js';

/** One holder at a time, in the order they asked. */
class Turn {
  #tail: Promise<void> = Promise.resolve();

  take(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const before = this.#tail;
    this.#tail = before.then(() => held);
    return before.then(() => release);
  }
}

/** What the watermark lets move: Kafka's offset, once a prefix of the partition is recorded. */
export interface WatermarkTarget {
  readonly groupId: string;
  /** Kafka may commit past `offset` (and everything before it in the partition). */
  resolve(offset: string): void;
}

/**
 * The records of one fetched batch of a partition (those not passed over), in offset order, and
 * which of them have a recorded outcome. `next` is the watermark as an index: records before it
 * are all recorded.
 */
export class PartitionWatermark {
  readonly #records: readonly ConsumedRecord[];
  readonly #indexOf = new Map<string, number>();
  readonly #done: Uint8Array;
  readonly #target: WatermarkTarget;
  readonly #turn = new Turn();
  #next = 0;
  #moved: (() => void)[] = [];

  constructor(records: readonly ConsumedRecord[], target: WatermarkTarget) {
    this.#records = records;
    this.#done = new Uint8Array(records.length);
    this.#target = target;
    records.forEach((record, i) => this.#indexOf.set(record.offset, i));
  }

  /** How many records, from the first, have their outcome recorded. */
  get recorded(): number {
    return this.#next;
  }

  /** Resolves the next time the watermark moves (or at once when `wake()` is called). */
  moved(): Promise<void> {
    return new Promise((resolve) => this.#moved.push(resolve));
  }

  /** Wakes whoever waits in {@link moved} without a move (a lane finished, the partition stopped). */
  wake(): void {
    const waiting = this.#moved;
    this.#moved = [];
    for (const resolve of waiting) resolve();
  }

  takeTurn(): Promise<() => void> {
    return this.#turn.take();
  }

  /**
   * The record just below the watermark as it will stand once `covered` is recorded too, when that
   * is past where it stands now; undefined when `covered` does not move it. Call within the turn.
   */
  lastRecordedWith(covered: readonly ConsumedRecord[]): ConsumedRecord | undefined {
    const mine = new Set<number>();
    for (const record of covered) {
      const i = this.#indexOf.get(record.offset);
      if (i !== undefined) mine.add(i);
    }
    let next = this.#next;
    while (next < this.#records.length && (this.#done[next] === 1 || mine.has(next))) next++;
    return next > this.#next ? this.#records[next - 1] : undefined;
  }

  /**
   * `covered` committed: counts it as recorded, and when the watermark moved, lets Kafka commit up
   * to it. Call within the turn, right after the COMMIT, so the next holder computes from this.
   */
  markRecorded(covered: readonly ConsumedRecord[]): void {
    for (const record of covered) {
      const i = this.#indexOf.get(record.offset);
      if (i !== undefined) this.#done[i] = 1;
    }
    const before = this.#next;
    while (this.#next < this.#records.length && this.#done[this.#next] === 1) this.#next++;
    if (this.#next === before) return;
    const last = this.#records[this.#next - 1];
    // Every record up to `last` has a committed outcome, and so does the resume point written with
    // the commit that moved it here: Kafka may pass them (G3).
    if (last !== undefined) this.#target.resolve(last.offset);
    this.wake();
  }
}

/**
 * A lane's transactions: its own connection (a chain, one transaction after another), and the
 * partition's watermark written as each transaction's last statement (see {@link LaneCommits}).
 */
export class LaneTransactions implements Transactions, LaneCommits {
  readonly #chain: TransactionChain;
  readonly #watermark: PartitionWatermark;
  readonly #groupId: string;
  /** The turn held by the transaction under way, and the records it covers. */
  #held: { readonly release: () => void; readonly covered: readonly ConsumedRecord[] } | undefined;

  constructor(chain: TransactionChain, watermark: PartitionWatermark, groupId: string) {
    this.#chain = chain;
    this.#watermark = watermark;
    this.#groupId = groupId;
  }

  expectMore(more: boolean): void {
    this.#chain.expectMore(more);
  }

  async run<T>(work: (transaction: OpenTransaction) => Promise<T>): Promise<T> {
    try {
      const result = await this.#chain.run(work);
      // Committed: its records are recorded, still within the turn (the next holder must see them).
      if (this.#held !== undefined) this.#watermark.markRecorded(this.#held.covered);
      return result;
    } finally {
      // Rolled back or committed, the transaction is over: the next lane may take its turn.
      this.#held?.release();
      this.#held = undefined;
    }
  }

  async recordResumePoint(t: OpenTransaction, covered: readonly ConsumedRecord[]): Promise<void> {
    if (this.#held !== undefined) {
      throw new Error('internal error: a lane transaction recorded its resume point twice');
    }
    const release = await this.#watermark.takeTurn();
    this.#held = { release, covered };
    const last = this.#watermark.lastRecordedWith(covered);
    // Not at the watermark: nothing to move. synchronous_commit is left as the session has it:
    // Kafka passes these records only after a later commit that moves the watermark over them,
    // and that one is synchronous — its WAL flush covers this earlier commit too.
    if (last === undefined) return;
    // The watermark, with the record just below it as its mark: a record whose outcome is recorded,
    // so the start-up check (lifecycle/resume-points.ts) recognises the log by it as before.
    await recordOffset(t.client, {
      groupId: this.#groupId,
      topic: last.topic,
      partition: last.partition,
      nextOffset: (BigInt(last.offset) + 1n).toString(),
      previous: { payloadHash: payloadFingerprint(last.value), timestamp: last.timestamp },
    });
  }

  close(): Promise<void> {
    return this.#chain.close();
  }
}
