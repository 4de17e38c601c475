/**
 * One round of the active relay: rows read from `oncely.outbox` go to the broker in order per
 * (topic, key), and are marked sent only after the broker acknowledged them.
 */
import { decodeHeaders } from '../inbox/headers.js';
import { type OutgoingRecord, protocolErrorType } from '../kafka/producer.js';
import type { LockSession } from './lock-session.js';
import { RelayStopped, type RelayProducer } from './relay-producer.js';
import type { ResolvedRelayOptions } from './relay-options.js';
import { markSent, type PendingRow, recordAttemptFailed, type SentRow } from './store.js';

/** Errors of a record the broker will never accept: retrying cannot help, the row is parked. */
const UNSENDABLE = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE']);
/** Errors that may pass (a topic being created): counted, the row parked after `maxAttempts`. */
const PER_ROW = new Set(['UNKNOWN_TOPIC_OR_PARTITION', 'TOPIC_AUTHORIZATION_FAILED', 'INVALID_TOPIC_EXCEPTION']);

/** What a round needs besides the rows: the broker, the options, and who hears of rows sent. */
export interface RoundParts {
  readonly producer: RelayProducer;
  readonly config: Pick<ResolvedRelayOptions, 'maxAttempts' | 'afterSend' | 'logger'>;
  /** Told of every row marked sent, with its latency; undefined when no one listens (no metrics). */
  readonly onSent: ((sent: readonly SentRow[]) => void) | undefined;
}

/**
 * Sends one round of rows. Returns how many were marked sent; throws when the broker is
 * unreachable (nothing is counted against the rows then) or the database connection was lost.
 */
export async function sendRound(parts: RoundParts, session: LockSession, rows: readonly PendingRow[]): Promise<number> {
  const sendable = await rowsToSend(parts, session, rows);
  if (sendable.length === 0) return 0;
  await session.holdLease();
  let acknowledged: boolean[];
  try {
    acknowledged = await parts.producer.send(sendable.map(toRecord));
  } catch (error) {
    // A send that failed as a whole marks nothing, even if some partitions were written before it
    // failed (a leader died between send and ack): every row goes again, with its message-id, and
    // a downstream oncely consumer skips the copies it already has (`republish`).
    if (!refusedPerRow(error)) throw error;
    // One record the broker refuses fails the whole batch: send row by row to find it, so only
    // that row (and the rows of its key behind it) wait. Rows of partitions that had already
    // been written are sent again: the same message-id, a `republish` downstream.
    return sendOneByOne(parts, session, sendable);
  }
  // Acknowledged by all in-sync replicas (acks -1): only these rows are sent. A row of a partition
  // the answer left out stays pending and goes first in the next round (its key's later rows share
  // its partition, so they wait with it: order per key holds). A crash before this UPDATE commits
  // re-sends the rows, with the same message-id.
  const sent = sendable.filter((_, index) => acknowledged[index] === true);
  if (sent.length < sendable.length) {
    parts.config.logger.warn(
      { acknowledged: sent.length, sent: sendable.length },
      'outbox: the broker acknowledged only part of a send (a leader moved); the rest goes again',
    );
  }
  if (sent.length === 0) return 0;
  await parts.config.afterSend?.(sent.map((r) => r.messageId));
  await markRowsSent(parts, session, sent);
  return sent.length;
}

/**
 * The rows of a round that may go now. A row whose topic the broker does not know waits (counted
 * as an attempt when the list was just read, and parked after `maxAttempts`); the rows of its key
 * behind it wait with it: order per key.
 */
async function rowsToSend(parts: RoundParts, session: LockSession, rows: readonly PendingRow[]): Promise<PendingRow[]> {
  const { config, producer } = parts;
  const held = new Set<string>();
  const sendable: PendingRow[] = [];
  for (const row of rows) {
    const key = keyOf(row);
    if (key !== undefined && held.has(key)) continue;
    const exists = await producer.topicExists(row.topic);
    if (exists === 'yes') {
      sendable.push(row);
      continue;
    }
    if (key !== undefined) held.add(key);
    if (exists === 'unknown') continue;
    const park = row.attempts + 1 >= config.maxAttempts;
    await session.run((db) =>
      recordAttemptFailed(
        db,
        row.id,
        { code: 'UNKNOWN_TOPIC_OR_PARTITION', message: `topic "${row.topic}" does not exist` },
        park,
      ),
    );
    config.logger.warn(
      { outboxId: row.id, messageId: row.messageId, topic: row.topic, attempts: row.attempts + 1, parked: park },
      park ? 'outbox event parked: its topic does not exist' : 'outbox event waits: its topic does not exist',
    );
  }
  return sendable;
}

/** Row by row, after the broker refused a batch: only the refused row (and its key behind it) waits. */
async function sendOneByOne(parts: RoundParts, session: LockSession, rows: readonly PendingRow[]): Promise<number> {
  const { config, producer } = parts;
  const held = new Set<string>();
  let sent = 0;
  for (const row of rows) {
    const key = keyOf(row);
    if (key !== undefined && held.has(key)) continue;
    await session.holdLease();
    try {
      // A single record: acknowledged, or the send rejects (nothing to mark then).
      const [acknowledged] = await producer.send([toRecord(row)]);
      if (acknowledged !== true) throw new Error(`the broker did not acknowledge outbox event ${row.id}`);
    } catch (error) {
      const type = refusedPerRow(error);
      if (type === undefined) throw error;
      const park = UNSENDABLE.has(type) || row.attempts + 1 >= config.maxAttempts;
      await session.run((db) => recordAttemptFailed(db, row.id, describeSendError(error, type), park));
      config.logger.warn(
        { outboxId: row.id, messageId: row.messageId, topic: row.topic, code: type, parked: park },
        park ? 'outbox event parked: the broker refuses it' : 'outbox event waits: the broker refused it',
      );
      if (key !== undefined) held.add(key);
      continue;
    }
    await config.afterSend?.([row.messageId]);
    await markRowsSent(parts, session, [row]);
    sent++;
  }
  return sent;
}

async function markRowsSent(parts: RoundParts, session: LockSession, rows: readonly PendingRow[]): Promise<void> {
  const sent = await session.run((db) =>
    markSent(
      db,
      rows.map((r) => r.id),
      parts.onSent !== undefined,
    ),
  );
  parts.onSent?.(sent);
}

/**
 * The broker's error type when it refused a record for a reason of that record (too large, an
 * unknown topic), or undefined: a stop, an unreachable broker, anything else fails the round.
 */
function refusedPerRow(error: unknown): string | undefined {
  if (error instanceof RelayStopped) return undefined;
  const type = protocolErrorType(error);
  return type !== undefined && (UNSENDABLE.has(type) || PER_ROW.has(type)) ? type : undefined;
}

/** The (topic, key) a row's order is kept within; undefined for rows without a key (no order). */
function keyOf(row: PendingRow): string | undefined {
  return row.key === null ? undefined : `${row.topic}\u0000${row.key.toString('base64')}`;
}

/** A row as the producer sends it. */
function toRecord(row: PendingRow): OutgoingRecord {
  return {
    topic: row.topic,
    partition: row.partition,
    key: row.key,
    value: row.value,
    headers: decodeHeaders(row.headers),
  };
}

function describeSendError(error: unknown, type: string): Record<string, unknown> {
  return { code: type, name: (error as Error).name, message: (error as Error).message };
}
