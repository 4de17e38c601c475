import { Writable } from 'node:stream';

import { type Logger, pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';

import { createKafkaClient } from '../../../src/kafka/client.js';

/** A pino logger at `level` whose lines are kept in `lines`. */
function captured(level: 'info' | 'debug'): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level }, sink), lines };
}

// A kafkajs connection error, as kafkajs logs it on every failed attempt (constructing opens nothing).
const logConnectionError = (client: ReturnType<typeof createKafkaClient>): void =>
  client.logger().error('[Connection] Connection error: connect ECONNREFUSED 127.0.0.1:1', {
    broker: '127.0.0.1:1',
    stack: 'Error: connect ECONNREFUSED 127.0.0.1:1\n    at TCPConnectWrap.afterConnect',
  });

describe("oncely's own Kafka clients", () => {
  it('print nothing of kafkajs by default: a failed start reports itself once, without its stack traces', async () => {
    const { logger, lines } = captured('info');
    // kafkajs's default log goes to the console.
    const consoleCalls = (['log', 'info', 'warn', 'error'] as const).map((name) =>
      vi.spyOn(console, name).mockImplementation(() => undefined),
    );
    try {
      logConnectionError(createKafkaClient({ clientId: 'test', brokers: '127.0.0.1:1', logger }));
      logConnectionError(createKafkaClient({ clientId: 'test', brokers: '127.0.0.1:1' }));
      await new Promise((resolve) => setImmediate(resolve));
      expect(lines).toEqual([]);
      expect(consoleCalls.map((spy) => spy.mock.calls.length)).toEqual([0, 0, 0, 0]);
    } finally {
      for (const spy of consoleCalls) spy.mockRestore();
    }
  });

  it("send kafkajs's entries to the oncely logger at debug, with their fields", async () => {
    const { logger, lines } = captured('debug');
    logConnectionError(createKafkaClient({ clientId: 'test', brokers: '127.0.0.1:1', logger }));
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 20,
      component: 'kafkajs',
      kafkajsLevel: 'ERROR',
      broker: '127.0.0.1:1',
      msg: '[Connection] Connection error: connect ECONNREFUSED 127.0.0.1:1',
    });
  });
});
