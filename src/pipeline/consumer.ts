import { type InboxConsumerOptions, resolveConsumerConfig, type ResolvedConsumerConfig } from './options.js';
import { OncelyError } from '../errors.js';
import { groupsByTopic } from '../inbox/claims.js';
import { DEFAULT_ACQUIRE_TIMEOUT_MS, withPooledClient } from '../inbox/pool.js';
import { recordGroupScope } from '../inbox/scopes.js';
import { createDeadLetterTopic } from '../kafka/dead-letter-topic.js';
import { createKafkaRunner, type KafkaRunner } from '../kafka/runner.js';
import { attachMetrics } from '../metrics/prometheus.js';
import { latestMigrationId } from '../migrate/migrate.js';
import { createOutboxRelay, type OutboxRelay } from '../outbox/relay.js';
import { type RetentionSchedule, startRetention } from '../retention/schedule.js';
import { attachTracing } from '../tracing/spans.js';

import type { PipelineContext } from './context.js';
import { redactError } from './record/error-record.js';
import { type ConsumerEventListener, type ConsumerEventName, EventHub } from '../events/index.js';
import { type BatchProcessing, processBatch } from './lifecycle/partition-batch.js';
import { PartitionPauses, type PausedPartition } from './lifecycle/pauses.js';
import { backoffDelay, classifyFailure } from './retry.js';
import { ResumePoints } from './lifecycle/resume-points.js';
import { startError } from './lifecycle/start-errors.js';

export type { PausedPartition } from './lifecycle/pauses.js';

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
  return new Consumer(resolveConsumerConfig(options));
}

/**
 * A consumer: its parts made once (events, observability, the pipeline's context, pauses and
 * resume points), and the Kafka runner made at each start. The public methods are bound fields,
 * so `const { start, stop } = consumer` works as it did when the consumer was a plain object.
 */
class Consumer implements InboxConsumer {
  readonly #config: ResolvedConsumerConfig;
  readonly #events: EventHub;
  readonly #metrics: ReturnType<typeof attachMetrics> | undefined;
  readonly #deadLetterTopic: ReturnType<typeof createDeadLetterTopic> | undefined;
  readonly #pipeline: PipelineContext;
  readonly #pauses: PartitionPauses;
  readonly #resumePoints: ResumePoints;
  readonly #processing: BatchProcessing;
  #assignment: Readonly<Record<string, readonly number[]>> = {};
  #runner: KafkaRunner | undefined;
  // The outbox relay of `relay` (or of a dead-letter topic), made at each start: one process at a
  // time sends, the others stand by, so it is safe in every replica.
  #relay: OutboxRelay | undefined;
  #retention: RetentionSchedule | undefined;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #recovering: Promise<void> | undefined;
  #removeSignalHandlers: (() => void) | undefined;

