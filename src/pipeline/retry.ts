import { isOncelyError } from '../errors.js';
import { ConnectionLostError } from '../inbox/transaction.js';

/** How failed handler attempts are retried. Every field has a default; see `DEFAULT_RETRY`. */
export interface RetryPolicy {
  /** Handler attempts before the message is dead-lettered (1 = no retry). */
  readonly attempts: number;
  /** Delay before the second attempt. */
  readonly initialDelayMs: number;
  /** No delay is longer than this. */
  readonly maxDelayMs: number;
  /** Growth of the delay per failed attempt. */
  readonly multiplier: number;
  /** Spread around the delay, 0…1: 0.2 gives ±20 %. */
  readonly jitter: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 5,
  initialDelayMs: 200,
  maxDelayMs: 10_000,
  multiplier: 2,
  jitter: 0.2,
};

/**
 * The wait after `failures` failed attempts (1 = after the first failure):
 *
 *   base  = min(maxDelayMs, initialDelayMs × multiplier^(failures − 1))
 *   delay = min(maxDelayMs, base × (1 − jitter + 2 × jitter × random))
 *
 * Exponential so a struggling dependency is not hammered; jittered so the partitions that failed
 * together do not retry in lockstep.
 */
export function backoffDelay(policy: RetryPolicy, failures: number, random: () => number = Math.random): number {
  const exponent = Math.max(0, failures - 1);
  const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.multiplier ** exponent);
  const spread = 1 - policy.jitter + 2 * policy.jitter * random();
  return Math.round(Math.min(policy.maxDelayMs, base * spread));
}

/**
 * - `transient`: the database, not the message, failed: the connection was lost or could not be
 *   made, or the server is shutting down, out of resources or failing I/O. Retried for as long as
 *   it takes, without using up the message's attempts: an outage must not dead-letter good messages.
 * - `contention`: a serialization failure, a deadlock or a lock not available. Usually another
 *   transaction's doing, so retried without using up attempts — but a handler can cause them on its
 *   own every time, so only up to {@link MAX_CONTENTION_RETRIES} per message; then they count.
 * - `non_retriable`: retrying cannot help, as the error itself says: an `OncelyError` with
 *   `retriable: false` (`NonRetriableError`, a step misused, an event `ctx.publish` cannot write), a
 *   Kafka protocol error kafkajs marks not retriable (a record over the broker's size limit, a
 *   topic not authorised), a validation error. Dead-lettered now.
 * - `retriable`: anything else — a handler that throws, a constraint that fails (also at COMMIT),
 *   a statement of oncely's that the message's content makes fail. The message's fault until
 *   proven otherwise: retried per the policy, then dead-lettered. Never retried without bound.
 */
export type FailureKind = 'transient' | 'contention' | 'non_retriable' | 'retriable';

/** Contention failures a message may cause before they start using up its attempts. */
export const MAX_CONTENTION_RETRIES = 20;

/** SQLSTATEs of a transaction that lost to another one: try the same transaction again. */
const CONTENTION_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
]);

/** SQLSTATEs (and classes) that say the server, not the statement, is the problem. */
const OUTAGE_SQLSTATES = new Set([
  '57P01', // admin_shutdown (pg_terminate_backend)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '57P05', // idle_session_timeout
]);
const OUTAGE_SQLSTATE_CLASSES = [
  '08', // connection exception
  '53', // insufficient resources: disk full, out of memory, too many connections
  '58', // system error: I/O
];

/** Errors of Node's sockets and of pg's connection handling: no SQLSTATE, the connection is gone. */
const CONNECTION_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
]);
const CONNECTION_ERROR_MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection ended|Client was closed/i;

export interface FailureFacts {
  readonly error: unknown;
  /**
   * The failure came from the user's handler. A socket error there is the handler's own call
   * failing (a payment provider down), not the database: only `connectionLost` says that.
   */
  readonly inHandler: boolean;
  /** The connection holding the transaction reported an error or failed to roll back. */
  readonly connectionLost: boolean;
}

