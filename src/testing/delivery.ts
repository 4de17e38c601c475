import { AssertionError } from 'node:assert';
import { randomUUID } from 'node:crypto';

import { pino, type Logger } from 'pino';

import { DEFAULT_MAX_MESSAGES_PER_TRANSACTION } from '../pipeline/options.js';
import { configError } from '../errors.js';
import { createTransactionBinder, type OncelyDatabase, resolvePool } from '../inbox/database.js';
import type { DeadLetterReason } from '../inbox/dead-letters.js';
import { type OpenTransaction, TransactionChain, type Transactions } from '../inbox/transaction.js';
import type { ConsumedRecord } from '../kafka/runner.js';
import type { Outcome, PartitionControl, PipelineContext } from '../pipeline/context.js';
import { EventHub } from '../events/index.js';
import { type AnyHandlerDefinition, type HandlerContext, isHandlerDefinition } from '../pipeline/handler.js';
import { prepareRecord } from '../pipeline/record/prepare.js';
import { processChunk } from '../pipeline/modes/batch.js';
import { processRecords } from '../pipeline/modes/commit-group.js';
import { DEFAULT_RETRY, type RetryPolicy } from '../pipeline/retry.js';

/** A message to deliver to the handlers, as a producer would have sent it. */
export interface TestMessage {
  readonly topic: string;
  /** An object or array (sent as JSON), a string, bytes, or null (a tombstone). */
  readonly value: unknown;
  readonly key?: string | Buffer | null;
  readonly headers?: Readonly<Record<string, string | Buffer>>;
  /** Default: a stable hash of the key over `partitions`, or round-robin without a key. */
  readonly partition?: number;
}

export interface DeliveryOptions {
  /** The application's drizzle database (over a pg Pool), migrated with `migrate()`. */
  readonly db: OncelyDatabase;
  /** The consumer's handlers (message or batch kind, one per topic). */
  readonly handlers: readonly AnyHandlerDefinition[];
  readonly messages: readonly TestMessage[];
  /** Partitions per topic for messages that name none. Default 3. */
  readonly partitions?: number;
  /** Seeds the shuffling. Default 1. */
  readonly seed?: number;
  /** Default: 3 attempts, 1–5 ms apart — tests should not wait on backoff. */
  readonly retry?: Partial<RetryPolicy>;
  /** Batch handlers: most messages per chunk. Default 500. */
  readonly batchSize?: number;
  /** Per-message handlers: most messages per transaction, as the consumer's option. Default 100. */
  readonly maxMessagesPerTransaction?: number;
  /** Default: silent. */
  readonly logger?: Logger;
  /** Values larger than this are dead-lettered (the consumer's `maxPayloadBytes`). Default: no limit. */
  readonly maxPayloadBytes?: number;
  /**
   * Longest the records handed over at once may take to reach its recorded outcome. A record that
   * takes longer would stall its partition in production: the delivery stops working on it and
   * throws an `AssertionError` naming it. Default 30 000 ms.
   */
  readonly stallTimeoutMs?: number;
}

/** How one delivered record ended, by its coordinates (from the pipeline's events). */
export interface DeliveredOutcome {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly messageId: string | null;
  readonly outcome: 'processed' | 'skipped' | 'duplicate' | 'dead_lettered';
  /** The duplicate class, or the dead-letter reason. */
  readonly detail?: string;
}

/** What one delivery recorded. */
export interface DeliveryReport {
  /** The consumer group the delivery ran as (fresh each time: its inbox starts empty). */
  readonly groupId: string;
  /** Records handed to the pipeline, duplicates included. */
  readonly delivered: number;
  readonly processed: number;
  readonly skipped: number;
  readonly duplicates: { readonly redelivery: number; readonly republish: number };
  readonly deadLettered: Readonly<Partial<Record<DeadLetterReason, number>>>;
  /** Every outcome announced, in the order they were recorded. */
  readonly outcomes: readonly DeliveredOutcome[];
}

