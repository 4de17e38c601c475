import { describe, expect, it } from 'vitest';

import { decode } from '../../../src/pipeline/record/decode.js';
import type { MessageInfo } from '../../../src/pipeline/handler.js';

function info(value: Buffer | null): MessageInfo {
  return { topic: 't', partition: 0, offset: '0', key: null, value, headers: {}, timestamp: new Date(0) };
}

const json = { decode: undefined, schema: undefined };

describe('decode (strict UTF-8 JSON)', async () => {
  it('parses JSON in UTF-8, multi-byte characters included, and drops a leading byte order mark', async () => {
    expect(await decode(json, info(Buffer.from('{"name":"Zoë 💳","amount":1}')))).toEqual({
      ok: true,
      event: { name: 'Zoë 💳', amount: 1 },
    });
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}')]);
    expect(await decode(json, info(bom))).toEqual({ ok: true, event: { a: 1 } });
  });

  it('refuses bytes that are not UTF-8 instead of replacing them, and says where JSON breaks without quoting it', async () => {
    // "{"a":"<0xff>"}": Buffer#toString would have made it "\uFFFD" and parsed it.
    const invalid = await decode(json, info(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])));
    expect(invalid.ok).toBe(false);
    expect(invalid.ok ? '' : (invalid.error as Error).message).toContain('not valid UTF-8');
    // An overlong encoding of "/" and a lone surrogate are not UTF-8 either.
    expect((await decode(json, info(Buffer.from([0x22, 0xc0, 0xaf, 0x22])))).ok).toBe(false);
    expect((await decode(json, info(Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22])))).ok).toBe(false);

    const broken = await decode(json, info(Buffer.from('{"card":"4111111111111111",')));
    expect(broken.ok).toBe(false);
    const message = broken.ok ? '' : (broken.error as Error).message;
    expect(message).toMatch(/not valid JSON/);
    expect(message).not.toContain('4111');
  });
});
