import { describe, expect, it } from 'vitest';

import { escapeHtml, html } from '../../../src/console/html.js';
import {
  constantTimeEqual,
  csrfToken,
  parseCookies,
  SESSION_MS,
  signingKey,
  signSession,
  verifySession,
} from '../../../src/console/security.js';

const key = signingKey('a-console-token-of-some-length');

describe('console security', () => {
  it('compares tokens whatever their lengths, equal only when equal', () => {
    expect(constantTimeEqual('secret-token', 'secret-token')).toBe(true);
    expect(constantTimeEqual('secret-tokeN', 'secret-token')).toBe(false);
    expect(constantTimeEqual('', 'secret-token')).toBe(false);
    expect(constantTimeEqual('secret-token-and-more', 'secret-token')).toBe(false);
  });

  it('accepts its own session cookie and refuses a changed, foreign or expired one', () => {
    const now = Date.now();
    const value = signSession(key, { nonce: 'n0nce-n0nce-n0nce-n0nce', name: 'Ada L.', issuedAt: now });
    expect(verifySession(key, value, now)).toEqual({ nonce: 'n0nce-n0nce-n0nce-n0nce', name: 'Ada L.', issuedAt: now });
    const [, issued, nonce, , mac] = value.split('.');
    const renamed = ['v1', issued, nonce, Buffer.from('Mallory').toString('base64url'), mac].join('.');
    expect(verifySession(key, renamed, now)).toBeUndefined();
    expect(verifySession(signingKey('another-token-entirely'), value, now)).toBeUndefined();
    expect(verifySession(key, value, now + SESSION_MS + 1)).toBeUndefined();
    expect(verifySession(key, 'v1.garbage', now)).toBeUndefined();
    expect(verifySession(key, undefined, now)).toBeUndefined();
  });

  it('binds CSRF tokens to the session nonce and the key', () => {
    expect(csrfToken(key, 'nonce-a')).toBe(csrfToken(key, 'nonce-a'));
    expect(csrfToken(key, 'nonce-a')).not.toBe(csrfToken(key, 'nonce-b'));
    expect(csrfToken(signingKey('another-token-entirely'), 'nonce-a')).not.toBe(csrfToken(key, 'nonce-a'));
  });

  it('reads cookies, the first of each name, ignoring malformed values', () => {
    const cookies = parseCookies('a=1; b=x%20y; a=2; c=%E0%A4%A; =nameless');
    expect([...cookies]).toEqual([
      ['a', '1'],
      ['b', 'x y'],
    ]);
  });
});

describe('console html', () => {
  it('escapes every interpolated value; nested html and arrays of it stay markup', () => {
    const name = '<script>alert("x")</script>';
    const page = html`<td title="${name}">${name}</td>
      ${[html`<b>${'a&b'}</b>`, 1n, null, false]}`;
    expect(page.text.replaceAll(/>\s+</g, '><')).toBe(
      '<td title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</td><b>a&amp;b</b>1',
    );
    expect(escapeHtml(`'`)).toBe('&#39;');
  });
});
