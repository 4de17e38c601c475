import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import { duration, nonEmpty, wholeNumber } from '../../../src/cli/arguments.js';
import { colourEnabled, colours, parseDeadLetterId } from '../../../src/cli/output.js';
import { failureLine } from '../../../src/operator/failure.js';
import { formatStoredError, readableMessage } from '../../../src/operator/stored-error.js';
import { OncelyError } from '../../../src/errors.js';
import { formatDuration } from '../../../src/cli/replay.js';
import { describeError } from '../../../src/pipeline/record/error-record.js';

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

  it('colours a terminal, never with NO_COLOR, and a pipe only with FORCE_COLOR (not 0 or false)', () => {
    const tty = { isTTY: true };
    const pipe = { isTTY: false };
    expect(colours(pipe, {}).red('FAIL')).toBe('FAIL');
    expect(colours(tty, {}).red('FAIL')).toBe('\u001b[31mFAIL\u001b[0m');
    expect(colourEnabled(tty, { TERM: 'dumb' })).toBe(false);
    expect(colourEnabled(tty, { NO_COLOR: '1' })).toBe(false);
    expect(colourEnabled(tty, { NO_COLOR: '' })).toBe(true);
    expect(colourEnabled(pipe, { FORCE_COLOR: '1' })).toBe(true);
    expect(colourEnabled(pipe, { FORCE_COLOR: 'true' })).toBe(true);
    expect(colourEnabled(tty, { FORCE_COLOR: '0' })).toBe(false);
    expect(colourEnabled(tty, { FORCE_COLOR: 'false' })).toBe(false);
    expect(colourEnabled(pipe, { FORCE_COLOR: '1', NO_COLOR: '1' })).toBe(false);
  });

  it('says in one line what failed and how to fix it, for oncely, pg and kafkajs errors', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    expect(failureLine(refused)).toBe(
      'oncely: cannot reach PostgreSQL (connect ECONNREFUSED 127.0.0.1:1): check --database-url / DATABASE_URL and that PostgreSQL accepts connections from here',
    );
    const missingTable = Object.assign(new Error('relation "oncely.outbox" does not exist'), {
      severity: 'ERROR',
      code: '42P01',
    });
    expect(failureLine(missingTable)).toMatch(/SQLSTATE 42P01\): run `oncely migrate`/);
    const kafka = Object.assign(new Error('Connection error: connect ECONNREFUSED 127.0.0.1:1'), {
      name: 'KafkaJSNumberOfRetriesExceeded',
      cause: Object.assign(new Error('Connection error'), { name: 'KafkaJSConnectionError' }),
    });
    expect(failureLine(kafka)).toMatch(/^oncely: cannot reach Kafka .*check --brokers \/ KAFKA_BROKERS/);
    const topic = Object.assign(new Error('This server does not host this topic-partition'), {
      name: 'KafkaJSProtocolError',
      type: 'UNKNOWN_TOPIC_OR_PARTITION',
    });
    expect(failureLine(topic)).toMatch(/check --topic/);
    expect(failureLine(new OncelyError('ONCELY_CONFIG', 'Bad.\nGive a good one.'))).toBe(
      'oncely: Bad. Give a good one. (ONCELY_CONFIG)',
    );
  });

  it('reads whole numbers and durations, refusing anything else by the option it came with', () => {
    expect(wholeNumber(1)('25')).toBe(25);
    for (const bad of ['abc', '-1', '0', '1.5', '1e3', '']) {
      expect(() => wholeNumber(1)(bad)).toThrow(InvalidArgumentError);
    }
    expect(wholeNumber(0)('0')).toBe(0);
    expect(nonEmpty('a URL')('postgres://db')).toBe('postgres://db');
    expect(() => nonEmpty('a URL')(' ')).toThrow(/It is empty: give a URL/);
    expect(duration('12h')).toBe(12 * 3_600_000);
    expect(() => duration('7days')).toThrow(/Give a duration such as 7d/);
    expect([
      formatDuration(7 * 86_400_000),
      formatDuration(3_600_000),
      formatDuration(0),
      formatDuration(1_500),
    ]).toEqual(['7d', '1h', '0ms', '1500ms']);
  });
});
