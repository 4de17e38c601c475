import type { Admin, Consumer, ConsumerConfig, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';

import { isOncelyError, OncelyError } from '../errors.js';
import type { IdentitySource } from './message-identity.js';
import { type LoggedRecord, committedOffsets as readCommittedOffsets, recordsAt, topicLog } from './offsets.js';

/** One consumed record, free of kafkajs types. */
export interface ConsumedRecord extends IdentitySource {
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  /** Milliseconds since the epoch, as a decimal string (Kafka's record timestamp). */
  readonly timestamp: string;
}

/**
 * A run of consecutive records of one partition, and the levers the pipeline needs. The runner
 * never moves an offset by itself: only `resolve`, called by the pipeline once a record's outcome
 * is committed in PostgreSQL, lets Kafka's committed offset pass a record.
 */
export interface PartitionBatch {
  readonly topic: string;
  readonly partition: number;
  readonly records: readonly ConsumedRecord[];
  /** The offset the fetch asked for: where Kafka had the partition when the batch was fetched. */
  readonly fetchedOffset: string;
  /** Marks `offset` and everything before it in this partition as done; committed after the batch. */
  resolve(offset: string): void;
  /** Keeps the group membership alive; throws when the group is rebalancing. Cheap to call often. */
  heartbeat(): Promise<void>;
  /** False once the consumer is stopping or the batch went stale (a seek); stop taking records then. */
  isActive(): boolean;
  /** Continues the partition at `offset` after this batch (the batch goes stale). */
  seek(offset: string): void;
  /** Stops fetching this partition until `KafkaRunner.resume()`; unresolved records are fetched again then. */
  pause(): void;
}

export interface KafkaRunnerOptions {
  readonly kafka: Kafka;
  readonly groupId: string;
  readonly topics: readonly string[];
  /** Partitions processed at once; records of one partition are always processed in order. */
  readonly concurrency: number;
  readonly fromBeginning: boolean;
  /** Passed to `kafka.consumer()`; `groupId` is oncely's. */
  readonly consumerConfig: Omit<ConsumerConfig, 'groupId'>;
  readonly onBatch: (batch: PartitionBatch) => Promise<void>;
  /** The member (re)joined the group: partition ownership may have changed. */
  readonly onGroupJoin: (assignment: Readonly<Record<string, readonly number[]>>) => void;
  readonly onCrash: (error: unknown, restart: boolean) => void;
  /** Starting failed on a broker that could not be reached; trying again after `delayMs`. */
  readonly onStartRetry?: (error: unknown, delayMs: number) => void;
  /** How long start() keeps trying to reach the broker before it rejects with `ONCELY_KAFKA_UNREACHABLE`. */
  readonly startTimeoutMs: number;
}

/**
 * Connection trouble and leader elections: kafkajs marks them retriable. And one it does not: a
 * TypeError inside kafkajs itself ("Cannot destructure property 'topicMetadata' of … null"), which
 * its admin client throws when a broker going down answers a metadata request with nothing
 * (kafkajs issues 461 and 549). Starting while the broker restarts must wait for it, not fail.
 */
function isRetriableKafkaError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null || isOncelyError(error)) return false;
  if (error instanceof TypeError) return KAFKAJS_FRAME.test(error.stack ?? '');
  const { name, retriable } = error as { name?: unknown; retriable?: unknown };
  return retriable === true || name === 'KafkaJSNumberOfRetriesExceeded' || name === 'KafkaJSConnectionError';
}

/** How long stopping waits for offset reads under way before it closes their admin connection. */
const ADMIN_DRAIN_MS = 5_000;

/** Resolves after `ms`, without holding the process open. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** A stack frame of kafkajs's own code (the first frame after the message line). */
const KAFKAJS_FRAME = /^[^\n]*\n\s+at [^\n]*[\\/]kafkajs[\\/]src[\\/]/;

