/**
 * A second group on the payments topic that publishes too: `audit` records every payment event it
 * sees and publishes one `payment.audited` event per message through its own outbox relay. With the
 * ledger group it is the combination a payments team runs — two groups, one topic, both publishing
 * for the same message — and its checker proves the two never collide: each group applies each
 * message once, and each published event has an id of its own group (DESIGN.md §3a).
 */
import { drizzle } from 'drizzle-orm/node-postgres';
import { pgSchema, text } from 'drizzle-orm/pg-core';
import type { Kafka } from 'kafkajs';
import type pg from 'pg';
import type { Logger } from 'pino';

import { derivedMessageId } from '../src/outbox/message-id.js';
import { createInboxConsumer, defineHandler, type InboxConsumer } from '../src/index.js';
import type { Expectation } from './checker.js';

const audit = pgSchema('audit');

/** One row per applied message; no unique constraint, so a double apply shows. */
const seen = audit.table('seen', { messageId: text('message_id').notNull() });

export const AUDIT_DDL = `
CREATE SCHEMA IF NOT EXISTS audit;
CREATE TABLE IF NOT EXISTS audit.seen (message_id text NOT NULL);
`;

/** The audit group: records each payment event and publishes one `payment.audited` event for it. */
export function createAuditConsumer(options: {
  readonly kafka: Kafka;
  readonly pool: pg.Pool;
  readonly topic: string;
  readonly auditedTopic: string;
  readonly groupId: string;
  readonly logger: Logger;
}): InboxConsumer {
  const handler = defineHandler({
    topic: options.topic,
    async handle(_event, ctx) {
      await ctx.tx.insert(seen).values({ messageId: ctx.messageId });
      await ctx.publish({ topic: options.auditedTopic, key: ctx.messageId, value: { source: ctx.messageId } });
    },
  });
  return createInboxConsumer({
    kafka: options.kafka,
    db: drizzle(options.pool),
    groupId: options.groupId,
    handlers: [handler],
    concurrency: 3,
    logger: options.logger,
    relay: { pollIntervalMs: 200 },
    consumer: { sessionTimeout: 6_000, heartbeatInterval: 1_000 },
  });
}

export interface AuditVerdict {
  readonly applied: number;
  readonly lost: number;
  readonly doubled: number;
  readonly violations: string[];
}

/**
 * Every payment the ledger applied was audited exactly once, and each audit published exactly one
 * event whose id is derived in the audit group's own scope; no audit message was dead-lettered for
 * a handler failure (a collision with the ledger group's events would be one).
 */
export async function checkAudit(pool: pg.Pool, groupId: string, expected: Expectation): Promise<AuditVerdict> {
  const violations: string[] = [];
  const { rows } = await pool.query<{ message_id: string; n: string }>(
    'SELECT message_id, count(*) AS n FROM audit.seen GROUP BY message_id',
  );
  const audited = new Map(rows.map((r) => [r.message_id, Number(r.n)]));
  const lost = [...expected.ledger.keys()].filter((id) => !audited.has(id));
  const doubled = rows.filter((r) => Number(r.n) > 1).map((r) => r.message_id);
  if (lost.length > 0)
    violations.push(`audit: ${lost.length} events not audited (e.g. ${lost.slice(0, 5).join(', ')})`);
  if (doubled.length > 0)
    violations.push(`audit: ${doubled.length} events audited twice (e.g. ${doubled.slice(0, 5).join(', ')})`);

  const { rows: events } = await pool.query<{ message_id: string; causation_id: string; status: string }>(
    "SELECT message_id, causation_id, status FROM oncely.outbox WHERE message_id LIKE 'event:%' AND causation_id = ANY($1)",
    [[...audited.keys()]],
  );
  const ours = events.filter((e) => e.message_id === derivedMessageId(groupId, e.causation_id, 0));
  if (ours.length !== audited.size)
    violations.push(`audit: ${audited.size} messages audited but ${ours.length} audit events in the outbox`);
  const unsent = ours.filter((e) => e.status !== 'sent').length;
  if (unsent > 0) violations.push(`audit: ${unsent} audit events not sent`);

  const { rows: failed } = await pool.query<{ n: string }>(
    "SELECT count(*) AS n FROM oncely.dead_letters WHERE consumer_group = $1 AND reason = 'handler_failed'",
    [groupId],
  );
  if (Number(failed[0]?.n) > 0) violations.push(`audit: ${failed[0]?.n} messages dead-lettered handler_failed`);
  return { applied: audited.size, lost: lost.length, doubled: doubled.length, violations };
}
