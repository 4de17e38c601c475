import { z } from 'zod';

/** The in-process purge's options (`retention` of `createInboxConsumer`), resolved. */
export interface ResolvedRetention {
  readonly inboxFor: number;
  readonly deadLettersFor: number;
  readonly every: number;
  readonly batchSize: number;
}

const DAY_MS = 24 * 60 * 60 * 1000;

export const DEFAULT_RETENTION: ResolvedRetention = {
  inboxFor: 7 * DAY_MS,
  deadLettersFor: 30 * DAY_MS,
  every: 60 * 60 * 1000,
  batchSize: 5_000,
};

// `false` and absent both mean off; an object (even `{}`) turns it on with the defaults. Not a
// z.union: its "Invalid input" would hide which retention field is wrong.
export const retentionSchema = z.preprocess(
  (value) => (value === false ? undefined : value),
  z
    .strictObject(
      {
        inboxFor: z.number().min(0, 'must be 0 ms or more'),
        deadLettersFor: z.number().min(0, 'must be 0 ms or more'),
        every: z.number().min(1_000, 'must be at least 1,000 ms'),
        batchSize: z.int('must be a whole number').min(1, 'must be at least 1').max(100_000),
      },
      { error: 'expected false or { inboxFor?, deadLettersFor?, every?, batchSize? } (milliseconds)' },
    )
    .partial()
    .transform((r): ResolvedRetention => ({ ...DEFAULT_RETENTION, ...r }))
    .optional(),
);
