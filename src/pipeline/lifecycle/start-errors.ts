/**
 * What `start()` rejects with: an {@link OncelyError} with a code of its own for every failure of
 * kafkajs or pg, the original error as `cause` and `retriable` telling whether calling `start()`
 * again may succeed. Errors are recognised by shape (any copy of kafkajs or pg), never imported.
 */
import { isOncelyError, OncelyError, type ErrorContext } from '../../errors.js';
import { causeChain, classifyFailure, isKafkaProtocolError } from '../retry.js';

/** kafkajs errors that mean the broker could not be reached (not that it refused). */
const KAFKA_CONNECTION_ERRORS = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound',
]);

/** How to fix what PostgreSQL refused, by SQLSTATE class (or code). */
function databaseFix(sqlState: string | undefined): string {
  if (sqlState === undefined) return 'Check `DATABASE_URL` (or the pool you passed) and the server.';
  if (sqlState === '3D000') return 'The database does not exist: check the database name in `DATABASE_URL`.';
  if (sqlState.startsWith('28')) return 'Check the user name and password in `DATABASE_URL` and pg_hba.conf.';
  if (sqlState === '42501') {
    return 'The database user lacks a privilege: grant it usage of schema `oncely` and its tables (see "Tables").';
  }
  return 'See the PostgreSQL error (the cause) for what to fix.';
}

/**
 * Wraps an error `start()` is about to reject with. OncelyErrors pass through unchanged, and so do
 * errors that are neither kafkajs's nor pg's (a bug is better seen as itself).
 */
export function startError(error: unknown, context: ErrorContext = {}): unknown {
  if (isOncelyError(error)) return error;
  const chain = causeChain(error);
  const kafka = chain.find(isKafkaJsError);
  if (kafka !== undefined) {
    const unreachable = chain.some((e) => isKafkaJsError(e) && KAFKA_CONNECTION_ERRORS.has(e.name));
    if (unreachable) {
      return new OncelyError(
        'ONCELY_KAFKA_UNREACHABLE',
        `Could not reach the Kafka broker while starting (${kafka.name}: ${kafka.message}). ` +
          'Check that the brokers in `new Kafka({ brokers })` are running and reachable from here.',
        { cause: error, retriable: true, context },
      );
    }
    // A protocol error's flag is the broker's verdict; kafkajs's own "retries ran out" is not.
    const protocol = chain.find(isKafkaProtocolError);
    const retriable =
      protocol !== undefined ? protocol.retriable : kafka.name === 'KafkaJSNumberOfRetriesExceeded' || kafka.retriable;
    return new OncelyError(
      'ONCELY_KAFKA_ERROR',
      `The Kafka broker refused what start() needs (${protocol?.type ?? kafka.name}: ${kafka.message}). ` +
        'Check the client’s credentials (`sasl`, `ssl`) and the ACLs of the group and its topics.',
      {
        cause: error,
        retriable,
        context: { ...context, ...(protocol === undefined ? {} : { kafkaError: protocol.type }) },
      },
    );
  }
  const kind = classifyFailure({ error, inHandler: false, connectionLost: false });
  if (kind === 'transient') {
    return new OncelyError(
      'ONCELY_DATABASE_UNREACHABLE',
      `Could not reach PostgreSQL while starting (${messageOf(error)}). ` +
        'Check that the server in `DATABASE_URL` (or your pool) is running and reachable, or raise startTimeoutMs.',
      { cause: error, retriable: true, context },
    );
  }
  const pgError = chain.find(isPgError);
  if (pgError !== undefined) {
    const sqlState = typeof pgError.code === 'string' ? pgError.code : undefined;
    return new OncelyError(
      'ONCELY_DATABASE_ERROR',
      `PostgreSQL refused what start() needs (${sqlState === undefined ? '' : `SQLSTATE ${sqlState}: `}${pgError.message}). ` +
        databaseFix(sqlState),
      {
        cause: error,
        retriable: kind === 'contention',
        context: { ...context, ...(sqlState === undefined ? {} : { sqlState }) },
      },
    );
  }
  return error;
}

function isKafkaJsError(error: unknown): error is { name: string; message: string; retriable: boolean } {
  if (typeof error !== 'object' || error === null) return false;
  const { name, retriable } = error as { name?: unknown; retriable?: unknown };
  return typeof name === 'string' && name.startsWith('KafkaJS') && typeof retriable === 'boolean';
}

/** A server error from pg: it carries a SQLSTATE `code` and a `severity`. */
function isPgError(error: unknown): error is { code: unknown; message: string } {
  return typeof error === 'object' && error !== null && 'severity' in error && 'code' in error;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
