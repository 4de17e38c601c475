import type { KafkaClient, KafkaConsumerSettings } from '../kafka/client.js';
import type pg from 'pg';
import { pino, type Logger } from 'pino';
import { z } from 'zod';

import { registrySchema } from '../metrics/registry.js';
import { invalidOptions, parseOptions } from '../options.js';
import {
  createTransactionBinder,
  type OncelyDatabase,
  poolMax,
  resolvePool,
  type TransactionBinder,
} from '../inbox/database.js';
import type { MetricsOptions } from '../metrics/prometheus.js';
import type { OutboxRelayOptions } from '../outbox/relay.js';
import {
  type AnyHandlerDefinition,
  type BatchHandlerDefinition,
  type HandlerDefinition,
  isHandlerDefinition,
} from './handler.js';
import { type LaneOptions, lanesSchema, type ResolvedLanes, resolveLanes } from './lanes/options.js';
import { type ResolvedRetention, retentionSchema } from '../retention/options.js';
import { DEFAULT_RETRY, type RetryPolicy } from './retry.js';
import type { TracingOptions } from '../tracing/spans.js';

/** Options of `createInboxConsumer()`. Only `kafka`, `db`, `groupId` and `handlers` are required. */
export interface InboxConsumerOptions {
  /** A kafkajs client: `new Kafka({ clientId, brokers })`. */
  readonly kafka: KafkaClient;
  /** A drizzle node-postgres database over a pg Pool: `drizzle(pool, { schema })`. */
  readonly db: OncelyDatabase;
  /** The Kafka consumer group. Message ids are deduplicated per group (see `inboxScope`). */
  readonly groupId: string;
  /**
   * The inbox this consumer claims message ids in (and keeps its dead letters with). Default: the
   * group id. Set it to the old group id when renaming a group (`ledger` → `ledger-v2`), so the
   * renamed group still recognises every event the old one applied instead of applying them again.
   * Offsets stay per group. Everything that decides "was this applied" is keyed by it: inbox rows,
   * dead letters, steps, horizons, replay plans, purges and retention. The consumer records it at
   * start (`oncely.group_scopes`), so `planReplay`, `runReplay`, `purge` and the CLI find it from
   * the group id.
   */
  readonly inboxScope?: string;
  /**
   * One handler per topic: all made with `defineHandler()` (message mode) or all with
   * `defineBatchHandler()` (batch mode); mixing the two is a type error.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly handlers: readonly HandlerDefinition<any>[] | readonly BatchHandlerDefinition<any>[];
  /**
   * `'message'`: one transaction per message. `'batch'`: one transaction (and one claim statement)
   * per chunk of a partition's messages. Default: what the handlers were made for.
   */
  readonly mode?: 'message' | 'batch';
  /**
   * Batch mode only: the most messages in one chunk (bounded by what Kafka delivered). Default 500.
   * Refused in message mode, where it would do nothing.
   */
  readonly batchSize?: number;
  /**
   * Message mode only: consecutive messages of one partition share one transaction, up to this
   * many (each with its own claim and its own handler call), committed together when the fetched
   * batch is done, at this count, or after about 100 ms — one durable commit for the group instead
   * of one per message. When a handler throws, the group is rolled back and the messages before it
   * run again in a new transaction (their handlers are called again: keep external calls in
   * `ctx.step`). `1`: one transaction per message. Default 100.
   */
  readonly maxMessagesPerTransaction?: number;
  /**
   * Partitions processed at once (records of one partition are always processed in order).
   * Needs that many pooled connections plus one: the pool's `max` must be larger. Default 1.
   */
  readonly concurrency?: number;
  /**
   * Message mode only: per-key concurrency inside each partition (G4's exception). `8` or
   * `{ count: 8, key?, maxInFlight? }`: a partition's records are spread over that many lanes by
   * key (the Kafka key by default); one key's records stay in offset order on one lane, and lanes
   * run at once, each in its own transaction on its own pooled connection (commit grouping works
   * inside a lane). Kafka's offset and the resume point in `oncely.offsets` move only to the
   * partition's watermark, the lowest offset not yet recorded. The pool's `max` must exceed
   * `concurrency × count`. Refused in batch mode. Default: none (one lane, offset order).
   */
  readonly lanes?: number | LaneOptions;
  /**
   * Retries of a failing handler. Defaults: 5 attempts, 200 ms initial delay, ×2 per attempt,
   * at most 10 s, ±20 % jitter. Database outages do not use up attempts.
   */
  readonly retry?: Partial<RetryPolicy>;
  /** A pino logger. Default: pino at `ONCELY_LOG_LEVEL` or `info`. */
  readonly logger?: Logger;
  /** Include payload values in failure logs. Default false: payment payloads stay out of logs. */
  readonly logPayloads?: boolean;
  /**
   * Where a group with no committed offset starts: the beginning of the topic (true) or its end.
   * Default true — a new payments consumer must not skip events published before its first start.
   */
  readonly fromBeginning?: boolean;
  /** Further kafkajs consumer settings (sessionTimeout, heartbeatInterval, maxBytesPerPartition, …). */
  readonly consumer?: KafkaConsumerSettings;
  /** Stop gracefully on SIGTERM/SIGINT, then let the signal end the process. Default false. */
  readonly handleSignals?: boolean;
  /**
   * How long one handler attempt may run before it is rolled back and counted as failed
   * (`ctx.signal` aborts; PostgreSQL cancels a statement still running). 0 disables it. Default 30 s.
   */
  readonly handlerTimeoutMs?: number;
  /**
   * Refuse messages without an id of their own (no `messageId()` result, no `message-id` or
   * `idempotency-key` header): dead-letter them as `invalid_message_id` instead of falling back to
   * the Kafka coordinates, which deduplicate redeliveries only. Default false.
   */
  readonly requireMessageId?: boolean;
  /** Dead-letter values larger than this many bytes as `invalid_payload`. Default: no limit. */
  readonly maxPayloadBytes?: number;
  /**
   * When a handler's attempts run out: `'dead-letter'` it and move on (default), or `'pause'` the
   * partition at that message until `consumer.resume(topic, partition)`, for flows where order
   * matters more than progress. Invalid input is always dead-lettered: it can never succeed.
   */
  readonly onExhausted?: 'dead-letter' | 'pause';
  /** Where dead letters go besides `oncely.dead_letters`. */
  readonly deadLetter?: {
    /**
     * Also publish every dead letter to a Kafka topic, on the source record's partition, with the
     * original key, value and headers plus `oncely-*` headers saying where it came from and why.
     * `true`: `<topic>.dlq`; a string: one topic for all; a function: name per source topic.
     * The topic must exist with at least as many partitions as its source. Default: none.
     */
    readonly topic?: boolean | string | ((sourceTopic: string) => string);
  };
  /**
   * Run an outbox relay in this process, started and stopped with the consumer: `true`, or relay
   * settings (`batchSize`, `pollIntervalMs`, …; it uses the consumer's `db`, `kafka` and `logger`).
   * Only one relay per database sends at a time, so running one in every consumer process is safe:
   * the others stand by. `false`: events and dead letters are sent by a relay running elsewhere
   * (`oncely relay`). Default: a relay when `deadLetter.topic` is set (dead letters go through the
   * outbox), none otherwise.
   */
  readonly relay?: boolean | Omit<OutboxRelayOptions, 'db' | 'kafka' | 'logger' | 'afterSend'>;
  /**
   * Prometheus metrics (needs the optional peer `prom-client`): `{ registry: new Registry() }`.
   * Metrics are registered in that registry only; serve it on your `/metrics`. Default: none.
   */
  readonly metrics?: MetricsOptions;
  /**
   * OpenTelemetry spans, one per message (needs the optional peer `@opentelemetry/api`): `true`
   * for the global tracer provider, or `{ tracerProvider }`. Default false.
   */
  readonly tracing?: boolean | TracingOptions;
  /**
   * How long `start()` keeps trying to reach the broker before it rejects with
   * `ONCELY_KAFKA_UNREACHABLE` (the last kafkajs error as its cause). Default 30 000 ms.
   */
  readonly startTimeoutMs?: number;
  /**
   * Purge the inbox in-process, periodically: rows older than `inboxFor` whose offsets Kafka and
   * `oncely.offsets` have both passed, and resolved dead letters older than `deadLettersFor`
   * (see `purge()`). One purge per inbox scope at a time across all members. Durations in milliseconds.
   * Defaults when enabled: `inboxFor` 7 days, `deadLettersFor` 30 days, `every` 1 hour,
   * `batchSize` 5,000. Default `false`: nothing is deleted unless you opt in (or run `oncely purge`).
   */
  readonly retention?:
    | false
    | {
        readonly inboxFor?: number;
        readonly deadLettersFor?: number;
        readonly every?: number;
        readonly batchSize?: number;
      };
}

