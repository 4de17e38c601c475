import { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs';
import pg from 'pg';
import { describe, expect, it } from 'vitest';

import { hasErrorCode, OncelyError } from '../../../src/errors.js';
import { startError } from '../../../src/pipeline/lifecycle/start-errors.js';

const pgError = (code: string, message: string) =>
  Object.assign(new pg.DatabaseError(message, 0, 'error'), { code, severity: 'FATAL' });
const protocolError = (type: string, code: number, retriable: boolean) =>
  new KafkaJSProtocolError({ type, code, retriable, message: type } as unknown as string);

describe('startError', () => {
  it('passes OncelyErrors and errors of neither kafkajs nor pg through unchanged', () => {
    const own = new OncelyError('ONCELY_SCHEMA_TOO_NEW', 'newer');
    expect(startError(own)).toBe(own);
    const bug = new TypeError('x is undefined');
    expect(startError(bug)).toBe(bug);
  });

  it('wraps a broker that cannot be reached as ONCELY_KAFKA_UNREACHABLE, retriable, the kafkajs error as cause', () => {
    const refused = new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:1');
    const exhausted = new KafkaJSNumberOfRetriesExceeded(refused, { retryCount: 5, retryTime: 1000 });
    const wrapped = startError(exhausted, { groupId: 'ledger' });
    expect(hasErrorCode(wrapped, 'ONCELY_KAFKA_UNREACHABLE')).toBe(true);
    expect(wrapped).toMatchObject({ retriable: true, cause: exhausted, context: { groupId: 'ledger' } });
  });

  it('wraps what the broker refuses as ONCELY_KAFKA_ERROR with kafkajs’s retriable flag', () => {
    const denied = startError(protocolError('GROUP_AUTHORIZATION_FAILED', 30, false));
    expect(denied).toMatchObject({
      code: 'ONCELY_KAFKA_ERROR',
      retriable: false,
      context: { kafkaError: 'GROUP_AUTHORIZATION_FAILED' },
    });
    expect((denied as Error).message).toMatch(/ACLs/);
    const electing = startError(protocolError('LEADER_NOT_AVAILABLE', 5, true));
    expect(electing).toMatchObject({ code: 'ONCELY_KAFKA_ERROR', retriable: true });
  });

  it('wraps pg errors: an outage as ONCELY_DATABASE_UNREACHABLE, a refusal as ONCELY_DATABASE_ERROR with the fix', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    expect(startError(refused)).toMatchObject({ code: 'ONCELY_DATABASE_UNREACHABLE', retriable: true, cause: refused });
    expect(startError(pgError('57P03', 'the database system is starting up'))).toMatchObject({
      code: 'ONCELY_DATABASE_UNREACHABLE',
      retriable: true,
    });
    const password = startError(pgError('28P01', 'password authentication failed for user "app"'));
    expect(password).toMatchObject({ code: 'ONCELY_DATABASE_ERROR', retriable: false, context: { sqlState: '28P01' } });
    expect((password as Error).message).toMatch(/password in `DATABASE_URL`/);
    expect((startError(pgError('42501', 'permission denied for schema oncely')) as Error).message).toMatch(/privilege/);
  });
});