/** One record to hand over, at chosen coordinates. */
interface Planned {
  readonly message: TestMessage;
  readonly topic: string;
  readonly partition: number;
  readonly value: Buffer | null;
}

interface Tally {
  delivered: number;
  processed: number;
  skipped: number;
  duplicates: { redelivery: number; republish: number };
  deadLettered: Partial<Record<DeadLetterReason, number>>;
  outcomes: DeliveredOutcome[];
}

/** Options of one hand-over. */
interface HandOver {
  /** Roll back the first transaction that ran the handler for each message, as a failed COMMIT would. */
  readonly rollBackOnce?: boolean;
}

/**
 * Hands records to the pipeline as a consumer would, with no broker: oncely's own claim,
 * transaction, duplicate classification and dead-lettering run against the real database; only
 * the Kafka side (fetching, committing offsets) is left out.
 */
export class Delivery {
  readonly groupId = `oncely-test-${randomUUID()}`;
  readonly #pipeline: PipelineContext;
  readonly #handlers: ReadonlyMap<string, AnyHandlerDefinition>;
  readonly #batchSize: number;
  readonly #maxMessagesPerTransaction: number;
  readonly #partitions: number;
  readonly #stallTimeoutMs: number;
  readonly #nextOffset = new Map<string, bigint>();
  readonly #tally: Tally = {
    delivered: 0,
    processed: 0,
    skipped: 0,
    duplicates: { redelivery: 0, republish: 0 },
    deadLettered: {},
    outcomes: [],
  };
  #roundRobin = 0;

  constructor(options: DeliveryOptions) {
    const handlers = new Map<string, AnyHandlerDefinition>();
    for (const handler of options.handlers) {
      if (!isHandlerDefinition(handler))
        throw configError('handlers', 'each handler must be made with defineHandler() or defineBatchHandler()');
      handlers.set(handler.topic, handler);
    }
    this.#handlers = handlers;
    this.#batchSize = options.batchSize ?? 500;
    this.#maxMessagesPerTransaction = options.maxMessagesPerTransaction ?? DEFAULT_MAX_MESSAGES_PER_TRANSACTION;
    this.#partitions = options.partitions ?? 3;
    this.#stallTimeoutMs = options.stallTimeoutMs ?? 30_000;
    const logger = options.logger ?? pino({ level: 'silent' });
    const events = new EventHub(logger);
    const tally = this.#tally;
    const note = (
      e: { topic: string; partition: number; offset: string; messageId: string | null },
      outcome: DeliveredOutcome['outcome'],
      detail?: string,
    ): void => {
      const { topic, partition, offset, messageId } = e;
      tally.outcomes.push({
        topic,
        partition,
        offset,
        messageId,
        outcome,
        ...(detail === undefined ? {} : { detail }),
      });
    };
    events.on('message:processed', (e) => {
      tally.processed++;
      note(e, 'processed');
    });
    events.on('message:skipped', (e) => {
      tally.skipped++;
      note(e, 'skipped');
    });
    events.on('message:duplicate', (e) => {
      tally.duplicates[e.duplicateClass]++;
      note(e, 'duplicate', e.duplicateClass);
    });
    events.on('message:dead-lettered', (e) => {
      tally.deadLettered[e.reason] = (tally.deadLettered[e.reason] ?? 0) + 1;
      note(e, 'dead_lettered', e.reason);
    });
    this.#pipeline = {
      groupId: this.groupId,
      inboxScope: this.groupId,
      pool: resolvePool(options.db).pool,
      bind: createTransactionBinder(options.db),
      retry: { ...DEFAULT_RETRY, attempts: 3, initialDelayMs: 1, maxDelayMs: 5, ...options.retry },
      logger,
      logPayloads: false,
      events,
      handlerTimeoutMs: 30_000,
      requireMessageId: false,
      maxPayloadBytes: options.maxPayloadBytes,
      onExhausted: 'dead-letter',
      deadLetterTopic: undefined,
    };
  }

  report(): DeliveryReport {
    const t = this.#tally;
    return {
      groupId: this.groupId,
      delivered: t.delivered,
      processed: t.processed,
      skipped: t.skipped,
      duplicates: { ...t.duplicates },
      deadLettered: { ...t.deadLettered },
      outcomes: [...t.outcomes],
    };
  }

  /** Where each message goes, before any is delivered. */
  plan(messages: readonly TestMessage[]): Planned[] {
    return messages.map((message) => {
      if (!this.#handlers.has(message.topic)) {
        throw configError(
          'messages',
          `no handler for topic "${message.topic}"; pass the handler for every topic you deliver to`,
        );
      }
      return {
        message,
        topic: message.topic,
        partition: message.partition ?? this.#partitionOf(message),
        value: toBytes(message.value),
      };
    });
  }

  /** The records as a new copy at fresh coordinates (a producer's re-send). */
  async deliver(planned: readonly Planned[], how: HandOver = {}): Promise<ConsumedRecord[]> {
    const records = planned.map((p) => this.#record(p));
    await this.redeliver(records, how);
    return records;
  }

  /** Hands `records` over again, as given: same coordinates means a redelivery. */
  async redeliver(records: readonly ConsumedRecord[], how: HandOver = {}): Promise<void> {
    // Consecutive records of one partition go together, so batch handlers get real chunks.
    let run: ConsumedRecord[] = [];
    for (const record of records) {
      const previous = run.at(-1);
      if (previous !== undefined && (previous.topic !== record.topic || previous.partition !== record.partition)) {
        await this.#handOver(run, how);
        run = [];
      }
      run.push(record);
    }
    if (run.length > 0) await this.#handOver(run, how);
  }

  /** True when the message has an id of its own (not its Kafka coordinates). */
  async hasOwnId(record: ConsumedRecord): Promise<boolean> {
    const handler = this.#handlers.get(record.topic);
    return handler !== undefined && (await prepareRecord(this.#pipeline, handler, record)).idSource !== 'coordinates';
  }

  async #handOver(records: readonly ConsumedRecord[], how: HandOver): Promise<void> {
    const first = records[0];
    if (first === undefined) return;
    const registered = this.#handlers.get(first.topic);
    if (registered === undefined) return;
    this.#tally.delivered += records.length;
    const chain = new TransactionChain(this.#pipeline.pool, this.#pipeline.bind);
    const rollBack = how.rollBackOnce === true ? new RollBackOnce(chain) : undefined;
    const handler = rollBack === undefined ? registered : rollBack.watch(registered);
    let active = true;
    const control: PartitionControl = {
      heartbeat: () => Promise.resolve(),
      // Turned off when a record overstays its bound: the pipeline then abandons it at its next wait.
      isActive: () => active,
      transactions: rollBack ?? chain,
    };
    const bounded = async <T>(what: ConsumedRecord, work: Promise<T>): Promise<T> => {
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<'stalled'>((resolve) => {
        timer = setTimeout(() => resolve('stalled'), this.#stallTimeoutMs);
      });
      try {
        const result = await Promise.race([work, stalled]);
        if (result !== 'stalled') return result;
      } finally {
        clearTimeout(timer);
      }
      active = false;
      // Give the pipeline a moment to notice and let go of the connection before it is closed.
      await Promise.race([work.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 2_000))]);
      throw new AssertionError({
        message:
          `record ${what.topic}/${what.partition}/${what.offset} reached no recorded outcome within ` +
          `${this.#stallTimeoutMs} ms: in a consumer its partition would stall there`,
      });
    };
    const expectOutcome = (what: ConsumedRecord, outcome: Outcome | { kind: string }): void => {
      if (outcome.kind === 'abandoned' || outcome.kind === 'paused') {
        throw new AssertionError({
          message: `record ${what.topic}/${what.partition}/${what.offset} was ${outcome.kind} with no recorded outcome`,
        });
      }
    };
    try {
      if (handler.kind === 'batch') {
        for (let start = 0; start < records.length; start += this.#batchSize) {
          const chunk = records.slice(start, start + this.#batchSize);
          const result = await bounded(
            chunk[0] ?? first,
            processChunk(this.#pipeline, handler, chunk, control, () => undefined),
          );
          expectOutcome(chunk[0] ?? first, result);
        }
      } else {
        // The consumer's own loop, commit grouping included.
        const result = await bounded(
          first,
          processRecords(this.#pipeline, handler, records, control, {
            maxMessages: this.#maxMessagesPerTransaction,
            committed: () => undefined,
          }),
        );
        if (result.kind === 'stopped') expectOutcome(result.record, { kind: 'paused' });
        else expectOutcome(first, result);
      }
    } finally {
      await chain.close();
    }
  }

  #record(planned: Planned): ConsumedRecord {
    const key = `${planned.topic}\u0000${planned.partition}`;
    const offset = this.#nextOffset.get(key) ?? 0n;
    this.#nextOffset.set(key, offset + 1n);
    const { message } = planned;
    return {
      topic: planned.topic,
      partition: planned.partition,
      offset: offset.toString(),
      key: message.key === undefined || message.key === null ? null : Buffer.from(message.key),
      value: planned.value,
      headers: Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, Buffer.from(v)])),
      timestamp: String(Date.now()),
    };
  }

  #partitionOf(message: TestMessage): number {
    if (message.key === undefined || message.key === null) return this.#roundRobin++ % this.#partitions;
    let hash = 0;
    for (const byte of Buffer.from(message.key)) hash = (hash * 31 + byte) >>> 0;
    return hash % this.#partitions;
  }
}