export interface ResolvedConsumerConfig {
  readonly kafka: KafkaClient;
  readonly db: OncelyDatabase;
  readonly pool: pg.Pool;
  readonly bind: TransactionBinder;
  readonly groupId: string;
  readonly inboxScope: string;
  readonly handlers: ReadonlyMap<string, AnyHandlerDefinition>;
  readonly mode: 'message' | 'batch';
  readonly batchSize: number;
  readonly maxMessagesPerTransaction: number;
  readonly concurrency: number;
  /** Undefined: a partition's records run one after another, in offset order. */
  readonly lanes: ResolvedLanes | undefined;
  readonly retry: RetryPolicy;
  readonly logger: Logger;
  readonly logPayloads: boolean;
  readonly fromBeginning: boolean;
  readonly consumerConfig: KafkaConsumerSettings;
  readonly handleSignals: boolean;
  readonly handlerTimeoutMs: number;
  readonly requireMessageId: boolean;
  readonly maxPayloadBytes: number | undefined;
  readonly onExhausted: 'dead-letter' | 'pause';
  /** The dead-letter topic of each source topic; undefined when none is configured. */
  readonly deadLetterTopicName: ((sourceTopic: string) => string) | undefined;
  /** Settings of the in-process outbox relay; undefined: none runs here. */
  readonly relay: Omit<OutboxRelayOptions, 'db' | 'kafka' | 'logger' | 'afterSend'> | undefined;
  readonly metrics: MetricsOptions | undefined;
  /** Undefined: no tracing. */
  readonly tracing: TracingOptions | true | undefined;
  readonly startTimeoutMs: number;
  /** The in-process purge's settings; undefined when off. */
  readonly retention: ResolvedRetention | undefined;
}

