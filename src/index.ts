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
} from './pipeline/dead-letter-admin.js';
export { DEAD_LETTER_HEADERS } from './kafka/dead-letter-topic.js';
export {
  defineBatchHandler,
  defineHandler,
  type AnyHandlerDefinition,
  type BatchContext,
  type BatchEvent,
  type BatchHandlerDefinition,
  type BatchHandlerOptions,
  type Decoder,
  type HandlerContext,
  type HandlerDefinition,
  type HandlerOptions,
  type MessageInfo,
} from './pipeline/handler.js';
export type { InboxConsumerOptions } from './config.js';
export { METRIC_NAMES, type MetricsOptions } from './metrics/prometheus.js';
export { SPAN_ATTRIBUTES, type TracingOptions } from './tracing/spans.js';
export type {
  ConsumerEventListener,
  ConsumerEventName,
  ConsumerEvents,
  DuplicateClass,
  MessageCoordinates,
  OutcomeDetails,
} from './pipeline/events.js';
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
export { deadLettersTable, inboxTable, offsetsTable, oncelySchema } from './inbox/tables.js';
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
