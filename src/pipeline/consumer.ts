import { type InboxConsumerOptions, resolveConsumerConfig, type ResolvedConsumerConfig } from '../config.js';
import { OncelyError } from '../errors.js';
import { groupsByTopic, loadNextOffsets } from '../inbox/claims.js';
import type { StoredError } from '../inbox/dead-letters.js';
import { TransactionChain } from '../inbox/transaction.js';
import { createDeadLetterTopic } from '../kafka/dead-letter-topic.js';
import { type ConsumedRecord, createKafkaRunner, type KafkaRunner, type PartitionBatch } from '../kafka/runner.js';
import { attachMetrics } from '../metrics/prometheus.js';
import { latestMigrationId } from '../migrate/migrate.js';
import { createOutboxRelay, type OutboxRelay } from '../outbox/relay.js';
import { type RetentionSchedule, startRetention } from '../retention/schedule.js';
import { attachTracing } from '../tracing/spans.js';

import type { PipelineContext } from './context.js';
import { describeError, redactError } from './error-record.js';
import { type ConsumerEventListener, type ConsumerEventName, EventHub } from './events.js';
import type { PauseReason } from './events.js';
import type { BatchHandlerDefinition, HandlerDefinition } from './handler.js';
import { processChunk } from './process-chunk.js';
import { processRecords } from './process-group.js';
import { backoffDelay, classifyFailure } from './retry.js';
import { startError } from './start-errors.js';

