import { createKafkaClient } from '../kafka/client.js';
import pg from 'pg';
import { pino } from 'pino';

import { configError } from '../errors.js';
import { createOutboxRelay } from '../outbox/relay.js';
import { discardParked, listOutbox, type OutboxStatus, retryParked } from '../outbox/store.js';
import { table as outputTable } from './output.js';

interface Common {
  readonly databaseUrl: string;
  readonly json?: boolean;
}

const print = (text: string): boolean => process.stdout.write(`${text}\n`);

async function withPool<T>(url: string, work: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  try {
    return await work(pool);
  } finally {
    await pool.end();
  }
}

/** `oncely relay`: runs an outbox relay until SIGTERM/SIGINT (one active per database; others stand by). */
export async function runRelay(options: {
  databaseUrl: string;
  brokers: string;
  batchSize?: number;
  pollInterval?: number;
}): Promise<void> {
  const brokers = options.brokers
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b.length > 0);
  if (brokers.length === 0) throw configError('brokers', 'give --brokers host:port[,host:port] or set KAFKA_BROKERS');
  const logger = pino({ name: 'oncely', level: process.env.ONCELY_LOG_LEVEL ?? 'info' });
  const relay = createOutboxRelay({
    db: options.databaseUrl,
    // kafkajs's own log (a stack trace per failed connection attempt) only at ONCELY_LOG_LEVEL=debug:
    // the relay warns once per backoff when it cannot reach the broker.
    kafka: createKafkaClient({ clientId: 'oncely-relay', brokers, logger }),
    logger,
    ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
    ...(options.pollInterval === undefined ? {} : { pollIntervalMs: options.pollInterval }),
  });
  await relay.start();
  await new Promise<void>((resolve) => {
    const onSignal = (): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  await relay.stop();
}

export async function runOutboxList(
  options: Common & { status: OutboxStatus | 'all'; topic?: string; limit: number },
): Promise<void> {
  const entries = await withPool(options.databaseUrl, (pool) =>
    listOutbox(pool, {
      status: options.status,
      limit: options.limit,
      ...(options.topic === undefined ? {} : { topic: options.topic }),
    }),
  );
  if (options.json === true) {
    print(JSON.stringify(entries, null, 2));
    return;
  }
  if (entries.length === 0) {
    print(`No ${options.status === 'all' ? '' : `${options.status} `}outbox events.`);
    return;
  }
  const table = outputTable(['id', 'status', 'topic', 'key', 'message-id', 'attempts', 'error', 'created']);
  for (const e of entries) {
    const last = (e.lastError ?? {}) as { code?: string; message?: string };
    const error = `${last.code ?? ''} ${last.message ?? ''}`;
    table.push([
      e.id,
      e.status,
      e.topic,
      e.key ?? '',
      e.messageId,
      e.attempts,
      error.trim().slice(0, 60),
      e.createdAt.toISOString(),
    ]);
  }
  print(table.toString());
}

export async function runOutboxRetry(
  id: string | undefined,
  options: Common & { all?: boolean; topic?: string },
): Promise<void> {
  if (id === undefined && options.all !== true) throw configError('id', 'give an outbox id, or --all');
  const changed = await withPool(options.databaseUrl, (pool) =>
    retryParked(pool, id === undefined ? [] : [id], options.topic),
  );
  if (options.json === true) print(JSON.stringify({ retried: changed }));
  else print(changed === 0 ? 'No parked event matched.' : `${changed} parked event(s) back to pending.`);
  if (changed === 0) process.exitCode = 1;
}

export async function runOutboxDiscard(id: string, options: Common & { reason: string }): Promise<void> {
  const changed = await withPool(options.databaseUrl, (pool) => discardParked(pool, [id], options.reason));
  if (options.json === true) print(JSON.stringify({ discarded: changed }));
  else print(changed === 0 ? `Outbox event ${id} is not parked; nothing discarded.` : `Outbox event ${id} discarded.`);
  if (changed === 0) process.exitCode = 1;
}
