import { Kafka } from 'kafkajs';
import { describe, expect, it } from 'vitest';

import { hasErrorCode } from '../../../src/errors.js';
import { lockSessionSettings } from '../../../src/outbox/lock-session.js';
import { createOutboxRelay } from '../../../src/outbox/relay.js';

describe("the relay lock's lease", () => {
  it('G8: makes PostgreSQL end a silent lock session within the lease, by the idle timeout and by TCP', () => {
    expect(lockSessionSettings(30_000, 150_000)).toEqual({
      idle_session_timeout: '30000',
      idle_in_transaction_session_timeout: '30000',
      statement_timeout: '15000',
      tcp_keepalives_idle: '10',
      tcp_keepalives_interval: '5',
      tcp_keepalives_count: '3',
      tcp_user_timeout: '30000',
    });
    // Keepalive idle + interval × count stays within the lease.
    const short = lockSessionSettings(3_000, 150_000);
    expect(
      Number(short.tcp_keepalives_idle) + Number(short.tcp_keepalives_interval) * Number(short.tcp_keepalives_count),
    ).toBeLessThanOrEqual(4);
  });

  it('leaves idle_session_timeout out before PostgreSQL 14, which has no such setting', () => {
    expect(lockSessionSettings(30_000, 130_000)).not.toHaveProperty('idle_session_timeout');
  });

  it('refuses a lease shorter than a second', () => {
    const error = (() => {
      try {
        createOutboxRelay({
          db: 'postgres://127.0.0.1:1/x',
          kafka: new Kafka({ brokers: ['127.0.0.1:1'] }),
          lockLeaseMs: 500,
        });
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(hasErrorCode(error, 'ONCELY_CONFIG')).toBe(true);
    expect((error as Error).message).toContain('relay.lockLeaseMs');
  });
});