/** Messages per transaction in message mode: see `maxMessagesPerTransaction` and docs/performance.md. */
export const DEFAULT_MAX_MESSAGES_PER_TRANSACTION = 100;

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null;

const retrySchema = z
  .strictObject({
    attempts: z.int('must be a whole number').min(1, 'must be at least 1 (1 = no retries)').max(1000),
    initialDelayMs: z.number().min(0, 'must be 0 or more'),
    maxDelayMs: z.number().min(0, 'must be 0 or more'),
    multiplier: z.number().min(1, 'must be at least 1'),
    jitter: z.number().min(0).max(1, 'must be between 0 and 1'),
  })
  .partial()
  .transform((retry) => ({ ...DEFAULT_RETRY, ...retry }))
  .refine((retry) => retry.maxDelayMs >= retry.initialDelayMs, {
    message: 'maxDelayMs must be at least initialDelayMs',
    path: ['maxDelayMs'],
  });

const optionsSchema = z.strictObject({
  kafka: z.custom<KafkaClient>(
    (v) => isObject(v) && typeof v.consumer === 'function' && typeof v.admin === 'function',
    {
      message: 'expected a kafkajs client: `new Kafka({ clientId, brokers })`',
    },
  ),
  db: z.custom<OncelyDatabase>((v) => isObject(v), {
    message: 'expected a drizzle node-postgres database: `drizzle(new Pool({ connectionString }), { schema })`',
  }),
  groupId: z
    .string('expected the Kafka consumer group id as a string')
    .min(1, 'must not be empty')
    .max(255, 'must be at most 255 characters'),
  inboxScope: z
    .string('expected the inbox scope as a string (the group id whose inbox to share)')
    .min(1, 'must not be empty')
    .max(255, 'must be at most 255 characters')
    .optional(),
  handlers: z
    .array(
      z.custom<AnyHandlerDefinition>(isHandlerDefinition, {
        message: 'each handler must be made with defineHandler() or defineBatchHandler()',
      }),
      { error: 'expected an array of handlers made with defineHandler()' },
    )
    .min(1, 'give at least one handler: handlers: [defineHandler({ topic, handle })]'),
  mode: z.enum(['message', 'batch'], "must be 'message' or 'batch'").optional(),
  batchSize: z.int('must be a whole number').min(1, 'must be at least 1').max(100_000).default(500),
  maxMessagesPerTransaction: z
    .int('must be a whole number')
    .min(1, 'must be at least 1 (1: one transaction per message)')
    .max(10_000)
    .default(DEFAULT_MAX_MESSAGES_PER_TRANSACTION),
  concurrency: z.int('must be a whole number').min(1, 'must be at least 1').max(1000).default(1),
  lanes: lanesSchema,
  retry: retrySchema.default(DEFAULT_RETRY),
  logger: z
    .custom<Logger>((v) => isObject(v) && typeof v.child === 'function' && typeof v.info === 'function', {
      message: 'expected a pino logger: `pino()`',
    })
    .optional(),
  logPayloads: z.boolean().default(false),
  fromBeginning: z.boolean().default(true),
  consumer: z
    .custom<KafkaConsumerSettings>((v) => isObject(v) && !('groupId' in v), {
      message: 'expected kafkajs consumer settings without groupId (set groupId at the top level)',
    })
    .default({}),
  handleSignals: z.boolean().default(false),
  handlerTimeoutMs: z
    .int('must be a whole number of milliseconds')
    .min(0, 'must be 0 (no timeout) or more')
    .default(30_000),
  requireMessageId: z.boolean().default(false),
  maxPayloadBytes: z.int('must be a whole number of bytes').min(1, 'must be at least 1').optional(),
  onExhausted: z.enum(['dead-letter', 'pause'], "must be 'dead-letter' or 'pause'").default('dead-letter'),
  deadLetter: z
    .strictObject({
      topic: z
        .union(
          [z.boolean(), z.string().min(1), z.custom<(sourceTopic: string) => string>((v) => typeof v === 'function')],
          {
            error: 'must be true (`<topic>.dlq`), a topic name, or a function (sourceTopic) => name',
          },
        )
        .optional(),
    })
    .default({}),
  relay: z
    .union([z.boolean(), z.custom<Omit<OutboxRelayOptions, 'db' | 'kafka' | 'logger' | 'afterSend'>>(isObject)], {
      error: 'must be true, false, or relay settings such as { pollIntervalMs: 1000 }',
    })
    .optional(),
  metrics: z
    .strictObject({
      registry: registrySchema,
      refreshIntervalMs: z.int('must be a whole number of milliseconds').min(0, 'must be 0 or more').optional(),
      lag: z.boolean().optional(),
    })
    .optional(),
  tracing: z
    .union(
      [
        z.boolean(),
        z.strictObject({
          tracerProvider: z
            .custom<NonNullable<TracingOptions['tracerProvider']>>(
              (v) => isObject(v) && typeof v.getTracer === 'function',
              { message: 'expected an OpenTelemetry TracerProvider' },
            )
            .optional(),
        }),
      ],
      { error: 'must be true, false or { tracerProvider }' },
    )
    .default(false),
  startTimeoutMs: z.int('must be a whole number of milliseconds').min(1, 'must be at least 1').default(30_000),
  retention: retentionSchema,
});

