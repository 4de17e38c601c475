import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { drizzle } from 'drizzle-orm/node-postgres';
import { describe, expect, it } from 'vitest';

import { publish } from '../../../src/index.js';
import { useTestEnvironment, waitFor } from '../../support/integration.js';
import { readTopic } from './support.js';

const env = useTestEnvironment();
const cli = fileURLToPath(new URL('../../../src/cli/main.ts', import.meta.url));

function oncely(args: string[]): { done: Promise<{ code: number | null; stdout: string }>; stop: () => void } {
  const child = spawn(process.execPath, ['--import', 'tsx', cli, ...args, '--database-url', env.databaseUrl], {
    env: { ...process.env, KAFKA_BROKERS: env.brokers.join(','), ONCELY_LOG_LEVEL: 'silent' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  const done = new Promise<{ code: number | null; stdout: string }>((resolve) =>
    child.once('exit', (code) => resolve({ code, stdout })),
  );
  return { done, stop: () => child.kill('SIGTERM') };
}

describe('oncely relay and oncely outbox', () => {
  it('lists a parked event, retries it once its topic exists, and `oncely relay` sends it', async () => {
    await env.pool.query('DELETE FROM oncely.outbox');
    const topic = `ob-cli-${Date.now()}`;
    await drizzle(env.pool).transaction((tx) =>
      publish(tx, { topic, key: 'acct', value: { n: 1 } }, { messageId: 'cli-1' }),
    );
    await env.pool.query("UPDATE oncely.outbox SET status = 'parked', last_error = $1", [
      JSON.stringify({ code: 'UNKNOWN_TOPIC_OR_PARTITION', message: `topic "${topic}" does not exist` }),
    ]);
    const listed = await oncely(['outbox', 'list', '--json']).done;
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([
      expect.objectContaining({ messageId: 'cli-1', status: 'parked', topic, key: 'acct' }),
    ]);

    await env.admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
    const relay = oncely(['relay']);
    expect((await oncely(['outbox', 'retry', '--all']).done).stdout).toContain('1 parked event(s) back to pending');
    const received = await readTopic(env.kafka, topic, (r) => r.length >= 1);
    expect(received[0]?.headers['message-id']).toBe('cli-1');
    await waitFor('the event marked sent', async () => {
      const { rows } = await env.pool.query("SELECT 1 FROM oncely.outbox WHERE status = 'sent'");
      return rows.length === 1;
    });
    relay.stop();
    expect((await relay.done).code).toBe(0);
  });
});
