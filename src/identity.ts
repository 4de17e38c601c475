/**
 * Derived identities (DESIGN.md §3a): every id oncely derives from other ids — an outbox event's
 * `message-id`, a dead letter's outbox row, a step's provider idempotency key — is built here, from
 * a typed tuple, by one encoding. Two different tuples never give one string, so two groups on one
 * topic, two tenants whose names share a prefix, or two generations of one HTTP key cannot collide.
 *
 * Never change an encoding below once released: ids already published or already sent to a
 * provider would no longer match their retries.
 */
import { createHash } from 'node:crypto';

/** What an identity names. The kind fixes which parts it has (see {@link Identity}). */
export type IdentityKind =
  /** The n-th event published while handling inbound message `id` in inbox scope `scope`. */
  | 'event'
  /** The n-th event published by generation `generation` of HTTP `Idempotency-Key` `id` in route scope `scope`. */
  | 'http-event'
  /** The outbox row that publishes the dead letter of record `id` (`topic/partition/offset`) of `scope`. */
  | 'dead-letter'
  /** Step `name` of owner `id` (a message id, or an HTTP key's generation) in `scope`. */
  | 'step'
  /** The compensation of step `name` of owner `id` in `scope`. */
  | 'compensation';

/** The typed tuple an identity is built from. Text parts must be well-formed Unicode. */
export interface Identity {
  readonly kind: IdentityKind;
  /** The inbox scope (a consumer's `inboxScope`), or an HTTP route's key scope. */
  readonly scope: string;
  /** The owner: a message id, a record's coordinates, or an HTTP `Idempotency-Key`. */
  readonly id: string;
  /** An HTTP key's generation (a key reused after it expired starts a new one). Messages have none. */
  readonly generation?: number | bigint;
  /** A step's name. */
  readonly name?: string;
  /** An event's publish order within its attempt, from 0. */
  readonly n?: number;
}

/** Longest identity that travels as a Kafka `message-id` (oncely's own limit, in code points). */
export const MAX_DERIVED_ID_LENGTH = 255;

/** Longest key sent to another system as its idempotency key (Stripe's limit: 255 characters). */
export const MAX_EXTERNAL_KEY_LENGTH = 255;

/**
 * True when `text` holds no lone surrogate: PostgreSQL and every other system store text as
 * UTF-8, where a lone surrogate becomes U+FFFD, so two different strings would become one.
 */
export function isWellFormedText(text: string): boolean {
  return text.isWellFormed();
}

/**
 * The unambiguous text of an identity: `<kind>:<len>:<scope>:<len>:<id>` then, when present,
 * `:g<generation>`, `:<len>:<name>`, `:n<n>`. Every free-text part carries its length (UTF-16
 * units), so a part containing `:` can never shift into the next one; the kind and the tags fix
 * which parts follow. Throws on a part that is not well-formed text or on an invalid number.
 */
export function encodeIdentity(identity: Identity): string {
  let text = `${identity.kind}:${part(identity.scope, 'scope')}:${part(identity.id, 'id')}`;
  if (identity.generation !== undefined) text += `:g${wholeNumber(identity.generation, 'generation')}`;
  if (identity.name !== undefined) text += `:${part(identity.name, 'name')}`;
  if (identity.n !== undefined) text += `:n${wholeNumber(identity.n, 'n')}`;
  return text;
}

/**
 * An identity that stays readable: its encoding when that fits in `maxLength` code points,
 * otherwise `<kind>#<readable prefix>~<SHA-256, base64url>` — the same for the same tuple on every
 * call. `#` never follows the kind in an encoding, so a digest form never equals a plain one.
 */
export function derivedId(identity: Identity, maxLength: number = MAX_DERIVED_ID_LENGTH): string {
  const text = encodeIdentity(identity);
  if (text.length <= maxLength || codePoints(text) <= maxLength) return text;
  const digest = sha256(text);
  const room = maxLength - identity.kind.length - 2 - digest.length;
  return `${identity.kind}#${prefix(text.slice(identity.kind.length + 1), room)}~${digest}`;
}

/**
 * A key for another system's idempotency (a payment provider's `Idempotency-Key`): always a digest
 * of the identity's encoding, so two tuples never share one, behind a readable ASCII prefix (the
 * kind and the step name) that helps a person find it in the provider's dashboard. At most
 * {@link MAX_EXTERNAL_KEY_LENGTH} characters, only `[A-Za-z0-9._~-]`, the same on every retry.
 */
export function externalKey(identity: Identity): string {
  const label = (identity.name ?? '').replace(/[^A-Za-z0-9._-]+/g, '-').slice(0, 64);
  return `oncely-${identity.kind}${label === '' ? '' : `.${label}`}~${sha256(encodeIdentity(identity))}`;
}

function part(text: string, what: string): string {
  if (typeof text !== 'string' || !isWellFormedText(text)) {
    throw new TypeError(`identity ${what} must be well-formed text (no lone surrogates)`);
  }
  return `${text.length}:${text}`;
}

function wholeNumber(value: number | bigint, what: string): string {
  if (typeof value === 'bigint' ? value < 0n : !Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`identity ${what} must be a whole number ≥ 0`);
  }
  return value.toString();
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('base64url');
}

function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** The first `room` code points of `text` (never half a surrogate pair). */
function prefix(text: string, room: number): string {
  let out = '';
  let n = 0;
  for (const ch of text) {
    if (n++ >= room) break;
    out += ch;
  }
  return out;
}
