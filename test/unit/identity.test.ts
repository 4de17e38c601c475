import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import {
  derivedId,
  encodeIdentity,
  externalKey,
  type Identity,
  type IdentityKind,
  isWellFormedText,
} from '../../src/identity.js';

const kinds: IdentityKind[] = ['event', 'http-event', 'dead-letter', 'step', 'compensation'];

/** Well-formed text that likes the characters an encoding could be confused by. */
const text = fc.oneof(
  fc.string({ unit: fc.constantFrom(':', '#', '~', '1', '2', 'a', 'é', '😀'), maxLength: 12 }),
  fc.string({ unit: 'grapheme', maxLength: 8 }),
);

const identity: fc.Arbitrary<Identity> = fc.record(
  {
    kind: fc.constantFrom(...kinds),
    scope: text,
    id: text,
    generation: fc.nat(),
    name: text,
    n: fc.nat(),
  },
  { requiredKeys: ['kind', 'scope', 'id'] },
);

const same = (a: Identity, b: Identity): boolean =>
  a.kind === b.kind &&
  a.scope === b.scope &&
  a.id === b.id &&
  a.generation === b.generation &&
  a.name === b.name &&
  a.n === b.n;

describe('identities (DESIGN.md §3a)', () => {
  it('pins the encoding: this format is frozen', () => {
    expect(encodeIdentity({ kind: 'event', scope: 'billing', id: 'p-1', n: 0 })).toBe('event:7:billing:3:p-1:n0');
    expect(encodeIdentity({ kind: 'step', scope: 'acme', id: 'k1', generation: 2, name: 'charge' })).toBe(
      'step:4:acme:2:k1:g2:6:charge',
    );
    expect(externalKey({ kind: 'step', scope: 'acme', id: 'k1', name: 'charge' })).toBe(
      'oncely-step.charge~-HJY2XbzXQepDDDVuzWTo-Rc-TeRjnjcrCsa_A3PEIA',
    );
  });

  it('never gives two different tuples one encoding, one derived id or one external key', () => {
    fc.assert(
      fc.property(identity, identity, (a, b) => {
        fc.pre(!same(a, b));
        expect(encodeIdentity(a)).not.toBe(encodeIdentity(b));
        expect(derivedId(a, 40)).not.toBe(derivedId(b, 40));
        expect(externalKey(a)).not.toBe(externalKey(b));
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps the colon cases apart that template strings merged', () => {
    const a = externalKey({ kind: 'step', scope: 'acme:eu', id: 'k1', name: 'charge' });
    const b = externalKey({ kind: 'step', scope: 'acme', id: 'eu:k1', name: 'charge' });
    expect(a).not.toBe(b);
  });

  it('bounds derived ids and external keys, the same on every call', () => {
    fc.assert(
      fc.property(identity, fc.integer({ min: 60, max: 255 }), (id, max) => {
        const derived = derivedId(id, max);
        expect([...derived].length).toBeLessThanOrEqual(max);
        expect(isWellFormedText(derived)).toBe(true);
        expect(derivedId(id, max)).toBe(derived);
        const key = externalKey(id);
        expect(key.length).toBeLessThanOrEqual(255);
        expect(key).toMatch(/^oncely-[a-z-]+(\.[A-Za-z0-9._-]+)?~[A-Za-z0-9_-]{43}$/);
      }),
    );
  });

  it('refuses text with a lone surrogate and numbers that are not whole', () => {
    expect(isWellFormedText('ok 😀')).toBe(true);
    expect(isWellFormedText('bad \uD800')).toBe(false);
    expect(() => encodeIdentity({ kind: 'event', scope: '\uD800', id: 'x' })).toThrow(/well-formed/);
    expect(() => encodeIdentity({ kind: 'event', scope: 's', id: 'x', n: -1 })).toThrow(/whole number/);
    expect(() => encodeIdentity({ kind: 'event', scope: 's', id: 'x', n: 1.5 })).toThrow(/whole number/);
  });
});
