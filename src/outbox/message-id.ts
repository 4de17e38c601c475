import { createHash, randomBytes } from 'node:crypto';

import { MAX_MESSAGE_ID_LENGTH } from '../kafka/message-identity.js';

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Time-ordered, so ids of
 * events published outside a consumer sort roughly by creation and index well. Node 20's crypto
 * has only v4; this is the whole algorithm, so no dependency.
 */
export function uuidv7(now: number = Date.now()): string {
  const bytes = randomBytes(16);
  // 48-bit big-endian timestamp.
  bytes.writeUIntBE(now, 0, 6);
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x70; // version 7
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80; // variant 10
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The message-id of the n-th event (0-based, in publish order) published while handling the
 * inbound message `causationId`: `<causationId>:<n>`. The same on every attempt (a failed attempt
 * rolls its rows back and the next one numbers from 0 again) and on a replay, so a downstream
 * oncely consumer dedupes it. When that would pass the 255-character limit of message ids, the
 * inbound id is replaced by its SHA-256 (hex), still deterministic.
 *
 * Never change this format: events already published would look new downstream.
 */
export function derivedMessageId(causationId: string, n: number): string {
  const id = `${causationId}:${n}`;
  if (id.length <= MAX_MESSAGE_ID_LENGTH) return id;
  return `${createHash('sha256').update(causationId, 'utf8').digest('hex')}:${n}`;
}

/**
 * The outbox row id of a dead letter's record: one per (group, source record), so a dead letter is
 * published once. (Its `message-id` header keeps the dead message's own id.) Never change it.
 */
export function deadLetterOutboxId(groupId: string, topic: string, partition: number, offset: string): string {
  const id = `dead-letter:${groupId}:${topic}/${partition}/${offset}`;
  if (id.length <= MAX_MESSAGE_ID_LENGTH) return id;
  return `dead-letter:${createHash('sha256').update(id, 'utf8').digest('hex')}`;
}
