/**
 * What operators type, the same at the command line and in the console: durations and partition
 * lists. A bad value is refused with a sentence that shows a good one.
 */
import { InvalidArgumentError } from 'commander';

import { configError } from '../errors.js';

/** `0,1,2`: partition numbers. */
export function parsePartitions(value: string): number[] {
  const partitions = value.split(',').map((p) => Number(p.trim()));
  if (partitions.some((p) => !Number.isInteger(p) || p < 0)) {
    throw new InvalidArgumentError(`"${value}" is not a list of partition numbers, e.g. 0,1,2.`);
  }
  return partitions;
}

/** `7d`, `12h`, `30m`, `90s`, `500ms` or a number of milliseconds. */
export function parseDuration(value: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value.trim());
  if (match === null)
    throw configError('duration', `"${value}" is not a duration: use e.g. 7d, 12h, 30m, 90s or 500ms`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(match[2] ?? 'ms') as 'ms'];
  return Number(match[1]) * unit;
}