  constructor(config: ResolvedConsumerConfig) {
    this.#config = config;
    this.#events = new EventHub(config.logger);
    const topics = [...config.handlers.keys()];
    // Observability listens to the event hub like any listener; built only when enabled.
    this.#metrics =
      config.metrics === undefined
        ? undefined
        : attachMetrics(config.metrics, {
            groupId: config.groupId,
            topics,
            events: this.#events,
            kafka: config.kafka,
            pool: config.pool,
            logger: config.logger,
          });
    if (config.tracing !== undefined) attachTracing(config.tracing, { groupId: config.groupId, events: this.#events });
    this.#deadLetterTopic =
      config.deadLetterTopicName === undefined
        ? undefined
        : createDeadLetterTopic(config.kafka, topics, config.deadLetterTopicName);
    this.#pipeline = pipelineContext(config, this.#events, this.#deadLetterTopic);
    this.#pauses = new PartitionPauses(config.groupId, config.logger, this.#events, () => this.#runner);
    this.#resumePoints = new ResumePoints(config, this.#resumeActions(), () => this.#runner);
    this.#processing = {
      config,
      pipeline: this.#pipeline,
      resumePoints: this.#resumePoints,
      pauses: this.#pauses,
    };
  }

  /** What the resume points do for the partitions this member owns. */
  #resumeActions(): ConstructorParameters<typeof ResumePoints>[1] {
    return {
      assigned: (topic, partition) => this.#assignment[topic]?.includes(partition) ?? false,
      seek: (topic, partition, offset) => {
        this.#config.logger.info(
          { topic, partition, offset },
          'Kafka has no committed offset for this partition: continuing from the resume point recorded in PostgreSQL',
        );
        this.#runner?.seek(topic, partition, offset);
      },
      mismatch: (topic, partition, found) => this.#pauses.offsetsMismatch(topic, partition, found),
    };
  }

  // pg re-emits the error of an idle pooled connection (a failover, pg_terminate_backend) on the
  // Pool, and an 'error' event nobody listens to ends the process. The pool replaces the
  // connection on its own; a consumer must not die of it.
  readonly #onIdleConnectionError = (error: Error): void => {
    this.#config.logger.warn({ err: error }, 'an idle database connection was lost; the pool will open a new one');
  };

  readonly start = (): Promise<void> => {
    if (this.#stopping !== undefined) {
      return Promise.reject(
        new OncelyError('ONCELY_STOPPING', 'This consumer was stopped; create a new one to consume again.'),
      );
    }
    this.#starting ??= this.#startOnce().catch(async (error: unknown) => {
      await this.#undoStart();
      // kafkajs and pg errors come out with a code of oncely's and the original as `cause`.
      throw startError(error, { groupId: this.#config.groupId });
    });
    return this.#starting;
  };

  async #startOnce(): Promise<void> {
    const config = this.#config;
    // Before the first query: from it on the pool holds idle connections, and one lost while the
    // consumer is still starting (a restart during a failover) must not end the process either.
    config.pool.on('error', this.#onIdleConnectionError);
    await withDatabaseRetries(config, 'checking the schema', () => assertMigrated(config));
    await withDatabaseRetries(config, 'checking for a renamed group', () => warnAboutRenamedGroup(config));
    await withDatabaseRetries(config, 'recording the inbox scope', () => recordInboxScope(config));
    await this.#deadLetterTopic?.start();
    if (config.relay !== undefined) {
      const created = createOutboxRelay({
        // The consumer's registry by default: its relay's metrics sit next to its own.
        metrics: config.metrics,
        ...config.relay,
        db: config.db,
        kafka: config.kafka,
        logger: config.logger,
      });
      this.#relay = created;
      await withDatabaseRetries(config, 'starting the outbox relay', () => created.start());
    }
    const runner = this.#createRunner();
    this.#runner = runner;
    if (config.handleSignals) this.#removeSignalHandlers = installSignalHandlers(this.stop);
    // A stop() while the broker is still unreachable ends the retrying.
    await runner.start(() => this.#stopping === undefined);
    this.#metrics?.start();
    // Retention (off unless configured): periodic purge, see src/retention/schedule.ts.
    this.#retention = startRetention(config);
    config.logger.info(
      { topics: [...config.handlers.keys()], concurrency: config.concurrency, lanes: config.lanes?.count ?? 1 },
      'consumer started',
    );
  }

  /** A failed start leaves nothing running, and a later start() may try again. */
  async #undoStart(): Promise<void> {
    await this.#runner?.stop().catch(() => undefined);
    await this.#deadLetterTopic?.stop().catch(() => undefined);
    await this.#relay?.stop().catch(() => undefined);
    this.#relay = undefined;
    this.#runner = undefined;
    this.#removeSignalHandlers?.();
    this.#config.pool.off('error', this.#onIdleConnectionError);
    this.#starting = undefined;
  }

  #createRunner(): KafkaRunner {
    const config = this.#config;
    return createKafkaRunner({
      kafka: config.kafka,
      groupId: config.groupId,
      topics: [...config.handlers.keys()],
      concurrency: config.concurrency,
      fromBeginning: config.fromBeginning,
      consumerConfig: config.consumerConfig,
      onBatch: (batch) => processBatch(this.#processing, batch),
      onGroupJoin: (assigned) => this.#joined(assigned),
      onCrash: (error, restart) => {
        config.logger.error({ err: error, restart }, 'the Kafka consumer crashed');
        this.#events.emit('consumer:crash', () => ({ groupId: config.groupId, error, restart }));
        // kafkajs restarts only after errors it deems retriable; after any other crash it stays
        // down, and a consumer that silently stops consuming is the worst failure of all.
        if (!restart) this.#recover(error);
      },
      onStartRetry: (error, delayMs) => {
        config.logger.warn({ err: error, delayMs }, 'the broker cannot be reached yet; retrying start');
      },
      startTimeoutMs: config.startTimeoutMs,
    });
  }

  /** The member (re)joined the group: ownership may have changed. */
  #joined(assigned: Readonly<Record<string, readonly number[]>>): void {
    // Read the resume points again for what is now ours, and forget the pauses of partitions that
    // went elsewhere (their new owner decides afresh).
    this.#assignment = assigned;
    this.#resumePoints.clear();
    this.#pauses.keepOnly(assigned);
    // kafkajs keeps a partition paused after it left and came back, and forgets every pause when
    // the consumer is re-created: set the state anew, so an owned partition is either consumed or
    // reported paused, never silently idle.
    this.#runner?.reconcilePauses(assigned, (topic, partition) => this.#pauses.has(topic, partition));
    this.#config.logger.info({ assignment: assigned }, 'joined the group');
    // Check the offsets of what is now ours at once: a partition with nothing new to fetch must
    // still be moved back to its resume point or stopped on a mismatch.
    for (const topic of Object.keys(assigned)) this.#resumePoints.check(topic, this.#pipeline);
  }

  /**
   * Starts the Kafka side again after a crash kafkajs will not recover from, with backoff, until it
   * runs or the consumer is stopped. Nothing is lost meanwhile: unresolved records are fetched again,
   * and the resume points are read again on the new assignment.
   */
  #recover(crash: unknown): void {
    const current = this.#runner;
    if (this.#recovering !== undefined || this.#stopping !== undefined || current === undefined) return;
    this.#recovering = (async () => {
      for (let failures = 1; this.#stopping === undefined; failures++) {
        const delayMs = backoffDelay(this.#config.retry, failures);
        this.#config.logger.warn(
          { err: crash, delayMs },
          'restarting the Kafka consumer after a crash it did not recover from',
        );
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        if (this.#stopping !== undefined) return;
        try {
          await current.stopQuietly(() => undefined);
          this.#resumePoints.clear();
          await current.start(() => this.#stopping === undefined);
          this.#config.logger.info('the Kafka consumer is running again');
          return;
        } catch (error) {
          crash = error;
        }
      }
    })().finally(() => {
      this.#recovering = undefined;
    });
  }

  readonly stop = (): Promise<void> => {
    this.#stopping ??= this.#stopOnce();
    return this.#stopping;
  };

  async #stopOnce(): Promise<void> {
    const config = this.#config;
    this.#removeSignalHandlers?.();
    // Let a start (or a recovery) in progress finish first, so nothing starts after the stop.
    await this.#starting?.catch(() => undefined);
    await this.#recovering;
    await this.#retention?.stop();
    const unreachable = (error: unknown): void => {
      config.logger.warn(
        { err: error },
        'the broker could not be reached while stopping; recorded outcomes are durable and their offsets will be passed over',
      );
    };
    // Lanes drain here too: each partition's batch returns once its lanes have finished or rolled
    // back their transactions, and only the watermark's offsets are committed.
    await this.#runner?.stopQuietly(unreachable);
    await this.#deadLetterTopic?.stop().catch(unreachable);
    // After the runner: dead letters recorded while draining are in the outbox; whatever this
    // relay does not send now, the next active relay sends.
    await this.#relay?.stop().catch(unreachable);
    await this.#metrics?.stop();
    config.pool.off('error', this.#onIdleConnectionError);
    config.logger.info('consumer stopped');
  }

  readonly resume = (topic: string, partition: number): void => {
    if (!this.#pauses.has(topic, partition)) {
      throw new OncelyError('ONCELY_CONFIG', `Partition ${topic}/${partition} is not paused; see consumer.paused().`, {
        context: { topic, partition },
      });
    }
    const runner = this.#runner;
    if (runner === undefined)
      throw new OncelyError('ONCELY_STOPPING', 'The consumer is not running; nothing to resume.');
    this.#pauses.release(topic, partition);
    // After an offsets mismatch, read the offsets again: resuming checks them anew.
    this.#resumePoints.clear();
    runner.resume(topic, partition);
    this.#config.logger.info({ topic, partition }, 'partition resumed');
    this.#events.emit('partition:resumed', () => ({ groupId: this.#config.groupId, topic, partition }));
  };

  readonly paused = (): PausedPartition[] => this.#pauses.list();

  readonly on = <E extends ConsumerEventName>(event: E, listener: ConsumerEventListener<E>): (() => void) =>
    this.#events.on(event, listener);

  readonly [Symbol.asyncDispose] = (): Promise<void> => this.stop();
}

