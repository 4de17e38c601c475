import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { lockName } from '../../../src/http/store.js';

/** Well-formed text rich in the separator and in digits that could pass for a length. */
const text = fc.string({ unit: fc.constantFrom(':', '1', '2', 'a', 'é', '😀'), minLength: 1, maxLength: 10 });

describe('the idempotency key lock name', () => {
  it('never gives two (scope, key) pairs one name', () => {
    expect(lockName('acme:eu', 'k1')).not.toBe(lockName('acme', 'eu:k1'));
    expect(lockName('a', 'b')).toBe('oncely.idempotency:1:a:b');
    fc.assert(
      fc.property(text, text, text, text, (scopeA, keyA, scopeB, keyB) => {
        fc.pre(scopeA !== scopeB || keyA !== keyB);
        expect(lockName(scopeA, keyA)).not.toBe(lockName(scopeB, keyB));
      }),
      { numRuns: 2000 },
    );
  });
});
