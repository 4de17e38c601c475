import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { colours, formatStoredError, parseDeadLetterId, readableMessage } from '../../../src/cli/output.js';
import { describeError } from '../../../src/pipeline/error-record.js';

const zodError = (() => {
  const parsed = z.object({ amountCents: z.int(), card: z.object({ last4: z.string() }) }).safeParse({
    amountCents: 'ten',
    card: {},
  });
  if (parsed.success) throw new Error('expected a validation failure');
  return parsed.error;
})();

describe('CLI output', () => {
  it('prints validation issues as `path: message`, once, without their JSON or the stack repeating it', () => {
    const lines = formatStoredError(describeError(zodError));
    expect(lines[0]).toBe("ZodError: the payload does not match the handler's schema");
    expect(lines.slice(1)).toEqual([
      '  amountCents: Invalid input: expected number, received string',
      '  card.last4: Invalid input: expected string, received undefined',
    ]);
    expect(lines.join('\n')).not.toContain('"code"');
  });

  it('reads a zod message (the JSON of its issues) back as one readable line', () => {
    expect(readableMessage(zodError.message)).toBe(
      'amountCents: Invalid input: expected number, received string; card.last4: Invalid input: expected string, received undefined',
    );
    expect(readableMessage('connection refused')).toBe('connection refused');
  });

  it('accepts only positive whole numbers as dead-letter ids', () => {
    expect(parseDeadLetterId('42')).toBe('42');
    for (const bad of ['abc', '0', '-1', '1.5', '99999999999999999999', ' 7']) {
      expect(() => parseDeadLetterId(bad)).toThrow(/is not a dead-letter id/);
    }
  });

  it('colours only a terminal', () => {
    expect(colours({ isTTY: false } as NodeJS.WriteStream).red('FAIL')).toBe('FAIL');
    const previous = process.env.NO_COLOR;
    delete process.env.NO_COLOR;
    try {
      expect(colours({ isTTY: true } as NodeJS.WriteStream).red('FAIL')).toBe('\u001b[31mFAIL\u001b[0m');
    } finally {
      if (previous !== undefined) process.env.NO_COLOR = previous;
    }
  });
});
