import { InvalidArgumentError } from 'commander';

import { parseDuration } from '../operator/input.js';

/*
 * Parsers for option values, one per kind: a bad value is refused by commander as
 * `option '--limit <n>' argument 'abc' is invalid. …`, naming the option as the user typed it.
 */

/** A whole number of at least `min`: counts, sizes, milliseconds. */
export function wholeNumber(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`Give a whole number of ${min} or more.`);
    }
    return n;
  };
}

/** `7d`, `12h`, `30m`, `90s`, `500ms` (or a number of milliseconds), in milliseconds. */
export function duration(value: string): number {
  try {
    return parseDuration(value);
  } catch {
    throw new InvalidArgumentError('Give a duration such as 7d, 12h, 30m, 90s or 500ms.');
  }
}

/** Any text but an empty one (`DATABASE_URL=` in an env file): `example` shows what to give. */
export function nonEmpty(example: string): (value: string) => string {
  return (value) => {
    if (value.trim() === '') throw new InvalidArgumentError(`It is empty: give ${example}.`);
    return value;
  };
}