export interface PausedPartition {
  readonly topic: string;
  readonly partition: number;
  /** The message the partition stopped at (for an offsets mismatch: the recorded resume point). */
  readonly offset: string;
  readonly messageId: string | null;
  /** Why: attempts ran out (`onExhausted: 'pause'`), its outcome could not be stored, or the offsets disagree. */
  readonly reason: PauseReason;
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
   * Resumes a paused partition: its message is fetched again and retried from attempt 1 (after an
   * offsets mismatch: the offsets are checked again, so fix them first with `oncely offsets reset`).
   * Throws when the partition is not paused.
   */
  resume(topic: string, partition: number): void;
  /** The partitions this member owns that are paused, with the message each one waits at and why. */
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
  // Observability listens to the event hub like any listener; built only when enabled.
  const metrics =
    config.metrics === undefined
      ? undefined
      : attachMetrics(config.metrics, {
          groupId: config.groupId,
          topics,
          events,
          kafka: config.kafka,
          pool: config.pool,
          logger: config.logger,
        });
  if (config.tracing !== undefined) attachTracing(config.tracing, { groupId: config.groupId, events });
  const deadLetterTopic =
    config.deadLetterTopicName === undefined
      ? undefined
      : createDeadLetterTopic(config.kafka, topics, config.deadLetterTopicName);
  // The outbox relay of `relay` (or of a dead-letter topic), made at each start: one process at a
  // time sends, the others stand by, so it is safe in every replica.
  let relay: OutboxRelay | undefined;
  const pipeline: PipelineContext = {
    groupId: config.groupId,
    inboxScope: config.inboxScope,
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
    warnedCoordinateIds: new Set(),
    // From another pooled connection: the stuck one is busy with the statement to cancel.
    cancelBackend: async (pid) => {
      await config.pool.query('SELECT pg_cancel_backend($1)', [pid]);
    },
  };
  const pausedPartitions = new Map<string, PausedPartition>();
  const partitionKey = (topic: string, partition: number): string => `${topic}\u0000${partition}`;
  let assignment: Readonly<Record<string, readonly number[]>> = {};
  const resumePoints = new ResumePoints(
    config,
    {
      assigned: (topic, partition) => assignment[topic]?.includes(partition) ?? false,
      seek: (topic, partition, offset) => {
        config.logger.info(
          { topic, partition, offset },
          'Kafka has no committed offset for this partition: continuing from the resume point recorded in PostgreSQL',
        );
        runner?.seek(topic, partition, offset);
      },
      mismatch: (topic, partition, found) => offsetsMismatch(topic, partition, found),
    },
    () => runner,
  );

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
    transactions: new TransactionChain(config.pool, config.bind),
  });

  /** Nothing is resolved: the partition stays at this record, fetched again on resume(). */
  const pausePartition = (
    record: ConsumedRecord,
    stopped: { messageId: string | null; reason: PauseReason; error: StoredError; attempts: number },
  ): void => {
    const { topic, partition, offset } = record;
    const { attempts, ...why } = stopped;
    const paused: PausedPartition = { topic, partition, offset, ...why, pausedAt: new Date() };
    runner?.pause(topic, partition);
    pausedPartitions.set(partitionKey(topic, partition), paused);
    events.emit('partition:paused', () => ({ ...paused, groupId: config.groupId, attempts }));
  };

  /**
   * The recorded resume point and the log disagree: skipping to where Kafka is would lose messages
   * silently, so the partition stops here until an operator decides (`oncely offsets show|reset`).
   */
  const offsetsMismatch = (topic: string, partition: number, found: OffsetsMismatch): void => {
    if (pausedPartitions.has(partitionKey(topic, partition))) return;
    const { resumeAt, logStart, logEnd, problem } = found;
    const explanation =
      problem === 'ahead-of-log'
        ? `oncely.offsets says the next offset is ${resumeAt}, but the log ends at ${logEnd}: the topic was deleted and re-created, or its log truncated`
        : `oncely.offsets says the next offset is ${resumeAt}, but the log starts at ${logStart}: messages were deleted before they were processed`;
    const message =
      `Partition ${topic}/${partition} paused: ${explanation}. Nothing was skipped. ` +
      `Check with \`oncely offsets show --group ${config.groupId} --topic ${topic}\`, then move both offsets with ` +
      `\`oncely offsets reset --group ${config.groupId} --topic ${topic} --partitions ${partition} --to <offset|earliest|latest>\` ` +
      'while the group is stopped, and start the consumer again.';
    const error = describeError(
      new OncelyError('ONCELY_OFFSETS_MISMATCH', message, {
        context: {
          topic,
          partition,
          resumeOffset: resumeAt.toString(),
          logStartOffset: logStart.toString(),
          logEndOffset: logEnd.toString(),
        },
      }),
    );
    config.logger.error(
      {
        topic,
        partition,
        resumeOffset: resumeAt.toString(),
        logStartOffset: logStart.toString(),
        logEndOffset: logEnd.toString(),
        problem,
      },
      message,
    );
    runner?.pause(topic, partition);
    pausedPartitions.set(partitionKey(topic, partition), {
      topic,
      partition,
      offset: resumeAt.toString(),
      messageId: null,
      reason: 'offsets-mismatch',
      error,
      pausedAt: new Date(),
    });
    events.emit('partition:offsets-mismatch', () => ({
      groupId: config.groupId,
      topic,
      partition,
      resumeOffset: resumeAt.toString(),
      logStartOffset: logStart.toString(),
      logEndOffset: logEnd.toString(),
      problem,
    }));
  };

  /** Message mode: each record its own claim and handler call, grouped into transactions (process-group.ts). */
  const processMessages = async (
    batch: PartitionBatch,
    handler: HandlerDefinition,
    records: readonly ConsumedRecord[],
  ): Promise<void> => {
    const control = partitionControl(batch);
    try {
      const result = await processRecords(pipeline, handler, records, control, {
        maxMessages: config.maxMessagesPerTransaction,
        // Called only after a commit: the outcomes up to that offset are durable, so Kafka may pass them (G3).
        committed: (offset) => batch.resolve(offset),
      });
      if (result.kind === 'stopped') {
        const { record, messageId, reason, error, attempts } = result;
        pausePartition(record, { messageId, reason, error, attempts });
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
        if (result.kind === 'paused' || result.kind === 'unrecordable') {
          const { record, messageId } = result.at;
          const reason = result.kind === 'paused' ? 'exhausted' : 'unrecordable';
          pausePartition(record, { messageId, reason, error: result.error, attempts: result.attempts });
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
    const start = await resumePoints.startOf(batch, pipeline);
    if (start === undefined) return; // stopped while the database or the broker was unreachable
    // Offsets that disagree with the log: paused, nothing processed (see offsetsMismatch).
    if (start.mismatch !== undefined || pausedPartitions.has(partitionKey(batch.topic, batch.partition))) return;
    if (!batch.isActive()) return;
    // Fetched from where Kafka was before oncely moved the partition to its resume point: stale.
    // Only until the first batch fetched from there; after it, the partition reads on as usual.
    if (start.seekTo !== undefined && resumePoints.seekPending(batch)) {
      if (BigInt(batch.fetchedOffset) > start.seekTo) return;
      resumePoints.seekDone(batch);
    }
    const resumeAt = start.resumeAt ?? 0n;

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
    else await processMessages(batch, handler, records);
  };

  const start = (): Promise<void> => {
    if (stopping !== undefined) {
      return Promise.reject(
        new OncelyError('ONCELY_STOPPING', 'This consumer was stopped; create a new one to consume again.'),
      );
    }
    starting ??= (async () => {
      await withDatabaseRetries(config, 'checking the schema', () => assertMigrated(config));
      await withDatabaseRetries(config, 'checking for a renamed group', () => warnAboutRenamedGroup(config));
      await deadLetterTopic?.start();
      if (config.relay !== undefined) {
        const created = createOutboxRelay({
          // The consumer's registry by default: its relay's metrics sit next to its own.
          metrics: config.metrics,
          ...config.relay,
          db: config.db,
          kafka: config.kafka,
          logger: config.logger,
        });
        relay = created;
        await withDatabaseRetries(config, 'starting the outbox relay', () => created.start());
      }
      runner = createKafkaRunner({
        kafka: config.kafka,
        groupId: config.groupId,
        topics,
        concurrency: config.concurrency,
        fromBeginning: config.fromBeginning,
        consumerConfig: config.consumerConfig,
        onBatch: processBatch,
        onGroupJoin: (assigned) => {
          // Ownership may have changed: read the resume points again for what is now ours, and
          // forget the pauses of partitions that went elsewhere (their new owner decides afresh).
          assignment = assigned;
          resumePoints.clear();
          for (const [key, paused] of pausedPartitions) {
            if (!(assigned[paused.topic]?.includes(paused.partition) ?? false)) pausedPartitions.delete(key);
          }
          // kafkajs keeps a partition paused after it left and came back, and forgets every pause
          // when the consumer is re-created: set the state anew, so an owned partition is either
          // consumed or reported paused, never silently idle.
          runner?.reconcilePauses(assigned, (topic, partition) => pausedPartitions.has(partitionKey(topic, partition)));
          config.logger.info({ assignment: assigned }, 'joined the group');
          // Check the offsets of what is now ours at once: a partition with nothing new to fetch
          // must still be moved back to its resume point or stopped on a mismatch.
          for (const topic of Object.keys(assigned)) resumePoints.check(topic, pipeline);
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
        startTimeoutMs: config.startTimeoutMs,
      });
      if (config.handleSignals) removeSignalHandlers = installSignalHandlers(stop);
      config.pool.on('error', onIdleConnectionError);
      // A stop() while the broker is still unreachable ends the retrying.
      await runner.start(() => stopping === undefined);
      metrics?.start();
      // Retention (off unless configured): periodic purge, see src/retention/schedule.ts.
      retention = startRetention(config);
      config.logger.info({ topics: [...config.handlers.keys()], concurrency: config.concurrency }, 'consumer started');
    })().catch(async (error: unknown) => {
      // A failed start leaves nothing running, and a later start() may try again.
      await runner?.stop().catch(() => undefined);
      await deadLetterTopic?.stop().catch(() => undefined);
      await relay?.stop().catch(() => undefined);
      relay = undefined;
      runner = undefined;
      removeSignalHandlers?.();
      config.pool.off('error', onIdleConnectionError);
      starting = undefined;
      // kafkajs and pg errors come out with a code of oncely's and the original as `cause`.
      throw startError(error, { groupId: config.groupId });
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
      // After the runner: dead letters recorded while draining are in the outbox; whatever this
      // relay does not send now, the next active relay sends.
      await relay?.stop().catch(unreachable);
      await metrics?.stop();
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
    pausedPartitions.delete(key);
    // After an offsets mismatch, read the offsets again: resuming checks them anew.
    resumePoints.clear();
    runner.resume(topic, partition);
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

/** The recorded resume point disagrees with the log; see `partition:offsets-mismatch`. */
interface OffsetsMismatch {
  readonly resumeAt: bigint;
  readonly logStart: bigint;
  readonly logEnd: bigint;
  readonly problem: 'ahead-of-log' | 'behind-log-start';
}

/** Where a partition starts in this group generation. */
interface PartitionStart {
  /** The next offset recorded in `oncely.offsets`; undefined when none is. */
  readonly resumeAt: bigint | undefined;
  /** Kafka had no committed offset (or an earlier one): the partition was moved to `resumeAt`. */
  readonly seekTo?: bigint;
  readonly mismatch?: OffsetsMismatch;
}

interface ResumeActions {
  assigned(topic: string, partition: number): boolean;
  seek(topic: string, partition: number, offset: string): void;
  mismatch(topic: string, partition: number, found: OffsetsMismatch): void;
}

/**
 * Per partition, where to start: the next offset recorded in `oncely.offsets`, checked against
 * the log's bounds and Kafka's committed offset, once per group generation (after each join) and
 * per topic. Acts on what it finds for the partitions this member owns: moves a partition Kafka
 * has no offset for back to its resume point (instead of the log's end, which would skip what was
 * produced meanwhile), and stops one whose resume point is outside the log.
 */
class ResumePoints {
  readonly #config: ResolvedConsumerConfig;
  readonly #actions: ResumeActions;
  readonly #runner: () => KafkaRunner | undefined;
  #byTopic = new Map<string, Promise<Map<number, PartitionStart>>>();
  /** Partitions moved to their resume point whose first batch from there has not come yet. */
  #seeking = new Set<string>();

  constructor(config: ResolvedConsumerConfig, actions: ResumeActions, runner: () => KafkaRunner | undefined) {
    this.#config = config;
    this.#actions = actions;
    this.#runner = runner;
  }

  clear(): void {
    this.#byTopic = new Map();
    this.#seeking = new Set();
  }

  seekPending(batch: PartitionBatch): boolean {
    return this.#seeking.has(`${batch.topic}\u0000${batch.partition}`);
  }

  seekDone(batch: PartitionBatch): void {
    this.#seeking.delete(`${batch.topic}\u0000${batch.partition}`);
  }

  /** Starts reading a topic's starts now (after a join); problems are retried by the batches. */
  check(topic: string, pipeline: PipelineContext): void {
    this.#load(topic).catch((error: unknown) => {
      pipeline.logger.warn(
        { err: redactError(error), topic },
        'could not check resume points yet; retrying with the next batch',
      );
    });
  }

  /** The batch's partition's start; undefined if the consumer stopped first. */
  async startOf(batch: PartitionBatch, pipeline: PipelineContext): Promise<PartitionStart | undefined> {
    for (let failures = 1; ; failures++) {
      try {
        return (await this.#load(batch.topic)).get(batch.partition) ?? { resumeAt: undefined };
      } catch (error) {
        const delayMs = backoffDelay(pipeline.retry, failures);
        pipeline.logger.warn(
          { err: redactError(error), topic: batch.topic, delayMs },
          'could not read resume points; retrying',
        );
        if (!batch.isActive()) return undefined;
        await batch.heartbeat();
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
    }
  }

  #load(topic: string): Promise<Map<number, PartitionStart>> {
    let pending = this.#byTopic.get(topic);
    if (pending === undefined) {
      pending = this.#read(topic);
      this.#byTopic.set(topic, pending);
      // A failed read is not kept: the next batch reads again.
      pending.catch(() => {
        if (this.#byTopic.get(topic) === pending) this.#byTopic.delete(topic);
      });
    }
    return pending;
  }

  async #read(topic: string): Promise<Map<number, PartitionStart>> {
    const runner = this.#runner();
    // PostgreSQL first, the log after: the log's end only grows, so a resume point committed
    // before this read can never look ahead of the end read after it.
    const resumePoints = await loadNextOffsets(this.#config.pool, this.#config.groupId, topic);
    const [bounds, committed] =
      runner === undefined || resumePoints.size === 0
        ? [new Map<number, { start: bigint; end: bigint }>(), new Map<number, bigint>()]
        : await Promise.all([runner.logBounds(topic), runner.committedOffsets(topic)]);
    const starts = new Map<number, PartitionStart>();
    for (const [partition, resumeAt] of resumePoints) {
      const start = decideStart(resumeAt, bounds.get(partition), committed.get(partition));
      starts.set(partition, start);
      if (!this.#actions.assigned(topic, partition)) continue;
      if (start.mismatch !== undefined) this.#actions.mismatch(topic, partition, start.mismatch);
      else if (start.seekTo !== undefined) {
        this.#seeking.add(`${topic}\u0000${partition}`);
        this.#actions.seek(topic, partition, start.seekTo.toString());
      }
    }
    return starts;
  }
}

/**
 * Where a partition with a recorded resume point starts. Kafka's committed offset wins when it is
 * later (an operator moved it on purpose); a resume point past the log's end, or a start before the
 * log's beginning, is a mismatch; no committed offset (or an earlier one) means: move to the resume point.
 */
export function decideStart(
  resumeAt: bigint,
  bounds: { readonly start: bigint; readonly end: bigint } | undefined,
  committed: bigint | undefined,
): PartitionStart {
  if (bounds === undefined) return { resumeAt };
  const effective = committed !== undefined && committed > resumeAt ? committed : resumeAt;
  if (resumeAt > bounds.end) {
    return { resumeAt, mismatch: { resumeAt, logStart: bounds.start, logEnd: bounds.end, problem: 'ahead-of-log' } };
  }
  if (effective < bounds.start) {
    return {
      resumeAt,
      mismatch: { resumeAt, logStart: bounds.start, logEnd: bounds.end, problem: 'behind-log-start' },
    };
  }
  if (committed === undefined || committed < resumeAt) return { resumeAt, seekTo: resumeAt };
  return { resumeAt };
}

/**
 * Start-up work against the database rides out an outage — a connection cut by the server, a
 * restart, a failover — as the pipeline does, for up to `startTimeoutMs`: a consumer must not fail
 * to start because one pooled connection was terminated a moment ago. Any other error fails at once.
 */
async function withDatabaseRetries<T>(
  config: ResolvedConsumerConfig,
  what: string,
  work: () => Promise<T>,
): Promise<T> {
  const giveUpAt = Date.now() + config.startTimeoutMs;
  for (let failures = 1; ; failures++) {
    try {
      return await work();
    } catch (error) {
      const outage = classifyFailure({ error, inHandler: false, connectionLost: false }) === 'transient';
      if (!outage || Date.now() >= giveUpAt) throw error;
      const delayMs = backoffDelay(config.retry, failures);
      config.logger.warn({ err: redactError(error), delayMs }, `the database failed while ${what}; retrying`);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

/**
 * A group with no resume point on a topic that other groups have consumed, with an inbox of its
 * own: typically a renamed group ("ledger" → "ledger-v2"), about to apply every event again.
 */
async function warnAboutRenamedGroup(config: ResolvedConsumerConfig): Promise<void> {
  const byTopic = await groupsByTopic(config.pool, [...config.handlers.keys()]);
  for (const [topic, groups] of byTopic) {
    if (groups.includes(config.groupId) || groups.includes(config.inboxScope)) continue;
    config.logger.warn(
      { topic, otherGroups: groups, inboxScope: config.inboxScope },
      `group ${config.groupId} starts on ${topic} with an inbox of its own, but ${groups.join(', ')} already consumed it: ` +
        'every event there will be applied again. If this group replaces one of them, set inboxScope to its group id.',
    );
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
  if (current > needed) {
    // A newer oncely changed the schema; this one cannot know what its rows now mean.
    throw new OncelyError(
      'ONCELY_SCHEMA_TOO_NEW',
      `The oncely schema is at version ${current}, newer than this oncely knows (${needed}): ` +
        'a newer oncely migrated this database. Upgrade oncely in this service before starting consumers.',
      { context: { current, needed } },
    );
  }
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