export interface KafkaRunner {
  /**
   * Connects, joins the group and starts fetching; resolves once the member has joined. Retries
   * while the broker is unreachable (up to `startTimeoutMs`), for as long as `wanted()` says so.
   */
  start(wanted?: () => boolean): Promise<void>;
  /** Waits for the batches in flight, commits what they resolved, leaves the group, disconnects. */
  stop(): Promise<void>;
  /** stop(), reporting a broker it cannot reach to `onError` instead of failing. */
  stopQuietly(onError: (error: unknown) => void): Promise<void>;
  /** Fetches a paused partition again, from its first unresolved record. */
  resume(topic: string, partition: number): void;
  /** Stops fetching a partition until {@link resume}. */
  pause(topic: string, partition: number): void;
  /** Continues a partition at `offset` (batches fetched before become stale). */
  seek(topic: string, partition: number, offset: string): void;
  /**
   * Makes kafkajs's pause state of the assigned partitions match `shouldPause`: kafkajs keeps a
   * partition paused after it moved to another member and back, and forgets every pause when the
   * consumer is re-created, so the state is set anew on each assignment.
   */
  reconcilePauses(
    assignment: Readonly<Record<string, readonly number[]>>,
    shouldPause: (topic: string, partition: number) => boolean,
  ): void;
  /** Per partition: the log's first offset and its end (high watermark). */
  logBounds(topic: string): Promise<Map<number, { readonly start: bigint; readonly end: bigint }>>;
  /** Per partition: the group's committed offset in Kafka; absent when none is committed. */
  committedOffsets(topic: string): Promise<Map<number, bigint>>;
  /**
   * Per partition, the record at the given offset, fetched from its leader without the group
   * (absent when that offset holds no data record): what a resume point is recognised by.
   */
  recordsAt(topic: string, offsets: ReadonlyMap<number, bigint>): Promise<Map<number, LoggedRecord>>;
}

export function createKafkaRunner(options: KafkaRunnerOptions): KafkaRunner {
  return new ConsumerRunner(options);
}

/**
 * The kafkajs consumer behind a {@link KafkaRunner}: made anew at each start (kafkajs does not
 * restart a consumer after some crashes), joined to the group, fetching batches for the pipeline.
 */
class ConsumerRunner implements KafkaRunner {
  readonly #options: KafkaRunnerOptions;
  readonly #offsets: OffsetReader;
  #consumer: Consumer | undefined;

  constructor(options: KafkaRunnerOptions) {
    this.#options = options;
    this.#offsets = new OffsetReader(options.kafka);
  }