/** What the record pipeline needs of the consumer: its settings, its events and its connections. */
function pipelineContext(
  config: ResolvedConsumerConfig,
  events: EventHub,
  deadLetterTopic: PipelineContext['deadLetterTopic'],
): PipelineContext {
  return {
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
    // Waited for within a bound: the partition holds its own connection meanwhile (DESIGN §3a).
    cancelBackend: async (pid) => {
      await withPooledClient(config.pool, DEFAULT_ACQUIRE_TIMEOUT_MS, 'cancelling a timed-out statement', (client) =>
        client.query('SELECT pg_cancel_backend($1)', [pid]),
      );
    },
  };
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

/**
 * Records group → inbox scope (and the topics consumed) before any claim: replay plans, purges and
 * retention are asked about a group and must look in the scope it claims in, and a purge of the
 * scope must be bounded by this group's positions too.
 */
async function recordInboxScope(config: ResolvedConsumerConfig): Promise<void> {
  const previous = await recordGroupScope(config.pool, {
    groupId: config.groupId,
    inboxScope: config.inboxScope,
    topics: [...config.handlers.keys()],
  });
  if (previous !== undefined) {
    config.logger.warn(
      { inboxScope: config.inboxScope, previousInboxScope: previous },
      `group ${config.groupId} claimed in inbox scope ${previous} until now and claims in ${config.inboxScope} from now on: ` +
        `ids applied in ${previous} are not recognised in ${config.inboxScope}`,
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
