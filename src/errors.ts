/**
 * Every error oncely raises is an {@link OncelyError} with a stable string `code`. Codes are part
 * of the public contract (docs/errors.md lists them); messages say what happened and how to fix it.
 *
 * Error-ness is checked by a brand, never with `instanceof`: two copies of oncely can be installed
 * in one application (a library and the app depending on different versions), and an error made by
 * one copy must still be recognised by the other.
 */

export const ERROR_CODES = [
  /** An option passed to oncely is invalid; the message names the option and the fix. */
  'ONCELY_CONFIG',
  /** The `oncely` schema is missing or older than this version of oncely needs. */
  'ONCELY_NOT_MIGRATED',
  /** A migration file failed to apply; nothing of that file was kept. */
  'ONCELY_MIGRATION_FAILED',
  /** A handler's topic does not exist on the broker. */
  'ONCELY_TOPIC_NOT_FOUND',
  /** Neither configured servers, Docker, nor local binaries can provide Kafka or PostgreSQL. */
  'ONCELY_DEV_SERVICES_UNAVAILABLE',
  /** A dev service was found but failed to start or stop. */
  'ONCELY_DEV_SERVICES_FAILED',
  /** Thrown by a handler to dead-letter a message at once, without retries. */
  'ONCELY_NON_RETRIABLE',
  /** A message's id is empty, longer than 255 characters, or not valid UTF-8. */
  'ONCELY_INVALID_MESSAGE_ID',
  /** A message's value could not be decoded or did not match the handler's schema. */
  'ONCELY_INVALID_PAYLOAD',
  /** A message id was seen before with a different payload (a producer bug). */
  'ONCELY_KEY_REUSE',
  /**
   * No longer raised: a use of `ctx.tx` after its attempt ended is `ONCELY_ATTEMPT_ENDED`. Kept so
   * that code checking for it still compiles.
   */
  'ONCELY_TRANSACTION_CLOSED',
  /**
   * A member of a handler's ctx (`tx`, `publish`, `step`) was used after its attempt had ended
   * (returned, failed or timed out): refused, so nothing of an ended attempt can commit.
   */
  'ONCELY_ATTEMPT_ENDED',
  /**
   * A handler ended (or began) the transaction oncely gave it (`COMMIT`, `ROLLBACK`, `BEGIN` through
   * ctx.tx). Refused: the message is dead-lettered, not retried — the handler is at fault.
   */
  'ONCELY_TX_CONTROL',
  /** A handler attempt ran past `handlerTimeoutMs` and was rolled back. */
  'ONCELY_HANDLER_TIMEOUT',
  /** PostgreSQL rolled the transaction back at COMMIT because a statement in it had failed. */
  'ONCELY_COMMIT_FAILED',
  /** The consumer is stopping; in-flight work was abandoned and will be redelivered. */
  'ONCELY_STOPPING',
  /**
   * A partition's resume point in `oncely.offsets` lies outside the log (topic re-created, log
   * truncated, messages deleted before they were processed): the partition paused instead of skipping.
   */
  'ONCELY_OFFSETS_MISMATCH',
  /** An event passed to `publish()` / `ctx.publish()` is invalid (topic, value, id or headers). */
  'ONCELY_INVALID_EVENT',
  /** `start()` could not reach the Kafka broker within `startTimeoutMs`; the kafkajs error is the cause. */
  'ONCELY_KAFKA_UNREACHABLE',
  /** The `oncely` schema was migrated by a newer oncely than this one; upgrade oncely. */
  'ONCELY_SCHEMA_TOO_NEW',
  /** Offsets cannot be moved while the consumer group has live members; the message names them. */
  'ONCELY_GROUP_ACTIVE',
  /** An offset given to `offsets reset` or `replay` lies outside the partition's log. */
  'ONCELY_OFFSET_OUT_OF_RANGE',
  /** Kafka's offsets were moved but the database's were not; run the same reset again. */
  'ONCELY_OFFSETS_RESET_INCOMPLETE',
  /** A replay was refused: messages in its range may have lost their inbox rows (use force). */
  'ONCELY_REPLAY_AT_RISK',
  /** Reading a replay's range from Kafka failed or timed out. */
  'ONCELY_REPLAY_READ_FAILED',
  /** `start()` could not reach PostgreSQL within `startTimeoutMs`; the pg error is the cause. */
  'ONCELY_DATABASE_UNREACHABLE',
  /** PostgreSQL refused what `start()` needs (credentials, privileges, a missing database); the pg error is the cause. */
  'ONCELY_DATABASE_ERROR',
  /** The Kafka broker refused what `start()` needs (authentication, authorisation, protocol); the kafkajs error is the cause. */
  'ONCELY_KAFKA_ERROR',
  /**
   * No pooled connection within its bound for work that already holds one (a step record) or for an
   * HTTP request's turn: the pool is too small for the load; retriable.
   */
  'ONCELY_POOL_EXHAUSTED',
] as const;

export type OncelyErrorCode = (typeof ERROR_CODES)[number];

const brand: unique symbol = Symbol.for('oncely.error');

/** Where in the stream an error happened; every field is optional. */
export interface ErrorContext {
  readonly groupId?: string;
  readonly topic?: string;
  readonly partition?: number;
  readonly offset?: string;
  readonly messageId?: string;
  readonly option?: string;
  readonly [key: string]: unknown;
}

export interface OncelyErrorOptions {
  readonly cause?: unknown;
  /** Whether retrying the same operation can succeed. Defaults to false. */
  readonly retriable?: boolean;
  readonly context?: ErrorContext;
}

export class OncelyError extends Error {
  readonly [brand] = true;
  // Plain enumerable fields, so that pino's error serializer logs them whole.
  readonly code: OncelyErrorCode;
  readonly retriable: boolean;
  readonly context: ErrorContext;

  constructor(code: OncelyErrorCode, message: string, options: OncelyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'OncelyError';
    this.code = code;
    this.retriable = options.retriable ?? false;
    this.context = options.context ?? {};
  }
}

/**
 * Throw this from a handler when retrying cannot help (a permanently declined card, an account
 * that does not exist). The message is dead-lettered at once with reason `handler_failed`.
 */
export class NonRetriableError extends OncelyError {
  constructor(message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('ONCELY_NON_RETRIABLE', message, { ...options, retriable: false });
    this.name = 'NonRetriableError';
  }
}

/** True for any error made by any installed copy of oncely. */
export function isOncelyError(error: unknown): error is OncelyError {
  return typeof error === 'object' && error !== null && (error as { [brand]?: unknown })[brand] === true;
}

/** True when `error` is an {@link OncelyError} with the given code. */
export function hasErrorCode(error: unknown, code: OncelyErrorCode): error is OncelyError {
  return isOncelyError(error) && error.code === code;
}

/** Shorthand for the one error users see most: an invalid option, with the fix. */
export function configError(option: string, message: string): OncelyError {
  return new OncelyError('ONCELY_CONFIG', `Invalid option \`${option}\`: ${message}`, {
    context: { option },
  });
}
