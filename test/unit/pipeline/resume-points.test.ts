import { createHash } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { decideStart, markOffset, recogniseLog } from '../../../src/pipeline/lifecycle/resume-points.js';

const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest();
const mark = { payloadHash: sha256('{"n":2}'), timestamp: '1700000000002' };
const bounds = { start: 0n, end: 10n };

describe('topic identity: a resume point recognises its log', () => {
  it('recognises the record it was recorded after: same fingerprint and timestamp', () => {
    expect(recogniseLog(mark, { offset: '2', value: Buffer.from('{"n":2}'), timestamp: '1700000000002' })).toBe('same');
  });

  it('takes another payload, or the same payload written at another time, for another log', () => {
    expect(recogniseLog(mark, { offset: '2', value: Buffer.from('{"n":9}'), timestamp: '1700000000002' })).toBe(
      'other',
    );
    expect(recogniseLog(mark, { offset: '2', value: Buffer.from('{"n":2}'), timestamp: '1800000000000' })).toBe(
      'other',
    );
  });

  it('says when it cannot tell: no mark (a row from before migration 0007), or no record to compare', () => {
    expect(recogniseLog(undefined, { offset: '2', value: null, timestamp: '1' })).toBe('unmarked');
    expect(recogniseLog(mark, undefined)).toBe('unreadable');
  });

  it('fetches the record before the resume point only when it can be in the log', () => {
    expect(markOffset({ nextOffset: 3n, previous: mark }, bounds)).toBe(2n);
    expect(markOffset({ nextOffset: 3n, previous: undefined }, bounds)).toBeUndefined();
    expect(markOffset({ nextOffset: 0n, previous: mark }, bounds)).toBeUndefined();
    expect(markOffset({ nextOffset: 3n, previous: mark }, { start: 3n, end: 10n })).toBeUndefined();
    expect(markOffset({ nextOffset: 11n, previous: mark }, bounds)).toBeUndefined();
  });

  it('G2: another log is a mismatch whatever its length, and says so rather than "behind the log start"', () => {
    expect(decideStart(3n, { start: 0n, end: 3n }, undefined, 'other').mismatch?.problem).toBe('other-log');
    expect(decideStart(3n, { start: 0n, end: 500n }, 3n, 'other').mismatch?.problem).toBe('other-log');
    expect(decideStart(3n, { start: 0n, end: 500n }, undefined, 'same')).toEqual({ resumeAt: 3n, seekTo: 3n });
    // What cannot be checked keeps today's behaviour: the bounds alone decide.
    expect(decideStart(3n, { start: 0n, end: 500n }, 3n, 'unmarked')).toEqual({ resumeAt: 3n });
    expect(decideStart(3n, { start: 0n, end: 2n }, undefined, 'unreadable').mismatch?.problem).toBe('ahead-of-log');
  });
});
