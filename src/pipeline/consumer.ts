import { type InboxConsumerOptions, resolveConsumerConfig, type ResolvedConsumerConfig } from '../config.js';
import { OncelyError } from '../errors.js';
import { loadNextOffsets } from '../inbox/claims.js';
import { TransactionChain } from '../inbox/transaction.js';
import type { StoredError } from '../inbox/dead-letters.js';
import { createDeadLetterTopic } from '../kafka/dead-letter-topic.js';
import { type ConsumedRecord, createKafkaRunner, type KafkaRunner, type PartitionBatch } from '../kafka/runner.js';
import { latestMigrationId } from '../migrate/migrate.js';
import { type RetentionSchedule, startRetention } from '../retention/schedule.js';
import { type ConsumerEventListener, type ConsumerEventName, EventHub } from './events.js';
import type { BatchHandlerDefinition, HandlerDefinition } from './handler.js';
import { type PipelineContext, transactionSettings } from './outcomes.js';
import { processChunk } from './process-chunk.js';
import { processRecord } from './process-record.js';
import { backoffDelay } from './retry.js';

export interface PausedPartition {
  readonly topic: string;
  readonly partition: number;
  /** The message the partition stopped at. */
  readonly offset: string;
  readonly messageId: string | null;
  readonly error: StoredError;
  readonly pausedAt: Date;
}

