import { hasErrorCode } from '../errors.js';

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
 * - `transient`: the database, not the message, failed (connection lost, serialization failure,
 *   deadlock, too many connections). Retried for as long as it takes, without using up the
 *   message's attempts: a database outage must not dead-letter good messages.
 * - `non_retriable`: retrying cannot help (`NonRetriableError`, validation errors). Dead-lettered now.
 * - `retriable`: anything else. Retried per the policy, then dead-lettered.
 */
export type FailureKind = 'transient' | 'non_retriable' | 'retriable';

/** SQLSTATEs that say "try the same transaction again". */
const TRANSIENT_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '53300', // too_many_connections
  '55P03', // lock_not_available
  '57P01', // admin_shutdown (pg_terminate_backend)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
]);

export interface FailureFacts {
  readonly error: unknown;
  /** The failure came from the user's handler (as opposed to oncely's own statements). */
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
  if (sqlState !== undefined && (TRANSIENT_SQLSTATES.has(sqlState) || sqlState.startsWith('08'))) return 'transient';
  // ONCELY_CONFIG from inside a handler (a step name used twice, a step result JSON cannot hold)
  // is a bug in the handler's code: every retry would fail the same way.
  if (
    chain.some(
      (e) => hasErrorCode(e, 'ONCELY_NON_RETRIABLE') || hasErrorCode(e, 'ONCELY_CONFIG') || isValidationError(e),
    )
  )
    return 'non_retriable';
  // A COMMIT turned into ROLLBACK by an error the handler swallowed: the handler's doing.
  if (hasErrorCode(error, 'ONCELY_COMMIT_FAILED')) return 'retriable';
  if (!inHandler) {
    // oncely's own statements failed: a connection that could not be made, or a statement that
    // failed for a reason of the database's (disk full, a dropped table). Never the message's fault.
    return 'transient';
  }
  return 'retriable';
}

/** `error` and its causes, outermost first (at most 6 deep). */
function causeChain(error: unknown): unknown[] {
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
