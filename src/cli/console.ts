import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { pino } from 'pino';

import { consolePlugin } from '../console/fastify.js';
import { randomToken } from '../console/security.js';
import type { OncelyDatabase } from '../inbox/database.js';
import { createKafkaClient } from '../kafka/client.js';
import type { AnyHandlerDefinition } from '../pipeline/handler.js';
import { loadHandlers } from './dead-letters.js';

export interface ConsoleCommandOptions {
  readonly databaseUrl: string;
  readonly brokers?: string;
  readonly host: string;
  readonly port: number;
  readonly token?: string;
  readonly write?: boolean;
  readonly payloads?: boolean;
  readonly handlers?: string;
  readonly refresh?: number;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/**
 * `oncely console`: the operator console on Fastify, until Ctrl-C. Without --token a random one is
 * made and printed once, in the address to open.
 */
export async function runConsole(options: ConsoleCommandOptions): Promise<void> {
  const fastify = await import('fastify').catch(() => {
    throw new Error('oncely console is served by Fastify, an optional peer that is not installed: npm install fastify');
  });
  const generated = options.token === undefined || options.token === '';
  const token = generated ? randomToken() : (options.token ?? '');
  let handlers: AnyHandlerDefinition[] = [];
  let schema: Record<string, unknown> | undefined;
  if (options.handlers !== undefined) ({ handlers, schema } = await loadHandlers(options.handlers));
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 4 });
  pool.on('error', () => undefined);
  const brokers = (options.brokers ?? '')
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b !== '');
  const kafka =
    brokers.length === 0
      ? undefined
      : createKafkaClient({ clientId: 'oncely-console', brokers, connectionTimeoutMs: 3_000, retries: 1 });
  const app = fastify.default({ logger: false });
  try {
    await app.register(consolePlugin, {
      db: drizzle(pool, schema === undefined ? {} : { schema }) as OncelyDatabase,
      ...(kafka === undefined ? {} : { kafka }),
      token,
      write: options.write === true,
      payloads: options.payloads === true,
      handlers,
      ...(options.refresh === undefined ? {} : { refreshSeconds: options.refresh }),
      logger: pino({ name: 'oncely-console', level: process.env.ONCELY_LOG_LEVEL ?? 'warn' }),
    });
    await app.listen({ host: options.host, port: options.port });
    const address = app.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : options.port;
    const origin = `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`;
    const mode = [
      options.write === true ? 'write access' : 'read-only',
      options.payloads === true ? 'payloads shown' : 'payloads hidden',
      kafka === undefined ? 'no Kafka (no lag, no replays)' : `Kafka ${brokers.join(',')}`,
      handlers.length === 0 ? 'no handlers (dead letters cannot be retried)' : `${handlers.length} handler(s)`,
    ].join('; ');
    process.stdout.write(
      `oncely console on ${origin}/ (${mode})\n` +
        (generated
          ? `Open ${origin}/?token=${token}\n(a new token each start; give --token or ONCELY_CONSOLE_TOKEN to keep one)\n`
          : 'Sign in with the token given by --token / ONCELY_CONSOLE_TOKEN.\n') +
        (LOOPBACK.has(options.host)
          ? ''
          : 'Warning: served over plain HTTP beyond this machine: put it behind TLS (a reverse proxy) before using it over a network.\n') +
        'Ctrl-C stops it.\n',
    );
    await new Promise<void>((resolve) => {
      const onSignal = (): void => {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        resolve();
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
  } finally {
    await app.close();
    await pool.end();
  }
}