export interface InboxConsumer {
  /**
   * Checks the database schema, connects, joins the group and starts consuming; resolves once the
   * member has joined. Idempotent: concurrent and repeated calls share one start.
   */
  start(): Promise<void>;
  /**
   * Finishes the record in flight on each partition, commits the offsets of everything recorded,
   * leaves the group and disconnects. Idempotent.
   */
  stop(): Promise<void>;
  /**
   * Resumes a partition paused by `onExhausted: 'pause'`: its message is fetched again and retried
   * from attempt 1. Throws when the partition is not paused.
   */
  resume(topic: string, partition: number): void;
  /** The partitions paused by `onExhausted: 'pause'`, with the message each one waits at. */
  paused(): PausedPartition[];
  /** Listens to an event; returns a function that removes the listener. */
  on<E extends ConsumerEventName>(event: E, listener: ConsumerEventListener<E>): () => void;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Wraps handlers in the inbox pattern: every message's effects commit at most once per group,
 * every message gets exactly one recorded outcome, and Kafka offsets move only past outcomes
 * already committed in PostgreSQL. Options are validated here; a bad one throws `ONCELY_CONFIG`.
 */
export function createInboxConsumer(options: InboxConsumerOptions): InboxConsumer {
  const config = resolveConsumerConfig(options);
  const events = new EventHub(config.logger);
  const topics = [...config.handlers.keys()];
  const deadLetterTopic =
    config.deadLetterTopicName === undefined
      ? undefined
      : createDeadLetterTopic(config.kafka, topics, config.deadLetterTopicName);
  const pipeline: PipelineContext = {
    groupId: config.groupId,
    pool: config.pool,
    bind: config.bind,
    retry: config.retry,
    logger: config.logger,
    logPayloads: config.logPayloads,
    events,
    handlerTimeoutMs: config.handlerTimeoutMs,
    requireMessageId: config.requireMessageId,
    maxPayloadBytes: config.maxPayloadBytes,
    onExhausted: config.onExhausted,
    deadLetterTopic,
  };
  const pausedPartitions = new Map<string, PausedPartition>();
  const partitionKey = (topic: string, partition: number): string => `${topic}\u0000${partition}`;
  const resumePoints = new ResumePoints(config);

  let runner: KafkaRunner | undefined;
  let starting: Promise<void> | undefined;
  let stopping: Promise<void> | undefined;
  let removeSignalHandlers: (() => void) | undefined;
  let retention: RetentionSchedule | undefined;
  // pg re-emits the error of an idle pooled connection (a failover, pg_terminate_backend) on the
  // Pool, and an 'error' event nobody listens to ends the process. The pool replaces the
  // connection on its own; a consumer must not die of it.
  const onIdleConnectionError = (error: Error): void => {
    config.logger.warn({ err: error }, 'an idle database connection was lost; the pool will open a new one');
  };

  /** The partition's levers, and one connection for its transactions while this batch lasts. */
  const partitionControl = (batch: PartitionBatch) => ({
    heartbeat: () => batch.heartbeat(),
    isActive: () => batch.isActive(),
    transactions: new TransactionChain(config.pool, config.bind, transactionSettings(pipeline)),
  });

  /** Nothing is resolved: the partition stays at this record, fetched again on resume(). */
  const pausePartition = (batch: PartitionBatch, paused: PausedPartition, attempts: number): void => {
    batch.pause();
    pausedPartitions.set(partitionKey(paused.topic, paused.partition), paused);
    events.emit('partition:paused', () => ({ ...paused, groupId: config.groupId, attempts }));
  };

  /** One record at a time, each in its own transaction. */
  const processRecords = async (
    batch: PartitionBatch,
    handler: HandlerDefinition,
    records: readonly ConsumedRecord[],
  ): Promise<void> => {
    const control = partitionControl(batch);
    try {
      for (const [index, record] of records.entries()) {
        if (!batch.isActive()) return;
        // The next record's BEGIN may ride with this record's COMMIT.
        control.transactions.expectMore(index < records.length - 1);
        const outcome = await processRecord(pipeline, handler, record, control);
        if (outcome.kind === 'abandoned') return;
        if (outcome.kind === 'paused') {
          const { messageId, error, attempts } = outcome;
          const at = { topic: record.topic, partition: record.partition, offset: record.offset };
          pausePartition(batch, { ...at, messageId, error, pausedAt: new Date() }, attempts);
          return;
        }
        // The outcome (and the partition's next offset) is committed in PostgreSQL: Kafka may now
        // commit past this record. Never earlier — that is guarantee G3.
        batch.resolve(record.offset);
        await batch.heartbeat();
      }
    } finally {
      await control.transactions.close();
    }
  };

  /** Chunks of up to batchSize records, each in one transaction. */
  const processChunks = async (
    batch: PartitionBatch,
    handler: BatchHandlerDefinition,
    records: readonly ConsumedRecord[],
  ): Promise<void> => {
    const control = partitionControl(batch);
    try {
      for (let start = 0; start < records.length; start += config.batchSize) {
        if (!batch.isActive()) return;
        const chunk = records.slice(start, start + config.batchSize);
        control.transactions.expectMore(start + config.batchSize < records.length);
        // Called after each commit: the outcomes up to that offset are durable, so Kafka may pass them.
        const result = await processChunk(pipeline, handler, chunk, control, (offset) => batch.resolve(offset));
        if (result.kind === 'abandoned') return;
        if (result.kind === 'paused') {
          const { record, messageId } = result.at;
          const at = { topic: record.topic, partition: record.partition, offset: record.offset };
          pausePartition(batch, { ...at, messageId, error: result.error, pausedAt: new Date() }, result.attempts);
          return;
        }
        await batch.heartbeat();
      }
    } finally {
      await control.transactions.close();
    }
  };

  const processBatch = async (batch: PartitionBatch): Promise<void> => {
    const handler = config.handlers.get(batch.topic);
    if (handler === undefined) return; // not subscribed by us; cannot happen with one subscription per handler
    const resumeAt = await resumePoints.nextOffset(batch, pipeline);
    if (resumeAt === undefined) return; // stopped while the database was unreachable

    // Below the resume point recorded in PostgreSQL: these records' outcomes committed before a
    // crash or rebalance lost Kafka's offset commit. Pass over them without claiming; resolving
    // them is safe because their outcomes are durable.
    let firstNew = 0;
    while (firstNew < batch.records.length && BigInt(batch.records[firstNew]?.offset ?? '0') < resumeAt) firstNew++;
    const passedOver = batch.records[firstNew - 1];
    if (passedOver !== undefined) batch.resolve(passedOver.offset);
    const records = firstNew === 0 ? batch.records : batch.records.slice(firstNew);
    if (records.length === 0) {
      const last = batch.records.at(-1);
      if (last !== undefined && BigInt(last.offset) + 1n < resumeAt && batch.isActive()) {
        // The whole batch was below the resume point and more is: jump there instead of fetching it.
        batch.seek(resumeAt.toString());
      }
      return;
    }
    if (handler.kind === 'batch') await processChunks(batch, handler, records);
    else await processRecords(batch, handler, records);
  };

  const start = (): Promise<void> => {
    if (stopping !== undefined) {
      return Promise.reject(
        new OncelyError('ONCELY_STOPPING', 'This consumer was stopped; create a new one to consume again.'),
      );
    }
    starting ??= (async () => {
      await assertMigrated(config);
      await deadLetterTopic?.start();
      runner = createKafkaRunner({
        kafka: config.kafka,
        groupId: config.groupId,
        topics,
        concurrency: config.concurrency,
        fromBeginning: config.fromBeginning,
        consumerConfig: config.consumerConfig,
        onBatch: processBatch,
        onGroupJoin: (assignment) => {
          // Ownership may have changed: read the resume points again for what is now ours.
          resumePoints.clear();
          config.logger.info({ assignment }, 'joined the group');
        },
        onCrash: (error, restart) => {
          config.logger.error({ err: error, restart }, 'the Kafka consumer crashed');
          events.emit('consumer:crash', () => ({ groupId: config.groupId, error, restart }));
          // kafkajs restarts only after errors it deems retriable; after any other crash it stays
          // down, and a consumer that silently stops consuming is the worst failure of all.
          if (!restart) recover(error);
        },
        onStartRetry: (error, delayMs) => {
          config.logger.warn({ err: error, delayMs }, 'the broker cannot be reached yet; retrying start');
        },
      });
      if (config.handleSignals) removeSignalHandlers = installSignalHandlers(stop);
      config.pool.on('error', onIdleConnectionError);
      // A stop() while the broker is still unreachable ends the retrying.
      await runner.start(() => stopping === undefined);
      // Retention (off unless configured): periodic purge, see src/retention/schedule.ts.
      retention = startRetention(config);
      config.logger.info({ topics: [...config.handlers.keys()], concurrency: config.concurrency }, 'consumer started');
    })().catch(async (error: unknown) => {
      // A failed start leaves nothing running, and a later start() may try again.
      await runner?.stop().catch(() => undefined);
      await deadLetterTopic?.stop().catch(() => undefined);
      runner = undefined;
      removeSignalHandlers?.();
      config.pool.off('error', onIdleConnectionError);
      starting = undefined;
      throw error;
    });
    return starting;
  };

  /**
   * Starts the Kafka side again after a crash kafkajs will not recover from, with backoff, until it
   * runs or the consumer is stopped. Nothing is lost meanwhile: unresolved records are fetched again,
   * and the resume points are read again on the new assignment.
   */
  let recovering: Promise<void> | undefined;
  const recover = (crash: unknown): void => {
    if (recovering !== undefined || stopping !== undefined || runner === undefined) return;
    const current = runner;
    recovering = (async () => {
      for (let failures = 1; stopping === undefined; failures++) {
        const delayMs = backoffDelay(config.retry, failures);
        config.logger.warn(
          { err: crash, delayMs },
          'restarting the Kafka consumer after a crash it did not recover from',
        );
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        if (stopping !== undefined) return;
        try {
          await current.stopQuietly(() => undefined);
          resumePoints.clear();
          await current.start(() => stopping === undefined);
          config.logger.info('the Kafka consumer is running again');
          return;
        } catch (error) {
          crash = error;
        }
      }
    })().finally(() => {
      recovering = undefined;
    });
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      removeSignalHandlers?.();
      // Let a start (or a recovery) in progress finish first, so nothing starts after the stop.
      await starting?.catch(() => undefined);
      await recovering;
      await retention?.stop();
      const unreachable = (error: unknown): void => {
        config.logger.warn(
          { err: error },
          'the broker could not be reached while stopping; recorded outcomes are durable and their offsets will be passed over',
        );
      };
      await runner?.stopQuietly(unreachable);
      await deadLetterTopic?.stop().catch(unreachable);
      config.pool.off('error', onIdleConnectionError);
      config.logger.info('consumer stopped');
    })();
    return stopping;
  };

  const resume = (topic: string, partition: number): void => {
    const key = partitionKey(topic, partition);
    if (!pausedPartitions.has(key)) {
      throw new OncelyError('ONCELY_CONFIG', `Partition ${topic}/${partition} is not paused; see consumer.paused().`, {
        context: { topic, partition },
      });
    }
    if (runner === undefined)
      throw new OncelyError('ONCELY_STOPPING', 'The consumer is not running; nothing to resume.');
    runner.resume(topic, partition);
    pausedPartitions.delete(key);
    config.logger.info({ topic, partition }, 'partition resumed');
    events.emit('partition:resumed', () => ({ groupId: config.groupId, topic, partition }));
  };

  return {
    start,
    stop,
    resume,
    paused: () => [...pausedPartitions.values()],
    on: (event, listener) => events.on(event, listener),
    [Symbol.asyncDispose]: stop,
  };
}

