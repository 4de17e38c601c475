/**
 * oncely: effectively-once Kafka consumers on PostgreSQL.
 *
 * The public surface is this file's explicit list; nothing else is part of the contract.
 */
export { createInboxConsumer, type InboxConsumer, type PausedPartition } from './pipeline/consumer.js';
export {
  discardDeadLetter,
  getDeadLetter,
  listDeadLetters,
  retryDeadLetter,
  retryDeadLetters,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterSummary,
  type ResolveResult,
  type RetryOptions,
} from './replay/dead-letters.js';
export { DEAD_LETTER_HEADERS } from './kafka/dead-letter-topic.js';
export {
  defineBatchHandler,
  defineHandler,
  type AnyHandlerDefinition,
  type BatchContext,
  type BatchEvent,
  type BatchHandlerDefinition,
  type BatchHandlerOptions,
  type BatchStepFunction,
  type Decoder,
  type HandlerContext,
  type HandlerDefinition,
  type HandlerOptions,
  type MessageInfo,
} from './pipeline/handler.js';
export type { InboxConsumerOptions } from './pipeline/options.js';
export { METRIC_NAMES, type MetricsOptions } from './metrics/prometheus.js';
export type { RelayMetricsOptions } from './metrics/outbox.js';
export type { IdempotencyMetricsOptions, IdempotencyOutcome } from './metrics/idempotency.js';
export { SPAN_ATTRIBUTES, type TracingOptions } from './tracing/spans.js';
export type {
  ConsumerEventListener,
  ConsumerEventName,
  ConsumerEvents,
  DuplicateClass,
  MessageCoordinates,
  OutcomeDetails,
} from './events/index.js';
export { DEFAULT_RETRY, backoffDelay, type RetryPolicy } from './pipeline/retry.js';
export {
  ERROR_CODES,
  NonRetriableError,
  OncelyError,
  hasErrorCode,
  isOncelyError,
  type ErrorContext,
  type OncelyErrorCode,
} from './errors.js';
export { migrate, migrationStatus, type MigrateResult, type MigrationStatus } from './migrate/migrate.js';
export type { DatabaseInput, OncelyDatabase, OncelyTransaction, Register } from './inbox/database.js';
export {
  DEAD_LETTER_REASONS,
  type DeadLetterReason,
  type StoredError,
  type StoredHeader,
} from './inbox/dead-letters.js';
export { deadLettersTable, groupScopesTable, inboxTable, offsetsTable, oncelySchema } from './inbox/tables.js';
export {
  IDEMPOTENCY_KEY_HEADER,
  MAX_MESSAGE_ID_LENGTH,
  MESSAGE_ID_HEADER,
  deriveMessageId,
  payloadFingerprint,
  type MessageIdResult,
  type MessageIdSource,
  type RecordHeaders,
} from './kafka/message-identity.js';
export {
  createStepRunner,
  stepIdempotencyKey,
  compensationIdempotencyKey,
  type Compensate,
  type CompensateOptions,
  type CompensationContext,
  type CompensationReport,
  type FailedCompensation,
  type StepCallContext,
  type StepFunction,
  type StepOptions,
  type StepRunner,
  type StepRunnerOptions,
} from './steps/runner.js';
export { purgeSteps, type PurgeStepsOptions } from './steps/purge.js';
export { stepsTable } from './steps/tables.js';
export {
  CAUSATION_ID_HEADER,
  TRACEPARENT_HEADER,
  publish,
  type OutboxMessage,
  type PublishOptions,
  type PublishTarget,
  type PublishedEvent,
} from './outbox/publish.js';
export type { HeaderValue as OutboxHeaderValue } from './inbox/headers.js';
export { createOutboxRelay, type OutboxRelay, type OutboxRelayOptions } from './outbox/relay.js';
export {
  DEFAULT_OUTBOX_RETENTION_MS,
  OUTBOX_STATUSES,
  discardParked,
  listOutbox,
  purgeSentOutbox,
  retryParked,
  type OutboxEntry,
  type OutboxFilter,
  type OutboxStatus,
  type PurgeSentOptions,
} from './outbox/store.js';
export { outboxTable } from './outbox/tables.js';
export {
  DEFAULT_STORED_RESPONSE_HEADERS,
  IDEMPOTENCY_KEY_REQUEST_HEADER,
  IDEMPOTENT_REPLAYED_HEADER,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  idempotent,
  type IdempotentContext,
  type IdempotentHandler,
  type IdempotentOptions,
} from './http/idempotent.js';
export {
  canonicalJson,
  defaultFingerprint,
  InvalidJsonBodyError,
  type Fingerprint,
  type FingerprintInput,
} from './http/fingerprint.js';
export { IDEMPOTENCY_PROBLEMS, type IdempotencyProblem } from './http/problem.js';
export { type AdmissionOptions, type AdmissionStatus, poolReadiness, type PoolReadiness } from './http/admission.js';
export type { PoolUsage } from './inbox/pool.js';
export { writeClientErrorProblem } from './http/framework-errors.js';
export { purgeExpiredIdempotencyKeys, type PurgeIdempotencyKeysOptions } from './http/store.js';
export { idempotencyKeysTable, type StoredResponseHeader } from './http/tables.js';
export {
  resetOffsets,
  showOffsets,
  type OffsetsVerdict,
  type PartitionOffsets,
  type ResetOffsetsOptions,
  type ResetResult,
  type ShowOffsetsOptions,
} from './replay/offsets.js';
export {
  planReplay,
  type PartitionPlan,
  type PlanReplayOptions,
  type RangeBound,
  type ReplayPlan,
} from './replay/plan.js';
export { formatReplayPlan } from './cli/replay-format.js';
export { runReplay, type ReplayRunResult, type RunReplayOptions } from './replay/run.js';
export { replayStatus, type ReplayProgress } from './replay/status.js';
export { inboxHorizonsTable, replaysTable } from './replay/tables.js';
export { purge, type ExtraPurger, type PurgeOptions, type PurgeResult } from './retention/purge.js';
