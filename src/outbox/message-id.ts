import { randomBytes } from 'node:crypto';

import { derivedId } from '../identity.js';

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
 * The message-id of the n-th event (0-based, in publish order) published while handling inbound
 * message `causationId` in inbox scope `scope`: the identity `event:<len>:<scope>:<len>:<id>:n<n>`
 * (see `derivedId`; a digest form past 255 characters). The scope is part of it, so two groups that
 * consume one topic and both publish never collide. The same on every attempt (a failed attempt
 * rolls its rows back and the next one numbers from 0 again) and on a replay, so a downstream
 * oncely consumer dedupes it.
 *
 * Never change this format: events already published would look new downstream.
 */
export function derivedMessageId(scope: string, causationId: string, n: number): string {
  return derivedId({ kind: 'event', scope, id: causationId, n });
}

/**
 * The message-id of the n-th event (0-based, in publish order) published by an idempotent HTTP
 * request: generation `generation` of `Idempotency-Key` `key` in route scope `scope`, as the
 * identity `http-event:<len>:<scope>:<len>:<key>:g<generation>:n<n>` (a digest form past 255
 * characters). The same on every attempt of that generation (a rolled-back attempt numbers from 0
 * again), so a retry publishes under the ids its failed run would have used; a key reused after it
 * expired is a new generation and never collides with the old one's events.
 *
 * Never change this format: events already published would look new downstream.
 */
export function httpEventId(scope: string, key: string, generation: bigint | number, n: number): string {
  return derivedId({ kind: 'http-event', scope, id: key, generation, n });
}

/**
 * The outbox row id of a dead letter's record: one per (inbox scope, source record), so a dead
 * letter is published once. (Its `message-id` header keeps the dead message's own id.) Never
 * change it.
 */
export function deadLetterOutboxId(scope: string, topic: string, partition: number, offset: string): string {
  return derivedId({ kind: 'dead-letter', scope, id: `${topic}/${partition}/${offset}` });
}
