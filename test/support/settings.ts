import type { ConsumerConfig } from 'kafkajs';
import pg from 'pg';

/**
 * Broker settings for the test broker only: a new group starts at once, and test consumers may use
 * short session timeouts so a killed member is noticed in seconds instead of Kafka's default 45 s.
 */
export const TEST_BROKER_PROPERTIES: Record<string, string> = {
  'group.initial.rebalance.delay.ms': '0',
  'group.min.session.timeout.ms': '1000',
};

/** Consumer settings for tests: quick failure detection and short fetch waits. */
export const TEST_CONSUMER_CONFIG: Omit<ConsumerConfig, 'groupId'> = {
  sessionTimeout: 6_000,
  rebalanceTimeout: 10_000,
  heartbeatInterval: 500,
  maxWaitTimeInMs: 100,
};

/** `url` with its database name replaced. */
export function databaseUrlFor(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/**
 * The tests' own effect table. Deliberately without a unique constraint on message_id: a message
 * applied twice must show up as two rows, not be hidden by a constraint violation.
 */
export const TEST_SCHEMA_SQL = `
CREATE TABLE effects (
  id          bigserial PRIMARY KEY,
  message_id  text NOT NULL,
  topic       text NOT NULL,
  partition   integer NOT NULL,
  "offset"    bigint NOT NULL,
  consumer    text,
  payload     jsonb,
  applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
`;

/**
 * A pool for tests. pg re-emits the error of an idle connection on the Pool and, with no listener,
 * that throws: a test database dropped WITH (FORCE) while a closed pool's sockets are still
 * closing would fail the run.
 */
export function testPool(connectionString: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString, max });
  pool.on('error', () => undefined);
  return pool;
}
