import type { Kafka } from 'kafkajs';
import { describe, expect, it } from 'vitest';

import { OncelyError } from '../../../src/errors.js';
import { createKafkaRunner, type KafkaRunnerOptions } from '../../../src/kafka/runner.js';

/**
 * A stand-in for the kafkajs client, to test the runner's own decisions (which start failures it
 * retries, how it stops). What happens against a real broker is tested in test/integration.
 */
function fakeKafka(behaviour: { listTopics: () => Promise<string[]>; disconnect?: () => Promise<void> }) {
  const calls = { listTopics: 0, disconnects: 0 };
  const kafka = {
    admin: () => ({
      connect: () => Promise.resolve(),
      disconnect: () => Promise.resolve(),
      listTopics: () => {
        calls.listTopics += 1;
        return behaviour.listTopics();
      },
    }),
    consumer: () => ({
      events: { GROUP_JOIN: 'join', CRASH: 'crash' },
      on: () => undefined,
      connect: () => Promise.resolve(),
      subscribe: () => Promise.resolve(),
      run: () => Promise.resolve(),
      disconnect: () => {
        calls.disconnects += 1;
        return behaviour.disconnect?.() ?? Promise.resolve();
      },
    }),
  } as unknown as Kafka;
  return { kafka, calls };
}

function runnerFor(kafka: Kafka, retries: unknown[] = [], startTimeoutMs = 30_000) {
  const options: KafkaRunnerOptions = {
    kafka,
    groupId: 'g',
    topics: ['t'],
    concurrency: 1,
    fromBeginning: true,
    consumerConfig: {},
    onBatch: () => Promise.resolve(),
    onGroupJoin: () => undefined,
    onCrash: () => undefined,
    onStartRetry: (error) => void retries.push(error),
    startTimeoutMs,
  };
  return createKafkaRunner(options);
}

const connectionRefused = Object.assign(new Error('Connection error: connect ECONNREFUSED'), {
  name: 'KafkaJSConnectionError',
  retriable: true,
});

describe('createKafkaRunner', () => {
  it('retries a start that failed because the broker could not be reached', async () => {
    let failures = 2;
    const { kafka, calls } = fakeKafka({
      listTopics: () => (failures-- > 0 ? Promise.reject(connectionRefused) : Promise.resolve(['t'])),
    });
    const retries: unknown[] = [];
    await runnerFor(kafka, retries).start();
    expect(calls.listTopics).toBe(3);
    expect(retries).toEqual([connectionRefused, connectionRefused]);
  });

  it('gives up after startTimeoutMs with ONCELY_KAFKA_UNREACHABLE, the last kafkajs error as its cause', async () => {
    const { kafka } = fakeKafka({ listTopics: () => Promise.reject(connectionRefused) });
    const started = Date.now();
    const failure = await runnerFor(kafka, [], 400)
      .start()
      .catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'ONCELY_KAFKA_UNREACHABLE', retriable: true, cause: connectionRefused });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('does not retry its own errors, such as a missing topic', async () => {
    const { kafka, calls } = fakeKafka({ listTopics: () => Promise.resolve(['other']) });
    await expect(runnerFor(kafka).start()).rejects.toMatchObject({ code: 'ONCELY_TOPIC_NOT_FOUND' });
    expect(calls.listTopics).toBe(1);
  });

  it('retries the TypeError kafkajs throws on an empty metadata answer from a broker going down, and no other TypeError', async () => {
    const emptyMetadata = new TypeError(
      "Cannot destructure property 'topicMetadata' of '(intermediate value)' as it is null.",
    );
    emptyMetadata.stack =
      `TypeError: ${emptyMetadata.message}\n` +
      '    at Object.fetchTopicMetadata (/app/node_modules/kafkajs/src/admin/index.js:591:24)\n' +
      '    at async assertTopicsExist (/app/dist/kafka/runner.js:330:26)';
    let failures = 1;
    const flaky = fakeKafka({
      listTopics: () => (failures-- > 0 ? Promise.reject(emptyMetadata) : Promise.resolve(['t'])),
    });
    const retries: unknown[] = [];
    await runnerFor(flaky.kafka, retries).start();
    expect(retries).toEqual([emptyMetadata]);

    // A TypeError of anyone else's code is a bug to see at once, not an outage to wait out.
    const ours = new TypeError('x is not a function');
    const broken = fakeKafka({ listTopics: () => Promise.reject(ours) });
    await expect(runnerFor(broken.kafka).start()).rejects.toBe(ours);
    expect(broken.calls.listTopics).toBe(1);
  });

  it('stops retrying once the start is no longer wanted (the consumer is stopping)', async () => {
    const { kafka, calls } = fakeKafka({ listTopics: () => Promise.reject(connectionRefused) });
    await expect(runnerFor(kafka).start(() => false)).rejects.toBe(connectionRefused);
    expect(calls.listTopics).toBe(1);
  });

  it('stops quietly when the broker cannot be reached, reporting the error', async () => {
    const gone = new OncelyError('ONCELY_STOPPING', 'broker gone');
    const { kafka } = fakeKafka({ listTopics: () => Promise.resolve(['t']), disconnect: () => Promise.reject(gone) });
    const runner = runnerFor(kafka);
    await runner.start();
    const reported: unknown[] = [];
    await runner.stopQuietly((error) => void reported.push(error));
    expect(reported).toEqual([gone]);
  });
});
