/** What per-message and batch processing share: the context they run in and the outcomes they record. */
import type pg from 'pg';
import type { Logger } from 'pino';

import type { InboxEntry } from '../inbox/claims.js';
import type { TransactionBinder } from '../inbox/database.js';
import type { DeadLetterReason, StoredError } from '../inbox/dead-letters.js';
import type { OpenTransaction, Transactions } from '../inbox/transaction.js';
import type { DeadLetterTopic } from '../kafka/dead-letter-topic.js';
import type { ConsumedRecord } from '../kafka/runner.js';

import type { DuplicateClass, EventHub } from '../events/index.js';
import type { RetryPolicy } from './retry.js';

/** What the pipeline needs from the consumer around it. */
export interface PipelineContext {
  readonly groupId: string;
  /** The inbox (and dead letters) this consumer claims in: `inboxScope`, by default the group id. */
  readonly inboxScope: string;
  readonly pool: pg.Pool;
  readonly bind: TransactionBinder;
  readonly retry: RetryPolicy;
  readonly logger: Logger;
  readonly logPayloads: boolean;
  readonly events: EventHub;
  /** 0: no timeout. */
  readonly handlerTimeoutMs: number;
  /** Refuse records whose id would be their Kafka coordinates. */
  readonly requireMessageId: boolean;
  /** Larger values are dead-lettered; undefined: no limit. */
  readonly maxPayloadBytes: number | undefined;
  /** When a handler's attempts run out: dead-letter the message, or pause its partition. */
  readonly onExhausted: 'dead-letter' | 'pause';
  readonly deadLetterTopic: DeadLetterTopic | undefined;
  /** Partitions already warned about messages without an id of their own (`topic\u0000partition`). */
  readonly warnedCoordinateIds?: Set<string>;
  /** Cancels the statement a timed-out handler still runs, from another connection. */
  readonly cancelBackend?: ((backendPid: number) => Promise<void>) | undefined;
}

/** The partition's levers the pipeline uses while a record is in flight. */
export interface PartitionControl {
  heartbeat(): Promise<void>;
  isActive(): boolean;
  /** Where the partition's transactions run: one held connection, one after another. */
  readonly transactions: Transactions;
  /**
   * Set when the partition runs on lanes (records of different keys at once, committed out of
   * offset order): claims then record no offset, and every transaction that records outcomes calls
   * this as its last statement instead (see lanes/watermark.ts). Undefined: records run in offset
   * order and each claim moves the resume point past its record.
   */
  readonly lane?: LaneCommits;
}

/** How a lane's transaction records the partition's resume point: as the watermark, never past it. */
export interface LaneCommits {
  /**
   * The last statement of a transaction recording the outcomes of `covered`: records the resume
   * point as it will stand once this transaction commits (the lowest offset then still unrecorded,
   * as far as the outcomes committed so far tell), when that moves it.
   */
  recordResumePoint(t: OpenTransaction, covered: readonly ConsumedRecord[]): Promise<void>;
}

export type Outcome =
  | { readonly kind: 'processed'; readonly attempts: number }
  /** A tombstone recorded and skipped (the handler's `tombstone: 'skip'`). */
  | { readonly kind: 'skipped' }
  | { readonly kind: 'duplicate'; readonly duplicateClass: DuplicateClass; readonly original: InboxEntry }
  | {
      readonly kind: 'dead_lettered';
      readonly reason: DeadLetterReason;
      readonly error: StoredError;
      readonly attempts: number;
    }
  /** Attempts ran out with `onExhausted: 'pause'`: nothing recorded; the partition must pause here. */
  | { readonly kind: 'paused'; readonly messageId: string; readonly error: StoredError; readonly attempts: number }
  /**
   * Not even a dead letter of the record could be stored (a database that refuses it): nothing
   * recorded; the partition must stop here with an alert rather than skip the record.
   */
  | {
      readonly kind: 'unrecordable';
      readonly messageId: string | null;
      readonly error: StoredError;
      readonly attempts: number;
    }
  /** The consumer stopped (or lost the partition) before an outcome was recorded: redelivered later. */
  | { readonly kind: 'abandoned' };
