import { describe, expect, it } from 'vitest';

import type { ConsumedRecord } from '../../../src/kafka/runner.js';
import { writtenBeforePurge } from '../../../src/replay/plan.js';

function record(timestamp: string): ConsumedRecord {
  return { topic: 't', partition: 0, offset: '7', key: null, value: null, headers: {}, timestamp };
}

describe('the time horizon of a replay plan', () => {
  const purgedUntilMs = Date.parse('2026-12-07T10:00:00.000Z');

  it('counts nothing when the scope was never purged', () => {
    expect(writtenBeforePurge(record('0'), undefined)).toBe(false);
  });

  it('counts a record written at or before the last purge, not one written after it', () => {
    expect(writtenBeforePurge(record(String(purgedUntilMs - 60_000)), purgedUntilMs)).toBe(true);
    expect(writtenBeforePurge(record(String(purgedUntilMs)), purgedUntilMs)).toBe(true);
    expect(writtenBeforePurge(record(String(purgedUntilMs + 1)), purgedUntilMs)).toBe(false);
  });

  it('counts a record without a usable timestamp as written before (the safe side)', () => {
    expect(writtenBeforePurge(record('-1'), purgedUntilMs)).toBe(true);
    expect(writtenBeforePurge(record(''), purgedUntilMs)).toBe(true);
    expect(writtenBeforePurge(record('not a number'), purgedUntilMs)).toBe(true);
  });
});