  /**
   * A broker that is restarting, or not elected a leader yet, must not keep a consumer from
   * starting: retriable Kafka errors are retried with backoff (kafkajs retries some calls on its
   * own, not all of them). Anything else — a missing topic — fails at once. The whole start is
   * bounded by `startTimeoutMs`, whatever kafkajs's own retry settings are: a deployment whose
   * broker address is wrong must fail its start (and its readiness probe) in a known time.
   */
  async start(wanted: () => boolean = () => true): Promise<void> {
    // A runner is started again after a crash kafkajs does not recover from: reads are wanted again.
    this.#offsets.reopen();
    const attempt = { lastError: undefined as unknown, gaveUp: false };
    const attempts = this.#startAttempts(wanted, attempt);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        attempt.gaveUp = true;
        reject(unreachable(this.#options.startTimeoutMs, attempt.lastError));
      }, this.#options.startTimeoutMs);
    });
    try {
      await Promise.race([attempts, timedOut]);
    } finally {
      clearTimeout(timer);
      // The attempt still in flight after a timeout ends on its own (kafkajs's retries run out).
      attempts.catch(() => undefined);
    }
  }

  async #startAttempts(wanted: () => boolean, attempt: { lastError: unknown; gaveUp: boolean }): Promise<void> {
    for (let failures = 1; ; failures++) {
      try {
        await this.#startOnce();
        // Joined only after start() had already given up: nobody wants this consumer any more.
        if (attempt.gaveUp) await this.#stopConsumer().catch(() => undefined);
        return;
      } catch (error) {
        attempt.lastError = error;
        const half = this.#consumer;
        this.#consumer = undefined;
        await half?.disconnect().catch(() => undefined);
        if (!isRetriableKafkaError(error) || !wanted() || attempt.gaveUp) throw error;
        const delayMs = Math.min(5_000, 250 * 2 ** (failures - 1));
        this.#options.onStartRetry?.(error, delayMs);
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
    }
  }

  async #startOnce(): Promise<void> {
    const options = this.#options;
    await assertTopicsExist(options.kafka, options.topics);
    const created = options.kafka.consumer({ ...options.consumerConfig, groupId: options.groupId });
    this.#consumer = created;
    created.on(created.events.GROUP_JOIN, (event) => {
      options.onGroupJoin(event.payload.memberAssignment);
    });
    created.on(created.events.CRASH, (event) => {
      options.onCrash(event.payload.error, event.payload.restart);
    });
    await created.connect();
    await created.subscribe({ topics: [...options.topics], fromBeginning: options.fromBeginning });
    await created.run({
      // Offsets are resolved by the pipeline only, after the database commit (never auto-resolved
      // at the end of a batch). kafkajs commits the resolved offsets after each batch, on a
      // rebalance and when stopping; a resolved offset is already durable in PostgreSQL, so any of
      // those commits is safe.
      eachBatchAutoResolve: false,
      autoCommit: true,
      partitionsConsumedConcurrently: options.concurrency,
      eachBatch: (payload) => options.onBatch(toPartitionBatch(created, payload)),
    });
  }

  async #stopConsumer(): Promise<void> {
    const current = this.#consumer;
    this.#consumer = undefined;
    // disconnect() stops the runner first: it waits for eachBatch calls in flight (they see
    // isActive() turn false and return after their current record), commits the offsets they
    // resolved, and leaves the group so the partitions are reassigned at once.
    await current?.disconnect();
  }

  async stop(): Promise<void> {
    try {
      await this.#stopConsumer();
    } finally {
      await this.#offsets.close();
    }
  }

  // A broker that cannot be reached does not make stopping fail: the records in flight are
  // finished either way, and every recorded outcome's offset is durable in PostgreSQL, so a lost
  // offset commit only means the next member passes over those records on assignment.
  stopQuietly(onError: (error: unknown) => void): Promise<void> {
    return this.stop().catch(onError);
  }

  resume(topic: string, partition: number): void {
    if (this.#consumer === undefined) {
      throw new OncelyError('ONCELY_STOPPING', 'The consumer is not running; nothing to resume.');
    }
    this.#consumer.resume([{ topic, partitions: [partition] }]);
  }

  pause(topic: string, partition: number): void {
    this.#running().pause([{ topic, partitions: [partition] }]);
  }

  seek(topic: string, partition: number, offset: string): void {
    this.#running().seek({ topic, partition, offset });
  }

  reconcilePauses(
    assignment: Readonly<Record<string, readonly number[]>>,
    shouldPause: (topic: string, partition: number) => boolean,
  ): void {
    const current = this.#running();
    const pausedNow = new Set(
      current.paused().flatMap(({ topic, partitions }) => partitions.map((p) => `${topic}\u0000${p}`)),
    );
    for (const [topic, partitions] of Object.entries(assignment)) {
      for (const partition of partitions) {
        const wanted = shouldPause(topic, partition);
        const paused = pausedNow.has(`${topic}\u0000${partition}`);
        if (wanted && !paused) current.pause([{ topic, partitions: [partition] }]);
        if (!wanted && paused) current.resume([{ topic, partitions: [partition] }]);
      }
    }
  }

  logBounds(topic: string): Promise<Map<number, { readonly start: bigint; readonly end: bigint }>> {
    return this.#offsets.read(async (client) => {
      const log = await topicLog(client, topic);
      return new Map(log.map((p) => [p.partition, { start: p.logStart, end: p.highWatermark }]));
    });
  }

  committedOffsets(topic: string): Promise<Map<number, bigint>> {
    return this.#offsets.read((client) => readCommittedOffsets(client, this.#options.groupId, topic));
  }

  recordsAt(topic: string, offsets: ReadonlyMap<number, bigint>): Promise<Map<number, LoggedRecord>> {
    return recordsAt(this.#options.kafka, topic, offsets);
  }

  #running(): Consumer {
    if (this.#consumer === undefined) {
      throw new OncelyError('ONCELY_STOPPING', 'The consumer is not running.');
    }
    return this.#consumer;
  }
}

/**
 * One admin client for offset reads, made on first use and closed with the runner: reading
 * offsets is rare (once per partition per assignment), a connection per read would be wasteful.
 * Held as a promise, so partitions that read at once share one connection instead of each opening
 * one (and all but the last leaking), and closing closes one still connecting.
 */
class OffsetReader {
  readonly #kafka: Kafka;
  #admin: Promise<Admin> | undefined;
  // Reads under way, so that closing waits for them before it closes their connection, and
  // `closed`, so that a read begun after stop() (a rebalance callback still running) cannot open a
  // new admin that nobody would close.
  readonly #reading = new Set<Promise<unknown>>();
  #closed = false;

  constructor(kafka: Kafka) {
    this.#kafka = kafka;
  }

  reopen(): void {
    this.#closed = false;
  }

