/**
 * The `lanes` option: per-key concurrency inside a partition (G4's exception). Resolved here, beside
 * the code that runs lanes; `pipeline/options.ts` validates it with the other consumer options.
 */
import { z } from 'zod';

import type { MessageInfo } from '../handler.js';

/** How records of one partition are spread over lanes. */
export interface LaneOptions {
  /** Lanes per partition: records of different keys run at once on up to this many. 2 to 256. */
  readonly count: number;
  /**
   * The key whose records must stay in offset order. Default: the Kafka record key (records without
   * a key share one lane). Synchronous; return the same key for records that must not overtake each
   * other. A function that throws puts the record on the lane of records without a key.
   */
  readonly key?: (message: MessageInfo) => string | Buffer | null | undefined;
  /**
   * The most records of one partition taken past its watermark (the lowest offset whose outcome is
   * not recorded yet): what a crash delivers again at most, and what one slow key lets the other
   * keys run ahead by. Default 1,000.
   */
  readonly maxInFlight?: number;
}

export interface ResolvedLanes {
  readonly count: number;
  readonly key: ((message: MessageInfo) => string | Buffer | null | undefined) | undefined;
  readonly maxInFlight: number;
}

/** Records per partition past the watermark, when `lanes.maxInFlight` is not given. */
export const DEFAULT_MAX_IN_FLIGHT = 1_000;

export const lanesSchema = z
  .union(
    [
      z.int('must be a whole number').min(1, 'must be at least 1 (1: no lanes)').max(256, 'must be at most 256'),
      z.strictObject({
        count: z.int('must be a whole number').min(1, 'must be at least 1 (1: no lanes)').max(256),
        key: z
          .custom<NonNullable<LaneOptions['key']>>((v) => typeof v === 'function', {
            message: 'must be a function (message) => key',
          })
          .optional(),
        maxInFlight: z.int('must be a whole number').min(1, 'must be at least 1').max(1_000_000).optional(),
      }),
    ],
    { error: 'must be a lane count (e.g. 8) or { count, key?, maxInFlight? }' },
  )
  .optional();

/** The resolved lanes, or undefined when a partition runs on one lane (the default, in offset order). */
export function resolveLanes(lanes: z.infer<typeof lanesSchema>): ResolvedLanes | undefined {
  if (lanes === undefined) return undefined;
  const options = typeof lanes === 'number' ? { count: lanes } : lanes;
  if (options.count === 1) return undefined;
  return { count: options.count, key: options.key, maxInFlight: options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT };
}
