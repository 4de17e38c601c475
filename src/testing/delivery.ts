import { randomUUID } from 'node:crypto';

import { pino, type Logger } from 'pino';

import { configError } from '../errors.js';
import { createTransactionBinder, type OncelyDatabase, resolvePool } from '../inbox/database.js';
import type { DeadLetterReason } from '../inbox/dead-letters.js';
import { TransactionChain } from '../inbox/transaction.js';
import type { ConsumedRecord } from '../kafka/runner.js';
import { EventHub } from '../pipeline/events.js';
import { type AnyHandlerDefinition, isHandlerDefinition } from '../pipeline/handler.js';
import type { PartitionControl, PipelineContext } from '../pipeline/outcomes.js';
import { prepareRecord } from '../pipeline/prepare.js';
import { processChunk } from '../pipeline/process-chunk.js';
import { processRecord } from '../pipeline/process-record.js';
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
  /** Default: silent. */
  readonly logger?: Logger;
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
  readonly #partitions: number;
  readonly #nextOffset = new Map<string, bigint>();
  readonly #tally: Tally = {
    delivered: 0,
    processed: 0,
    skipped: 0,
    duplicates: { redelivery: 0, republish: 0 },
    deadLettered: {},
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
    this.#partitions = options.partitions ?? 3;
    const logger = options.logger ?? pino({ level: 'silent' });
    const events = new EventHub(logger);
    const tally = this.#tally;
    events.on('message:processed', () => void tally.processed++);
    events.on('message:skipped', () => void tally.skipped++);
    events.on('message:duplicate', (e) => void tally.duplicates[e.duplicateClass]++);
    events.on(
      'message:dead-lettered',
      (e) => void (tally.deadLettered[e.reason] = (tally.deadLettered[e.reason] ?? 0) + 1),
    );
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
      maxPayloadBytes: undefined,
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
  async deliver(planned: readonly Planned[]): Promise<ConsumedRecord[]> {
    const records = planned.map((p) => this.#record(p));
    await this.redeliver(records);
    return records;
  }

  /** Hands `records` over again, as given: same coordinates means a redelivery. */
  async redeliver(records: readonly ConsumedRecord[]): Promise<void> {
    // Consecutive records of one partition go together, so batch handlers get real chunks.
    let run: ConsumedRecord[] = [];
    for (const record of records) {
      const previous = run.at(-1);
      if (previous !== undefined && (previous.topic !== record.topic || previous.partition !== record.partition)) {
        await this.#handOver(run);
        run = [];
      }
      run.push(record);
    }
    if (run.length > 0) await this.#handOver(run);
  }

  /** True when the message has an id of its own (not its Kafka coordinates). */
  hasOwnId(record: ConsumedRecord): boolean {
    const handler = this.#handlers.get(record.topic);
    return handler !== undefined && prepareRecord(this.#pipeline, handler, record).idSource !== 'coordinates';
  }

  async #handOver(records: readonly ConsumedRecord[]): Promise<void> {
    const first = records[0];
    if (first === undefined) return;
    const handler = this.#handlers.get(first.topic);
    if (handler === undefined) return;
    this.#tally.delivered += records.length;
    const chain = new TransactionChain(this.#pipeline.pool, this.#pipeline.bind);
    const control: PartitionControl = { heartbeat: () => Promise.resolve(), isActive: () => true, transactions: chain };
    try {
      if (handler.kind === 'batch') {
        for (let start = 0; start < records.length; start += this.#batchSize) {
          await processChunk(
            this.#pipeline,
            handler,
            records.slice(start, start + this.#batchSize),
            control,
            () => undefined,
          );
        }
      } else {
        for (const record of records) await processRecord(this.#pipeline, handler, record, control);
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
