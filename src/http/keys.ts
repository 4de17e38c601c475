/**
 * The `Idempotency-Key`: the headers that carry it, what a valid one is, and the one place where a
 * key's stored state decides what becomes of a request.
 */
import type { StoredKey } from './store.js';

/** The request header that carries the key (compared case-insensitively, as all header names). */
export const IDEMPOTENCY_KEY_REQUEST_HEADER = 'Idempotency-Key';
/** Set to `true` on a response that is a stored one played back. */
export const IDEMPOTENT_REPLAYED_HEADER = 'Idempotent-Replayed';
/** The longest key accepted; longer keys are refused, never truncated. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

/** Why a key header value is refused, or undefined when it is fine. */
export function invalidIdempotencyKey(key: string): string | undefined {
  if (key.length === 0) return 'The Idempotency-Key header is empty.';
  if (key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    return `The Idempotency-Key header is ${key.length} characters long; the limit is ${MAX_IDEMPOTENCY_KEY_LENGTH}.`;
  }
  // Printable ASCII only: a key must read back byte for byte through every proxy and log.
  if (!/^[\x20-\x7e]+$/.test(key)) {
    return 'The Idempotency-Key header must be printable ASCII (a UUID is a good key).';
  }
  return undefined;
}

/** What a request with a key is, given the key's lock and its row. */
export type KeyDecision =
  /** The key's generation completed with this request: play its response back. */
  | { readonly kind: 'replay'; readonly response: NonNullable<StoredKey['response']> }
  /** The key is bound to another request (finished or not): 422. */
  | { readonly kind: 'mismatch'; readonly stored: StoredKey }
  /** Another request holds the key's lock and nothing is stored to answer with: 409. */
  | { readonly kind: 'in-use' }
  /** The key's generation is in progress with this request and nobody runs it: run (continue) it. */
  | { readonly kind: 'run'; readonly generation: bigint }
  /** The key is new, or expired: start a new generation (replacing `previous`). */
  | { readonly kind: 'start'; readonly previous: bigint | undefined };

/**
 * The one place a key's state decides a request's fate. A live row binds the key to its request's
 * fingerprint from first use (Stripe's rule), so another request is 422 even when the first never
 * finished; a completed one is replayed to its own request even while the lock is held. An in-
 * progress generation with the same fingerprint and a free lock is a crashed or failed attempt:
 * the request continues it, and its completed steps replay. Past its ttl a key is new again.
 */
export function decideKey(
  { locked, stored }: { locked: boolean; stored: StoredKey | undefined },
  fingerprint: Buffer,
): KeyDecision {
  if (stored?.live === true) {
    if (!stored.fingerprint.equals(fingerprint)) return { kind: 'mismatch', stored };
    if (stored.response !== undefined) return { kind: 'replay', response: stored.response };
  }
  if (!locked) return { kind: 'in-use' };
  if (stored?.live === true) return { kind: 'run', generation: stored.generation };
  return { kind: 'start', previous: stored?.generation };
}
