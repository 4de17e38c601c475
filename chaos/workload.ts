import type { PaymentEvent } from '../examples/payments/handler.js';

/** One record the chaos producer sends. */
export interface ChaosMessage {
  readonly key: string;
  readonly value: string;
  readonly messageId: string;
  readonly kind: 'original' | 'duplicate' | 'key_reuse' | 'poison';
}

export interface ChaosWorkload {
  readonly messages: readonly ChaosMessage[];
  readonly counts: {
    readonly unique: number;
    /** Unique `payment.captured` events: each is charged at the provider exactly once. */
    readonly captured: number;
    readonly duplicates: number;
    readonly keyReuse: number;
    readonly poison: number;
  };
}

/** A few accounts that get a large share of the events (lanes mode: a hot key must not stall the rest). */
export interface HotAccounts {
  readonly count: number;
  /** The share of captured payments that go to the hot accounts together, 0–1. */
  readonly share: number;
}

/**
 * `unique` payment events, plus 10 % producer duplicates (same id and bytes, sent again later),
 * 1 % key reuse (same id, another amount, sent after the original) and 0.5 % poison (malformed
 * JSON with an id of its own). The record key is the account, so an id's copies share a partition.
 */
export function buildWorkload(
  unique: number,
  random: () => number,
  accounts = 60,
  hot: HotAccounts = { count: 0, share: 0 },
): ChaosWorkload {
  const originals: ChaosMessage[] = [];
  const captured: Extract<PaymentEvent, { type: 'payment.captured' }>[] = [];
  for (let n = 0; n < unique; n++) {
    let event: PaymentEvent;
    const capture =
      captured.length > 0 && random() < 0.2 ? captured[Math.floor(random() * captured.length)] : undefined;
    if (capture !== undefined) {
      event = { ...capture, type: 'payment.refunded', amountCents: 1 + Math.floor(random() * capture.amountCents) };
    } else {
      // The hot accounts are acct-0 … acct-(count-1); the others share the rest evenly.
      const accountId =
        hot.count > 0 && random() < hot.share
          ? `acct-${Math.floor(random() * hot.count)}`
          : `acct-${Math.floor(random() * accounts)}`;
      event = {
        type: 'payment.captured',
        paymentId: `pay-${n}`,
        accountId,
        amountCents: 100 + Math.floor(random() * 99_900),
        currency: 'EUR',
      };
      captured.push(event);
    }
    originals.push({ key: event.accountId, value: JSON.stringify(event), messageId: `evt-${n}`, kind: 'original' });
  }

  const messages = [...originals];
  const duplicates = Math.round(unique * 0.1);
  for (let i = 0; i < duplicates; i++) {
    const original = originals[Math.floor(random() * originals.length)];
    if (original === undefined) continue;
    const at = Math.floor(messages.length / 2 + random() * (messages.length / 2));
    messages.splice(at, 0, { ...original, kind: 'duplicate' });
  }
  const poison = Math.round(unique * 0.005);
  for (let i = 0; i < poison; i++) {
    const at = Math.floor(random() * messages.length);
    messages.splice(at, 0, {
      key: `acct-${i % accounts}`,
      value: '{"type":"payment.captured","amountCents":',
      messageId: `poison-${i}`,
      kind: 'poison',
    });
  }
  // Key reuse goes last, so the original is always the first occurrence in its partition.
  const keyReuse = Math.round(unique * 0.01);
  for (let i = 0; i < keyReuse; i++) {
    const original = originals[Math.floor(random() * originals.length)];
    if (original === undefined) continue;
    const event = JSON.parse(original.value) as PaymentEvent;
    messages.push({
      ...original,
      value: JSON.stringify({ ...event, amountCents: event.amountCents + 1 }),
      kind: 'key_reuse',
    });
  }
  return { messages, counts: { unique, captured: captured.length, duplicates, keyReuse, poison } };
}
