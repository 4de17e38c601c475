import { describe, expect, it } from 'vitest';

import { deadLetterOutboxId, derivedMessageId, httpEventId, uuidv7 } from '../../../src/outbox/message-id.js';
import { outboxRow } from '../../../src/outbox/publish.js';

describe('outbox message ids', () => {
  it('makes RFC 9562 version-7 UUIDs that carry the time and sort by it', () => {
    const id = uuidv7(0x0190_0000_0001);
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(id.slice(0, 13)).toBe('01900000-0001');
    const ids = [uuidv7(1_700_000_000_000), uuidv7(1_700_000_000_001), uuidv7(1_800_000_000_000)];
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(Array.from({ length: 1000 }, () => uuidv7(1)))).toHaveProperty('size', 1000);
  });

  it('derives event ids from (scope, inbound id, n), pinned: this format is frozen', () => {
    expect(derivedMessageId('billing', 'payment-1', 0)).toBe('event:7:billing:9:payment-1:n0');
    expect(derivedMessageId('shipping', 'orders/0/42', 3)).toBe('event:8:shipping:11:orders/0/42:n3');
    expect(deadLetterOutboxId('ledger', 'payments', 1, '42')).toBe('dead-letter:6:ledger:13:payments/1/42');
  });

  it('derives HTTP event ids from (scope, key, generation, n), pinned: this format is frozen', () => {
    expect(httpEventId('acme', 'k-1', 7n, 0)).toBe('http-event:4:acme:3:k-1:g7:n0');
    // A key reused after its ttl (a new generation) never repeats an id; nor does a Kafka event.
    expect(httpEventId('acme', 'k-1', 8n, 0)).not.toBe(httpEventId('acme', 'k-1', 7n, 0));
    expect(httpEventId('acme', 'k-1', 1, 0)).not.toBe(derivedMessageId('acme', 'k-1', 0));
    expect(httpEventId('a:b', 'c', 1, 0)).not.toBe(httpEventId('a', 'b:c', 1, 0));
  });

  it('gives two groups that publish for one inbound message two different event ids', () => {
    expect(derivedMessageId('billing', 'payment-1', 0)).not.toBe(derivedMessageId('shipping', 'payment-1', 0));
    expect(derivedMessageId('a:b', 'c', 0)).not.toBe(derivedMessageId('a', 'b:c', 0));
  });

  it('digests an event id that would pass 255 characters, deterministically, behind a readable prefix', () => {
    const long = 'x'.repeat(255);
    const id = derivedMessageId('ledger', long, 7);
    expect(id).toMatch(/^event#6:ledger:255:x+~[A-Za-z0-9_-]{43}$/);
    expect([...id]).toHaveLength(255);
    expect(derivedMessageId('ledger', long, 7)).toBe(id);
    expect(derivedMessageId('ledger', long, 8)).not.toBe(id);
    expect(deadLetterOutboxId('g'.repeat(255), 't', 0, '1')).toMatch(/^dead-letter#[^~]+~[A-Za-z0-9_-]{43}$/);
  });

  it('sets message-id, causation-id and traceparent, encodes JSON values and keeps bytes as they are', () => {
    const row = outboxRow(
      { topic: 'ledger.posted', key: 'acct-1', value: { cents: 5 }, headers: { tenant: 't-1' } },
      { messageId: 'p-1:0', causationId: 'p-1', traceparent: '00-aa-bb-01' },
    );
    expect(row).toMatchObject({ messageId: 'p-1:0', topic: 'ledger.posted', causationId: 'p-1' });
    expect(row.key?.toString()).toBe('acct-1');
    expect(row.value?.toString()).toBe('{"cents":5}');
    expect(row.headers).toEqual([
      { key: 'tenant', value: 't-1', encoding: 'utf8' },
      { key: 'message-id', value: 'p-1:0', encoding: 'utf8' },
      { key: 'causation-id', value: 'p-1', encoding: 'utf8' },
      { key: 'traceparent', value: '00-aa-bb-01', encoding: 'utf8' },
    ]);
    expect(outboxRow({ topic: 't', value: Buffer.from([0xff, 0]) }).value).toEqual(Buffer.from([0xff, 0]));
    expect(outboxRow({ topic: 't', value: null }).value).toBeNull();
    expect(outboxRow({ topic: 't', value: 1 }).messageId).toMatch(/-7[0-9a-f]{3}-/);
  });

  it('refuses events it cannot publish, saying why', () => {
    expect(() => outboxRow({ topic: '', value: 1 })).toThrow(/topic/);
    expect(() => outboxRow({ topic: 't', value: undefined })).toThrow(/pass null for a tombstone/);
    expect(() => outboxRow({ topic: 't', value: 1, headers: { 'Message-Id': 'x' } })).toThrow(/options.messageId/);
    expect(() => outboxRow({ topic: 't', value: 1 }, { messageId: 'x'.repeat(256) })).toThrow(/1 to 255/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => outboxRow({ topic: 't', value: cyclic })).toThrow(
      expect.objectContaining({ code: 'ONCELY_INVALID_EVENT' }),
    );
  });
});