/**
 * Per partition, the next offset recorded in `oncely.offsets`, read once per group generation
 * (after each join) and per topic.
 */
class ResumePoints {
  readonly #config: ResolvedConsumerConfig;
  #byTopic = new Map<string, Promise<Map<number, bigint>>>();

  constructor(config: ResolvedConsumerConfig) {
    this.#config = config;
  }

  clear(): void {
    this.#byTopic = new Map();
  }

  /** The resume point of the batch's partition (0 when none is recorded); undefined if stopped first. */
  async nextOffset(batch: PartitionBatch, pipeline: PipelineContext): Promise<bigint | undefined> {
    for (let failures = 1; ; failures++) {
      let pending = this.#byTopic.get(batch.topic);
      if (pending === undefined) {
        pending = loadNextOffsets(this.#config.pool, this.#config.groupId, batch.topic);
        this.#byTopic.set(batch.topic, pending);
      }
      try {
        return (await pending).get(batch.partition) ?? 0n;
      } catch (error) {
        if (this.#byTopic.get(batch.topic) === pending) this.#byTopic.delete(batch.topic);
        const delayMs = backoffDelay(pipeline.retry, failures);
        pipeline.logger.warn({ err: error, topic: batch.topic, delayMs }, 'could not read resume points; retrying');
        if (!batch.isActive()) return undefined;
        await batch.heartbeat();
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
    }
  }
}

async function assertMigrated(config: ResolvedConsumerConfig): Promise<void> {
  const needed = await latestMigrationId();
  const current = await config.pool
    .query<{ version: number | null }>('SELECT max(id) AS version FROM oncely.migrations')
    .then((r) => r.rows[0]?.version ?? 0)
    .catch((error: unknown) => {
      const code = (error as { code?: string }).code;
      if (code === '42P01' || code === '3F000') return 0;
      throw error;
    });
  if (current < needed) {
    throw new OncelyError(
      'ONCELY_NOT_MIGRATED',
      `The oncely schema is at version ${current}, this oncely needs ${needed}. ` +
        'Run `await migrate(db)` at start-up or `npx oncely migrate` before starting consumers.',
      { context: { current, needed } },
    );
  }
}

function installSignalHandlers(stop: () => Promise<void>): () => void {
  const onSignal = (signal: NodeJS.Signals): void => {
    remove();
    // Stop gracefully, then re-raise the signal with the default handler in place, so the process
    // ends the way it would have without us (exit code, parent process expectations).
    void stop()
      .catch(() => undefined) // stop() reports its own problems; the signal must end the process regardless
      .finally(() => process.kill(process.pid, signal));
  };
  const remove = (): void => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  return remove;
}
