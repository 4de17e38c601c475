import { describe, expect, it } from 'vitest';

import { offsetAfter } from '../../../src/pipeline/record/prepare.js';

describe('offsetAfter', () => {
  it('adds one to a decimal offset, exactly across the 2^53 boundary and up to 64 bits', () => {
    expect(offsetAfter('0')).toBe('1');
    expect(offsetAfter('41')).toBe('42');
    expect(offsetAfter('9007199254740990')).toBe('9007199254740991');
    expect(offsetAfter('9007199254740991')).toBe('9007199254740992'); // 2^53 - 1: past a double's exact range
    expect(offsetAfter('9007199254740992')).toBe('9007199254740993');
    expect(offsetAfter('9223372036854775806')).toBe('9223372036854775807');
  });
});
