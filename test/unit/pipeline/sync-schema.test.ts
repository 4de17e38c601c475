import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { parsesSynchronously } from '../../../src/pipeline/record/sync-schema.js';

const payment = z.object({
  type: z.literal('payment.captured'),
  paymentId: z.string().min(1),
  accountId: z.string().trim().min(1),
  amountCents: z.int().positive(),
  currency: z.string().length(3),
  capturedAt: z.iso.datetime(),
  email: z.email().optional(),
  tags: z.array(z.enum(['a', 'b'])).default([]),
  meta: z.record(z.string(), z.union([z.string(), z.number().nullable()])),
  pair: z.tuple([z.string(), z.coerce.number()]),
  status: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('ok') }),
    z.object({ kind: z.literal('failed'), reason: z.string().catch('unknown') }),
  ]),
  both: z.intersection(z.object({ a: z.string() }), z.object({ b: z.number() })),
  piped: z.string().pipe(z.uuid()),
});

describe('parsesSynchronously', () => {
  it('is true for a schema made only of zod’s own types and checks, nested at any depth', () => {
    expect(parsesSynchronously(payment)).toBe(true);
    expect(parsesSynchronously(z.string())).toBe(true);
  });

  it('is false wherever a step may hand back a promise: refine, superRefine, check, transform, preprocess, codec, custom, lazy, promise', () => {
    const possiblyAsync = [
      z.string().refine(async (s) => s.length > 0),
      z.string().refine((s) => s.length > 0), // a sync refine looks the same as an async one
      z.object({ n: z.number() }).superRefine(() => undefined),
      z.number().check((ctx) => void ctx),
      z.string().transform((s) => s.length),
      z.preprocess((v) => v, z.string()),
      z.codec(z.iso.datetime(), z.date(), { decode: (s) => new Date(s), encode: (d) => d.toISOString() }),
      z.custom<string>((v) => typeof v === 'string'),
      z.lazy(() => z.string()),
      z.promise(z.string()),
    ];
    for (const schema of possiblyAsync) expect(parsesSynchronously(schema)).toBe(false);
  });

  it('is false when one refined step hides deep inside', () => {
    const deep = payment.extend({
      nested: z.object({ list: z.array(z.union([z.string(), z.number().refine((n) => n > 0)])) }),
    });
    expect(parsesSynchronously(deep)).toBe(false);
    expect(
      parsesSynchronously(
        z
          .string()
          .optional()
          .pipe(z.string().transform((s) => s)),
      ),
    ).toBe(false);
  });

  it('is false for what is not a zod 4 schema', () => {
    expect(parsesSynchronously({ safeParse: () => ({ success: true, data: 1 }) })).toBe(false);
    expect(parsesSynchronously(undefined)).toBe(false);
  });

  it('terminates on a recursive schema', () => {
    const tree = z.object({
      name: z.string(),
      get children() {
        return z.array(tree);
      },
    });
    expect(parsesSynchronously(tree)).toBe(true);
  });

  it('gives the same result parsed either way, valid or not', async () => {
    const valid = {
      type: 'payment.captured',
      paymentId: 'p-1',
      accountId: '  acct-1 ',
      amountCents: 100,
      currency: 'EUR',
      capturedAt: '2026-01-01T00:00:00Z',
      meta: { a: 'x', b: null },
      pair: ['x', '2'],
      status: { kind: 'failed', reason: 7 },
      both: { a: 'a', b: 1 },
      piped: '0b3e0c1e-8c2a-4f4e-9d1a-2f7b8f0e6a11',
    };
    for (const input of [valid, { ...valid, amountCents: -1 }, { ...valid, currency: 'EURO' }, null]) {
      const sync = payment.safeParse(input);
      const async = await payment.safeParseAsync(input);
      expect(sync.success).toBe(async.success);
      expect(sync.data).toEqual(async.data);
      expect(sync.error?.issues).toEqual(async.error?.issues);
    }
  });
});
