/**
 * A partition's watermark while its records run on lanes. Lanes commit outcomes out of offset
 * order, so "this record + 1" is no longer a safe resume point: the partition's resume point (in
 * `oncely.offsets`) and Kafka's committed offset both stop at the watermark, the lowest offset
 * whose outcome is not recorded yet. Everything below it is recorded; above it, some records may
 * be recorded too, and a crash delivers those again as duplicates the inbox recognises (G1).
 *
 * A lane's transaction writes the watermark as it will stand once that transaction commits,
 * computed from the outcomes already committed: never past an unrecorded offset. Two lanes that
 * commit at the same moment may each miss the other's records, leaving the recorded resume point
 * a little behind (safe: a crash re-delivers those records as duplicates); the batch's end writes
 * the watermark once more when it is behind. Commits are not serialised for it: concurrent
 * commits share PostgreSQL's WAL flushes (group commit), which is what makes lanes fast.
 */
import { recordOffset } from '../../inbox/claims.js';
import type { OpenTransaction, Transactions, TransactionChain } from '../../inbox/transaction.js';
import { payloadFingerprint } from '../../kafka/message-identity.js';
import type { ConsumedRecord } from '../../kafka/runner.js';

import type { LaneCommits } from '../context.js';

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
  #next = 0;
  /** How many records, from the first, the committed resume point in `oncely.offsets` covers. */
  #written = 0;
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

  /**
   * The record just below the watermark as it will stand once `covered` is recorded too, when that
   * is past what the recorded resume point covers; undefined when there is nothing to write.
   */
  lastRecordedWith(covered: readonly ConsumedRecord[]): ConsumedRecord | undefined {
    const mine = new Set<number>();
    for (const record of covered) {
      const i = this.#indexOf.get(record.offset);
      if (i !== undefined) mine.add(i);
    }
    let next = this.#next;
    while (next < this.#records.length && (this.#done[next] === 1 || mine.has(next))) next++;
    return next > this.#written ? this.#records[next - 1] : undefined;
  }

  /** A resume point past `record` committed. */
  written(record: ConsumedRecord): void {
    const i = this.#indexOf.get(record.offset);
    if (i !== undefined && i + 1 > this.#written) this.#written = i + 1;
  }

  /** The record just below the watermark when the recorded resume point is behind it; else undefined. */
  behind(): ConsumedRecord | undefined {
    return this.#next > this.#written ? this.#records[this.#next - 1] : undefined;
  }

  /**
   * `covered` committed: counts it as recorded, and when the watermark moved, lets Kafka commit up
   * to it.
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

/** What a lane's transaction under way records: its records, and the resume point it wrote, if any. */
interface Covering {
  readonly covered: readonly ConsumedRecord[];
  readonly wrote: ConsumedRecord | undefined;
}

/**
 * A lane's transactions: its own connection (a chain, one transaction after another), and the
 * partition's watermark written as each transaction's last statement (see {@link LaneCommits}).
 */
export class LaneTransactions implements Transactions, LaneCommits {
  readonly #chain: TransactionChain;
  readonly #watermark: PartitionWatermark;
  readonly #groupId: string;
  /** The transaction under way: the records it covers, and the resume point it wrote, if any. */
  #covering: Covering | undefined;

  constructor(chain: TransactionChain, watermark: PartitionWatermark, groupId: string) {
    this.#chain = chain;
    this.#watermark = watermark;
    this.#groupId = groupId;
  }

  expectMore(more: boolean): void {
    this.#chain.expectMore(more);
  }

  async run<T>(work: (transaction: OpenTransaction) => Promise<T>): Promise<T> {
    this.#covering = undefined;
    const result = await this.#chain.run(work);
    // Set by recordResumePoint() during work(), which the compiler cannot see.
    const covering = this.#covering as Covering | undefined;
    this.#covering = undefined;
    if (covering !== undefined) {
      // Committed: its records are recorded, and so is the resume point it wrote.
      if (covering.wrote !== undefined) this.#watermark.written(covering.wrote);
      this.#watermark.markRecorded(covering.covered);
    }
    return result;
  }

  async recordResumePoint(t: OpenTransaction, covered: readonly ConsumedRecord[]): Promise<void> {
    if (this.#covering !== undefined) {
      throw new Error('internal error: a lane transaction recorded its resume point twice');
    }
    const last = this.#watermark.lastRecordedWith(covered);
    this.#covering = { covered, wrote: last };
    // Not at the watermark: nothing to move. synchronous_commit is left as the session has it:
    // Kafka passes these records only after a later commit that moves the watermark over them,
    // and that one is synchronous — its WAL flush covers this earlier commit too.
    if (last !== undefined) await writeResumePoint(t, this.#groupId, last);
  }

  /** Writes the watermark in a transaction of its own when the recorded resume point is behind it. */
  async catchUp(): Promise<void> {
    const last = this.#watermark.behind();
    if (last === undefined) return;
    await this.#chain.run((t) => writeResumePoint(t, this.#groupId, last));
    this.#watermark.written(last);
  }

  close(): Promise<void> {
    return this.#chain.close();
  }
}

/**
 * The partition's resume point just past `last`, with `last` as its mark: a record whose outcome
 * is recorded, so the start-up check (lifecycle/resume-points.ts) recognises the log by it as
 * before. The offset only moves forward (GREATEST): a lane whose value is older changes nothing.
 */
function writeResumePoint(t: OpenTransaction, groupId: string, last: ConsumedRecord): Promise<void> {
  return recordOffset(t.client, {
    groupId,
    topic: last.topic,
    partition: last.partition,
    nextOffset: (BigInt(last.offset) + 1n).toString(),
    previous: { payloadHash: payloadFingerprint(last.value), timestamp: last.timestamp },
  });
}