/**
 * Validates the options once, at construction, and resolves every default. Throws an
 * `OncelyError` with code `ONCELY_CONFIG` whose message names each bad option and the fix.
 */
export function resolveConsumerConfig(options: InboxConsumerOptions): ResolvedConsumerConfig {
  const o = parseOptions(optionsSchema, options);

  const mode = o.mode ?? o.handlers[0]?.kind ?? 'message';
  if (mode === 'message' && options.batchSize !== undefined) {
    throw invalidOptions([
      {
        path: ['batchSize'],
        message:
          'batchSize applies to batch mode only (handlers made with defineBatchHandler()); remove it, ' +
          'or switch the handlers to defineBatchHandler() to apply a chunk per transaction',
      },
    ]);
  }
  if (mode === 'batch' && options.maxMessagesPerTransaction !== undefined) {
    throw invalidOptions([
      {
        path: ['maxMessagesPerTransaction'],
        message:
          'maxMessagesPerTransaction applies to message mode only; in batch mode a chunk is one transaction: set batchSize instead',
      },
    ]);
  }
  const handlers = handlersByTopic(o.handlers, mode, o.mode);

  const lanes = resolveLanes(o.lanes);
  if (mode === 'batch' && lanes !== undefined) {
    throw invalidOptions([
      {
        path: ['lanes'],
        message:
          'lanes applies to message mode only: a batch handler gets a chunk of a partition in one call and one transaction. ' +
          'Remove lanes, or use defineHandler() handlers, which lanes run by key',
      },
    ]);
  }
  const { pool } = resolvePool(o.db);
  checkPoolSize(poolMax(pool), o.concurrency, lanes);

  const logger = (o.logger ?? pino({ name: 'oncely', level: process.env.ONCELY_LOG_LEVEL ?? 'info' })).child({
    groupId: o.groupId,
  });

  return {
    kafka: o.kafka,
    db: o.db,
    pool,
    bind: createTransactionBinder(o.db),
    groupId: o.groupId,
    inboxScope: o.inboxScope ?? o.groupId,
    handlers,
    mode,
    batchSize: o.batchSize,
    maxMessagesPerTransaction: o.maxMessagesPerTransaction,
    concurrency: o.concurrency,
    lanes,
    retry: o.retry,
    logger,
    logPayloads: o.logPayloads,
    fromBeginning: o.fromBeginning,
    consumerConfig: o.consumer,
    handleSignals: o.handleSignals,
    handlerTimeoutMs: o.handlerTimeoutMs,
    requireMessageId: o.requireMessageId,
    maxPayloadBytes: o.maxPayloadBytes,
    onExhausted: o.onExhausted,
    deadLetterTopicName: deadLetterNaming(o.deadLetter.topic),
    // Dead letters go through the outbox: a consumer with a dead-letter topic needs a relay, so it
    // runs one unless told that one runs elsewhere (relay: false).
    relay:
      o.relay === false
        ? undefined
        : o.relay === true
          ? {}
          : o.relay !== undefined
            ? o.relay
            : deadLetterNaming(o.deadLetter.topic) === undefined
              ? undefined
              : {},
    metrics: o.metrics,
    tracing: o.tracing === false ? undefined : o.tracing,
    startTimeoutMs: o.startTimeoutMs,
    retention: o.retention,
  };
}