export function classifyFailure({ error, inHandler, connectionLost }: FailureFacts): FailureKind {
  if (connectionLost) return 'transient';
  // drizzle wraps a failed query in DrizzleQueryError with the pg error as its cause: look through.
  const chain = causeChain(error);
  const pgError = chain.find(isPgError) as { code?: unknown } | undefined;
  const sqlState = typeof pgError?.code === 'string' ? pgError.code : undefined;
  if (sqlState !== undefined) {
    if (OUTAGE_SQLSTATES.has(sqlState) || OUTAGE_SQLSTATE_CLASSES.some((c) => sqlState.startsWith(c))) {
      return 'transient';
    }
    if (CONTENTION_SQLSTATES.has(sqlState)) return 'contention';
  } else if (!inHandler && chain.some(isConnectionError)) {
    return 'transient';
  }
  // Retriability is data on the error: the outermost error that states it decides (a user's error
  // wrapping a NonRetriableError is as hopeless as the NonRetriableError itself).
  for (const e of chain) {
    if (isValidationError(e)) return 'non_retriable';
    if (isOncelyError(e)) return e.retriable ? 'retriable' : 'non_retriable';
    if (isKafkaProtocolError(e)) return e.retriable ? 'retriable' : 'non_retriable';
  }
  return 'retriable';
}

/**
 * A Kafka protocol error as kafkajs makes them (any copy of kafkajs): the broker's error `type`
 * and kafkajs's `retriable` flag from the protocol's error table. Only these flags are read:
 * kafkajs's other errors say `retriable: false` when its own retries ran out
 * (`KafkaJSNumberOfRetriesExceeded`), which says nothing about a later attempt; their cause is read.
 */
export function isKafkaProtocolError(error: unknown): error is { type: string; retriable: boolean } {
  if (typeof error !== 'object' || error === null) return false;
  const { name, type, retriable } = error as { name?: unknown; type?: unknown; retriable?: unknown };
  return (
    typeof name === 'string' && name.startsWith('KafkaJS') && typeof type === 'string' && typeof retriable === 'boolean'
  );
}

/** A socket or pool error of pg's: the database could not be reached, whatever the message. */
function isConnectionError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null || isPgError(error)) return false;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && CONNECTION_ERROR_CODES.has(code)) return true;
  return typeof message === 'string' && CONNECTION_ERROR_MESSAGES.test(message);
}

/** `error` and its causes, outermost first (at most 6 deep). */
export function causeChain(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let current = error; current !== undefined && current !== null && chain.length < 6;) {
    chain.push(current);
    current = (current as { cause?: unknown }).cause;
  }
  return chain;
}

/** zod's error (any copy of zod): its name and its issues array. */
export function isValidationError(error: unknown): error is { issues: unknown[] } {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as { name?: unknown }).name === 'ZodError' &&
    Array.isArray((error as { issues?: unknown }).issues)
  );
}

/** A server error from pg (a DatabaseError): it carries a SQLSTATE `code` and a `severity`. */
function isPgError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && 'severity' in error && 'code' in error;
}

/** A failure of the user's handler (as opposed to one of oncely's own statements). */
export class HandlerFailure extends Error {
  constructor(readonly error: unknown) {
    super('the handler failed', { cause: error });
  }
}

/**
 * What made an attempt fail (unwrapped from {@link HandlerFailure} and {@link ConnectionLostError})
 * and how to treat it: any failure on a connection that died is the database's, not the message's.
 */
export function classifyAttemptFailure(failure: unknown): { readonly error: unknown; readonly kind: FailureKind } {
  const connectionLost = failure instanceof ConnectionLostError;
  const inner = connectionLost ? failure.cause : failure;
  const handlerFailure = inner instanceof HandlerFailure ? inner : undefined;
  const error = handlerFailure !== undefined ? handlerFailure.error : inner;
  const kind = classifyFailure({ error, inHandler: handlerFailure !== undefined, connectionLost });
  return { error, kind };
}

/**
 * Counts an attempt's failures by kind and says how long to wait before the next try, or that
 * the message's attempts are used up. Outages never use up attempts; contention does only past
 * {@link MAX_CONTENTION_RETRIES}, so a handler that deadlocks with itself still ends.
 */
export class FailureBudget {
  #outages = 0;
  #contention = 0;
  attempts = 0;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly attemptBudget: number = policy.attempts,
  ) {}

  /** `retry` with a delay (and whether an attempt was used), or `exhausted`. */
  next(
    kind: FailureKind,
  ): { readonly retry: true; readonly delayMs: number; readonly counted: boolean } | { readonly retry: false } {
    if (kind === 'transient') {
      this.#outages += 1;
      return { retry: true, delayMs: backoffDelay(this.policy, this.#outages), counted: false };
    }
    if (kind === 'contention' && this.#contention < MAX_CONTENTION_RETRIES) {
      this.#contention += 1;
      return { retry: true, delayMs: backoffDelay(this.policy, Math.min(this.#contention, 4)), counted: false };
    }
    this.attempts += 1;
    if (kind === 'non_retriable' || this.attempts >= this.attemptBudget) return { retry: false };
    return { retry: true, delayMs: backoffDelay(this.policy, this.attempts), counted: true };
  }
}
