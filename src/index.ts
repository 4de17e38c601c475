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
export type {
  ConsumerEventListener,
  ConsumerEventName,
  ConsumerEvents,
  DuplicateClass,
  MessageCoordinates,
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
export { formatReplayPlan } from './replay/format.js';
export { runReplay, type ReplayRunResult, type RunReplayOptions } from './replay/run.js';
export { replayStatus, type ReplayProgress } from './replay/status.js';
export { inboxHorizonsTable, replaysTable } from './replay/tables.js';
export { purge, type ExtraPurger, type PurgeOptions, type PurgeResult } from './retention/purge.js';
