import { Kafka } from 'kafkajs';
import { describe, expect, it } from 'vitest';

import { recordsAt } from '../../../src/kafka/offsets.js';

describe('recordsAt', () => {
  it('finds the kafkajs cluster factory it fetches one record with (a kafkajs upgrade must not break it quietly)', () => {
    const kafka = new Kafka({ brokers: ['127.0.0.1:1'] });
    const symbol = Object.getOwnPropertySymbols(kafka).find((s) => s.description === 'private:Kafka:createCluster');
    expect(typeof (symbol === undefined ? undefined : (kafka as unknown as Record<symbol, unknown>)[symbol])).toBe(
      'function',
    );
  });

  it('asks nothing when there is nothing to compare', async () => {
    expect(await recordsAt(new Kafka({ brokers: ['127.0.0.1:1'] }), 't', new Map())).toEqual(new Map());
  });
});
