/**
 * The benchmark's events: payment events of about 200 bytes, produced once before the variants run.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';

import type { Message, Producer } from 'kafkajs';

import { seededRandom } from '../src/testing/seeded-random.js';
import { EVENT_BYTES, type PaymentCaptured, PARTITIONS } from './workload.js';

/** One event's JSON, padded through `reference` to exactly EVENT_BYTES (all characters are ASCII). */
function eventJson(n: number, next: () => number): { value: string; amountCents: number; accountId: string } {
  const amountCents = 100 + Math.floor(next() * 99_900);
  const event: PaymentCaptured = {
    type: 'payment.captured',
    paymentId: `pay_${n.toString(36).padStart(8, '0')}`,
    accountId: `acct-${Math.floor(next() * 1000)}`,
    amountCents,
    currency: 'EUR',
    capturedAt: new Date(Date.UTC(2026, 0, 1) + n * 1000).toISOString(),
    reference: '',
  };
  const bare = JSON.stringify(event).length;
  event.reference = 'r'.repeat(Math.max(0, EVENT_BYTES - bare));
  return { value: JSON.stringify(event), amountCents, accountId: event.accountId };
}

export interface Produced {
  readonly events: number;
  /** Sum of every event's amount: what each ledger must add up to. */
  readonly totalCents: number;
  /** Per partition, the offset after its last message (the topic is fresh: offsets start at 0). */
  readonly endOffsets: number[];
  readonly seconds: number;
}

/**
 * Produces `events` payment events once, round-robin over the partitions so each holds a quarter
 * of them. Big sends and several in flight: producing is setup, not what is measured.
 */
export async function produceEvents(producer: Producer, topic: string, events: number): Promise<Produced> {
  const next = seededRandom(20261123);
  const started = performance.now();
  const perSend = 4_000;
  const inFlight = 4;
  let totalCents = 0;
  const endOffsets = new Array<number>(PARTITIONS).fill(0);
  for (let wave = 0; wave < events; wave += perSend * inFlight) {
    const sends: Promise<unknown>[] = [];
    for (let start = wave; start < Math.min(events, wave + perSend * inFlight); start += perSend) {
      const messages: Message[] = [];
      for (let n = start; n < Math.min(events, start + perSend); n++) {
        const { value, amountCents, accountId } = eventJson(n, next);
        totalCents += amountCents;
        const partition = n % PARTITIONS;
        endOffsets[partition] = (endOffsets[partition] ?? 0) + 1;
        // Keyed by account, as payment topics are: lanes (GK, SK) keep each account's events in order.
        messages.push({ key: accountId, value, partition, headers: { 'message-id': randomUUID() } });
      }
      // acks -1: the broker has every message before any consumer starts; no compression, so
      // consumers pay for decoding records only, as most payment topics are configured.
      sends.push(producer.send({ topic, messages, acks: -1 }));
    }
    await Promise.all(sends);
  }
  return { events, totalCents, endOffsets, seconds: (performance.now() - started) / 1000 };
}
