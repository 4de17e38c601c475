import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { drizzle } from 'drizzle-orm/node-postgres';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';

import { createInboxConsumer } from '../../../src/index.js';
import { loadMigrations } from '../../../src/migrate/migrate.js';
import { outputOf, spawnOncely } from '../../support/cli.js';
import { effectHandler } from '../../support/effects.js';
import { databaseUrlFor, TEST_CONSUMER_CONFIG, TEST_SCHEMA_SQL, testPool } from '../../support/settings.js';

const children: ChildProcess[] = [];
let admin: pg.Client;
let url: string;
const database = `oncely_cli_${randomUUID().replaceAll('-', '').slice(0, 12)}`;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('databaseUrl') });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  url = databaseUrlFor(inject('databaseUrl'), database);
});

afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

afterAll(async () => {
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin.end();
});

function oncely(args: string[], env: Record<string, string | undefined> = {}): ChildProcess {
  const child = spawnOncely(args, env);
  children.push(child);
  return child;
}

function run(
  args: string[],
  env: Record<string, string | undefined> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return outputOf(oncely(args, env));
}

describe('oncely CLI', () => {
  it('prints the pending SQL with migrate --dry-run, applies it with migrate, and reports it with status', async () => {
    const dry = await run(['migrate', '--dry-run', '--database-url', url]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('CREATE TABLE oncely.inbox');

    const files = (await loadMigrations()).map((m) => m.name);
    const applied = await run(['migrate'], { DATABASE_URL: url });
    expect(applied).toMatchObject({ code: 0, stdout: `Applied ${files.join(', ')}.\n` });
    expect((await run(['migrate', '--database-url', url])).stdout).toBe(
      'The oncely schema is current; nothing to apply.\n',
    );

    const status = await run(['status', '--json', '--database-url', url]);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({
      migrations: { pending: [], applied: files.map((name, i) => ({ id: i + 1, name })) },
      groups: [],
    });
  });

  it('fails with a clear message and exit code 1 when the database is unreachable', async () => {
    const result = await run(['status', '--database-url', 'postgres://nobody@127.0.0.1:1/none']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^oncely: .*ECONNREFUSED/);
  });

  it('oncely dev prints the addresses, holds until Ctrl-C, then stops', async () => {
    const brokers = inject('kafkaBrokers').join(',');
    const child = oncely(['dev'], { KAFKA_BROKERS: brokers, DATABASE_URL: inject('databaseUrl') });
    const lines: string[] = [];
    const reader = createInterface({ input: child.stdout! });
    reader.on('line', (line) => lines.push(line));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await expect.poll(() => lines.length, { timeout: 30_000 }).toBeGreaterThanOrEqual(3);
    expect(lines.slice(0, 2)).toEqual([`KAFKA_BROKERS=${brokers}`, `DATABASE_URL=${inject('databaseUrl')}`]);

    // It holds: still running a while later.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(child.exitCode).toBeNull();

    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(lines.at(-1)).toBe('Stopped.');
  });

  it('lists, shows, retries (once) and discards dead letters', async () => {
    // A consumer dead-letters two messages in the migrated test database of this file.
    await run(['migrate', '--database-url', url]);
    const kafka = new Kafka({ brokers: inject('kafkaBrokers'), logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    const producer = kafka.producer();
    await Promise.all([admin.connect(), producer.connect()]);
    const topic = `cli-dl-${randomUUID().slice(0, 8)}`;
    const groupId = `cli-${randomUUID().slice(0, 8)}`;
    const pool = testPool(url, 4);
    try {
      await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
      await pool.query(TEST_SCHEMA_SQL);
      await producer.send({
        topic,
        messages: [
          { value: JSON.stringify({ amountCents: 5 }), headers: { 'message-id': 'to-retry' } },
          { value: 'not json', headers: { 'message-id': 'to-discard' } },
        ],
      });
      const failing = effectHandler(topic, () => {
        throw new Error('ledger service down');
      });
      const consumer = createInboxConsumer({
        kafka,
        db: drizzle(pool),
        groupId,
        handlers: [failing],
        retry: { attempts: 1 },
        logger: pino({ level: 'silent' }),
        consumer: TEST_CONSUMER_CONFIG,
      });
      let outcomes = 0;
      consumer.on('message:dead-lettered', () => void outcomes++);
      await consumer.start();
      await expect.poll(() => outcomes, { timeout: 30_000 }).toBe(2);
      await consumer.stop();

      // Into a pipe, without FORCE_COLOR: plain text (the colour rules: test/integration/cli/bad-input.test.ts).
      const table = await run(['dead-letters', 'list', '--group', groupId, '--database-url', url], {
        FORCE_COLOR: undefined,
        NO_COLOR: undefined,
      });
      expect(table.code).toBe(0);
      expect(table.stdout).toContain('handler_failed');
      expect(table.stdout).toContain('invalid_payload');
      expect(table.stdout).toContain(`${topic}/0/0`);
      expect(table.stdout).not.toContain('\u001b['); // a pipe gets no colours
      const listed = JSON.parse(
        (await run(['dead-letters', 'list', '--group', groupId, '--json', '--database-url', url])).stdout,
      ) as {
        id: string;
        messageId: string;
      }[];
      const idOf = (messageId: string): string => listed.find((l) => l.messageId === messageId)?.id ?? '';

      const shown = await run(['dead-letters', 'show', idOf('to-retry'), '--database-url', url]);
      expect(shown.stdout).toContain('message id  to-retry');
      expect(shown.stdout).toContain('{"amountCents":5}');
      expect(shown.stdout).toContain('ledger service down');

      const handlers = fileURLToPath(new URL('../fixtures/ledger-handlers.ts', import.meta.url));
      const retried = await run(
        ['dead-letters', 'retry', idOf('to-retry'), '--handlers', handlers, '--database-url', url],
        { TOPIC: topic },
      );
      expect(retried).toMatchObject({ code: 0, stdout: expect.stringContaining('processed on attempt 2') });
      const again = await run(
        ['dead-letters', 'retry', idOf('to-retry'), '--handlers', handlers, '--database-url', url],
        { TOPIC: topic },
      );
      expect(again).toMatchObject({ code: 0, stdout: expect.stringContaining('already retried') });
      const { rows } = await pool.query<{ message_id: string }>('SELECT message_id FROM effects WHERE topic = $1', [
        topic,
      ]);
      expect(rows).toEqual([{ message_id: 'to-retry' }]);

      const discarded = await run([
        'dead-letters',
        'discard',
        idOf('to-discard'),
        '--reason',
        'garbage from a test producer',
        '--json',
        '--database-url',
        url,
      ]);
      expect(JSON.parse(discarded.stdout)).toMatchObject({ outcome: 'discarded' });
      expect((await run(['dead-letters', 'list', '--group', groupId, '--database-url', url])).stdout).toBe(
        'No open dead letters.\n',
      );
      // One count of dead letters, by status, from one table.
      const status = await run(['status', '--database-url', url]);
      expect(status.stdout).toContain('dead letters 2 (open 0, retried 1, discarded 1)');
    } finally {
      await Promise.all([admin.disconnect(), producer.disconnect()]);
      await pool.end();
    }
  });
});
