import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { defineHandler, type HandlerOptions } from '../../../src/index.js';

const handle = (): void => undefined;

function messageOf(options: unknown): string {
  try {
    defineHandler(options as HandlerOptions<unknown>);
  } catch (error) {
    expect(error).toMatchObject({ code: 'ONCELY_CONFIG' });
    return (error as Error).message;
  }
  throw new Error('expected defineHandler to throw');
}

describe('defineHandler', () => {
  it('returns a frozen, branded definition', () => {
    const handler = defineHandler({ topic: 'payments', schema: z.object({ id: z.string() }), handle });
    expect(handler).toMatchObject({ topic: 'payments', kind: 'message' });
    expect(Object.isFrozen(handler)).toBe(true);
  });

  it.each([
    ['a missing topic', { handle }, 'Invalid option `defineHandler.topic`: give the topic name as a non-empty string'],
    ['an empty topic', { topic: '', handle }, 'give the topic name as a non-empty string'],
    [
      'a missing handle',
      { topic: 't' },
      'Invalid option `defineHandler.handle`: give a function (event, ctx) => Promise<void>',
    ],
    ['a schema that is not zod', { topic: 't', handle, schema: { parse: handle } }, 'give a zod schema'],
    [
      'a messageId that is not a function',
      { topic: 't', handle, messageId: 'id' },
      'Invalid option `defineHandler.messageId`',
    ],
    [
      'an unknown tombstone policy',
      { topic: 't', handle, tombstone: 'ignore' },
      "use 'dead-letter', 'skip' or a function",
    ],
  ])('rejects %s, saying what to pass', (_name, options, text) => {
    expect(messageOf(options)).toContain(text);
  });
});