  read<T>(work: (client: Admin) => Promise<T>): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new OncelyError('ONCELY_STOPPING', 'The consumer is stopping: offsets are not read any more.', {
          retriable: true,
        }),
      );
    }
    const pending = this.#readWithAdmin(work);
    this.#reading.add(pending);
    void pending.then(
      () => this.#reading.delete(pending),
      () => this.#reading.delete(pending),
    );
    return pending;
  }

  async close(): Promise<void> {
    this.#closed = true;
    // A read still under way may be opening a connection to the group coordinator: let it end
    // (briefly) first, or the disconnect below would miss that connection and leak it.
    await Promise.race([Promise.allSettled([...this.#reading]), delay(ADMIN_DRAIN_MS)]);
    const current = this.#admin;
    this.#admin = undefined;
    await current?.then((client) => client.disconnect()).catch(() => undefined);
  }

  async #readWithAdmin<T>(work: (client: Admin) => Promise<T>): Promise<T> {
    const current = (this.#admin ??= this.#connect());
    let client: Admin;
    try {
      client = await current;
    } catch (error) {
      if (this.#admin === current) this.#admin = undefined;
      throw error;
    }
    try {
      return await work(client);
    } catch (error) {
      // A failed read may have left the connection broken: the next read connects anew.
      if (this.#admin === current) {
        this.#admin = undefined;
        await client.disconnect().catch(() => undefined);
      }
      throw error;
    }
  }

  async #connect(): Promise<Admin> {
    const created = this.#kafka.admin();
    try {
      await created.connect();
    } catch (error) {
      await created.disconnect().catch(() => undefined);
      throw error;
    }
    return created;
  }
}

function toPartitionBatch(consumer: Consumer, payload: EachBatchPayload): PartitionBatch {
  const { batch } = payload;
  const { topic, partition } = batch;
  return {
    topic,
    partition,
    records: batch.messages.map((message) => toRecord(topic, partition, message)),
    // Not in kafkajs's types, but set on every batch it makes.
    fetchedOffset: fetchedOffsetOf(batch),
    resolve: (offset) => payload.resolveOffset(offset),
    heartbeat: () => payload.heartbeat(),
    isActive: () => payload.isRunning() && !payload.isStale(),
    seek: (offset) => consumer.seek({ topic, partition, offset }),
    pause: () => consumer.pause([{ topic, partitions: [partition] }]),
  };
}

/** kafkajs sets `fetchedOffset` on every batch (not in its types); the first offset otherwise. */
function fetchedOffsetOf(batch: EachBatchPayload['batch']): string {
  const fetched = (batch as { fetchedOffset?: unknown }).fetchedOffset;
  return typeof fetched === 'string' || typeof fetched === 'number' ? String(fetched) : (batch.firstOffset() ?? '0');
}

/** A kafkajs message as a {@link ConsumedRecord}, free of kafkajs types. */
export function toRecord(topic: string, partition: number, message: KafkaMessage): ConsumedRecord {
  return {
    topic,
    partition,
    offset: message.offset,
    key: message.key ?? null,
    value: message.value ?? null,
    headers: message.headers ?? {},
    timestamp: message.timestamp,
  };
}

/**
 * Subscribing to a topic that does not exist fails with an opaque protocol error on KRaft brokers
 * (or silently creates it with default settings on others): check first and say what to do.
 */
async function assertTopicsExist(kafka: Kafka, topics: readonly string[]): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((topic) => !existing.has(topic));
    if (missing.length > 0) {
      throw new OncelyError(
        'ONCELY_TOPIC_NOT_FOUND',
        `Topic${missing.length > 1 ? 's' : ''} ${missing.map((t) => `"${t}"`).join(', ')} do${missing.length > 1 ? '' : 'es'} not exist on the broker. ` +
          'Create them before starting the consumer (kafka-topics.sh --create, or admin.createTopics()).',
        { context: { topics: missing } },
      );
    }
  } finally {
    await admin.disconnect();
  }
}

function unreachable(timeoutMs: number, lastError: unknown): OncelyError {
  const detail =
    lastError instanceof Error ? `: ${lastError.message}` : ' (kafkajs was still retrying its first connection)';
  return new OncelyError(
    'ONCELY_KAFKA_UNREACHABLE',
    `Could not start the Kafka consumer within ${timeoutMs} ms (startTimeoutMs)${detail}. ` +
      'Check that the brokers in `new Kafka({ brokers })` are running and reachable from here, or raise startTimeoutMs.',
    { cause: lastError, retriable: true, context: { timeoutMs } },
  );
}