/** The handlers by topic: every one of the consumer's mode, one per topic. */
function handlersByTopic(
  list: readonly AnyHandlerDefinition[],
  mode: 'message' | 'batch',
  chosenMode: 'message' | 'batch' | undefined,
): Map<string, AnyHandlerDefinition> {
  const handlers = new Map<string, AnyHandlerDefinition>();
  for (const handler of list) {
    if (handler.kind !== mode) {
      const define = handler.kind === 'batch' ? 'defineBatchHandler()' : 'defineHandler()';
      throw invalidOptions([
        {
          path: ['handlers'],
          message:
            `the handler for topic "${handler.topic}" was made with ${define}, but the consumer is in ${mode} mode; ` +
            `use ${mode === 'batch' ? 'defineBatchHandler()' : 'defineHandler()'} for every handler of a ${mode}-mode consumer` +
            (chosenMode === undefined ? '' : ` (or set mode: '${handler.kind}')`),
        },
      ]);
    }
    if (handlers.has(handler.topic)) {
      throw invalidOptions([
        { path: ['handlers'], message: `two handlers for topic "${handler.topic}"; give one handler per topic` },
      ]);
    }
    handlers.set(handler.topic, handler);
  }
  return handlers;
}

/** A pool too small for the partitions (and lanes) held at once would stall: refused at creation. */
function checkPoolSize(max: number, concurrency: number, lanes: ResolvedLanes | undefined): void {
  if (lanes !== undefined && max <= concurrency * lanes.count) {
    const needed = concurrency * lanes.count;
    throw invalidOptions([
      {
        path: ['lanes'],
        message:
          `${lanes.count} lanes on ${concurrency} partition(s) at once hold up to ${needed} connections, but the pool's max is ${max}. ` +
          `Create the pool with \`new Pool({ max: ${needed + 2} })\` or lower lanes or concurrency.`,
      },
    ]);
  }
  if (max <= concurrency) {
    throw invalidOptions([
      {
        path: ['concurrency'],
        message:
          `concurrency ${concurrency} needs a pool with more than ${concurrency} connections, but the pool's max is ${max}. ` +
          `Create the pool with \`new Pool({ max: ${concurrency + 2} })\` or lower concurrency.`,
      },
    ]);
  }
}

function deadLetterNaming(topic: boolean | string | ((sourceTopic: string) => string) | undefined) {
  if (topic === undefined || topic === false) return undefined;
  if (topic === true) return (sourceTopic: string) => `${sourceTopic}.dlq`;
  if (typeof topic === 'string') return () => topic;
  return topic;
}