function toBytes(value: unknown): Buffer | null {
  if (value === null) return null;
  if (Buffer.isBuffer(value)) return value;
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/**
 * Runs the partition's transactions on `inner`, but fails the COMMIT of the first transaction that
 * ran the handler for a message (or a chunk) once: the transaction rolls back, as when COMMIT fails
 * (a serialization failure, a failover), and the pipeline delivers the message again. Writes the
 * handler made outside `ctx.tx` stay behind from the rolled-back attempt and show up twice.
 */
class RollBackOnce implements Transactions {
  readonly #inner: Transactions;
  /** Messages (or chunks, by their ids) whose first commit was already failed. */
  readonly #failed = new Set<string>();
  /** What the handler ran for in the transaction under way. */
  #ran: string | undefined;

  constructor(inner: Transactions) {
    this.#inner = inner;
  }

  /** The same handler, telling this wrapper when it ran and for which message(s). */
  watch(handler: AnyHandlerDefinition): AnyHandlerDefinition {
    if (handler.kind === 'batch') {
      return {
        ...handler,
        handleBatch: async (events, ctx) => {
          await handler.handleBatch(events, ctx);
          this.#ran = events.map((e) => e.messageId).join('\u0000');
        },
      };
    }
    const tombstone = handler.tombstone;
    return {
      ...handler,
      handle: async (event, ctx) => {
        await handler.handle(event, ctx);
        this.#ran = ctx.messageId;
      },
      ...(typeof tombstone === 'function'
        ? {
            tombstone: async (ctx: HandlerContext) => {
              await tombstone(ctx);
              this.#ran = ctx.messageId;
            },
          }
        : {}),
    };
  }

  run<T>(work: (transaction: OpenTransaction) => Promise<T>): Promise<T> {
    return this.#inner.run(async (transaction) => {
      this.#ran = undefined;
      const result = await work(transaction);
      const ran = this.#ran;
      if (ran !== undefined && !this.#failed.has(ran)) {
        this.#failed.add(ran);
        // Thrown inside the transaction, so it rolls back. A serialization failure is what
        // PostgreSQL answers a COMMIT it cannot make: the pipeline retries the message.
        throw Object.assign(new Error('could not serialize access (oncely/testing: scenario "rolled-back")'), {
          code: '40001',
          severity: 'ERROR',
        });
      }
      return result;
    });
  }
}
