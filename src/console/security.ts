/**
 * The console's locks: the token compared in constant time, a signed session cookie (stateless, so
 * every instance that knows the token accepts it), and CSRF tokens bound to the session.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** A session lasts this long after sign-in; then the token is asked for again. */
export const SESSION_MS = 12 * 60 * 60 * 1000;

export const SESSION_COOKIE = 'oncely_console';
/** The nonce the CSRF token is bound to when the host app signs people in (no session of ours). */
export const CSRF_COOKIE = 'oncely_console_csrf';

/**
 * Equal in constant time, whatever the lengths: both sides are hashed first, so neither the
 * position of the first difference nor the length of the secret shows in the time taken.
 */
export function constantTimeEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** A new random token or nonce, URL-safe. */
export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

/** The signing key: derived from the token (instances sharing a token share sessions), or a secret. */
export function signingKey(secret: string): Buffer {
  return createHash('sha256').update(`oncely-console|${secret}`, 'utf8').digest();
}

function mac(key: Buffer, text: string): string {
  return createHmac('sha256', key).update(text, 'utf8').digest('base64url');
}

export interface Session {
  /** Random per sign-in: CSRF tokens are bound to it. */
  readonly nonce: string;
  /** The name given at sign-in, for the audit log. */
  readonly name: string;
  readonly issuedAt: number;
}

/** `v1.<issued>.<nonce>.<name>.<mac>`: everything but the mac is readable, nothing can be changed. */
export function signSession(key: Buffer, session: Session): string {
  const name = Buffer.from(session.name, 'utf8').toString('base64url');
  const body = `v1.${session.issuedAt}.${session.nonce}.${name}`;
  return `${body}.${mac(key, `session|${body}`)}`;
}

/** The session in a cookie value, or undefined when it is forged, malformed or expired. */
export function verifySession(key: Buffer, value: string | undefined, now = Date.now()): Session | undefined {
  if (value === undefined) return undefined;
  const parts = value.split('.');
  if (parts.length !== 5 || parts[0] !== 'v1') return undefined;
  const body = parts.slice(0, 4).join('.');
  if (!constantTimeEqual(parts[4] ?? '', mac(key, `session|${body}`))) return undefined;
  const issuedAt = Number(parts[1]);
  if (!Number.isSafeInteger(issuedAt) || issuedAt > now + 60_000 || now - issuedAt > SESSION_MS) return undefined;
  return { issuedAt, nonce: parts[2] ?? '', name: Buffer.from(parts[3] ?? '', 'base64url').toString('utf8') };
}

/** The CSRF token of a session (or of the host-auth nonce): a mac, so it cannot be made without the key. */
export function csrfToken(key: Buffer, nonce: string): string {
  return mac(key, `csrf|${nonce}`);
}

/** Cookies of a request, by name (the first of each). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const cookies = new Map<string, string>();
  for (const pair of (header ?? '').split(';')) {
    const at = pair.indexOf('=');
    if (at < 0) continue;
    const name = pair.slice(0, at).trim();
    if (name === '' || cookies.has(name)) continue;
    try {
      cookies.set(name, decodeURIComponent(pair.slice(at + 1).trim()));
    } catch {
      // a malformed value is no value
    }
  }
  return cookies;
}

/**
 * A cookie only this console reads: not visible to scripts, never sent cross-site (a form on another
 * site posting here arrives without it), scoped to the console's path, Secure over HTTPS.
 */
export function cookie(
  name: string,
  value: string,
  { path, secure, maxAgeS }: { path: string; secure: boolean; maxAgeS?: number },
): string {
  return [
    `${name}=${encodeURIComponent(value)}`,
    `Path=${path === '' ? '/' : path}`,
    'HttpOnly',
    'SameSite=Strict',
    ...(secure ? ['Secure'] : []),
    ...(maxAgeS === undefined ? [] : [`Max-Age=${maxAgeS}`]),
  ].join('; ');
}
