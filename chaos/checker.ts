import type pg from 'pg';

import { paymentEvent } from '../examples/payments/handler.js';
import type { PaymentProvider } from '../examples/payments/provider.js';

/** A record as read back from the topic after the run. */
export interface LoggedRecord {
  readonly partition: number;
  readonly offset: string;
  readonly messageId: string;
  readonly value: string;
}

export interface Expectation {
  /** Ledger entries: message id → signed amount. */
  readonly ledger: Map<string, number>;
  /** Balances: account → cents. */
  readonly balances: Map<string, number>;
  /** Dead letters: `partition/offset` → reason. */
  readonly deadLetters: Map<string, string>;
  /** Duplicates in the log: records whose id was seen before with the same bytes. */
  readonly duplicates: number;
  /** Per account (the record key), its applied events' ids in log order: the order the ledger must show. */
  readonly order: Map<string, string[]>;
}

/**
 * What the database must hold, computed from what the topic actually holds (not from what the
 * producer meant to send: a send retried across a broker restart may have landed twice). Per
 * partition in offset order, an id's first record decides: a valid event is applied once, an
 * invalid one is dead-lettered (`invalid_payload`). Later records with the same id and the same
 * bytes are duplicates; with other bytes they are dead-lettered (`key_reuse`).
 */
export function expectationFrom(records: readonly LoggedRecord[]): Expectation {
  const ledger = new Map<string, number>();
  const balances = new Map<string, number>();
  const deadLetters = new Map<string, string>();
  const first = new Map<string, string>();
  const order = new Map<string, string[]>();
  let duplicates = 0;
  const ordered = [...records].sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)));
  for (const record of ordered) {
    const where = `${record.partition}/${record.offset}`;
    const seen = first.get(record.messageId);
    if (seen !== undefined) {
      if (seen === record.value) duplicates++;
      else deadLetters.set(where, 'key_reuse');
      continue;
    }
    first.set(record.messageId, record.value);
    let parsed: ReturnType<typeof paymentEvent.safeParse>;
    try {
      parsed = paymentEvent.safeParse(JSON.parse(record.value));
    } catch {
      deadLetters.set(where, 'invalid_payload');
      continue;
    }
    if (!parsed.success) {
      deadLetters.set(where, 'invalid_payload');
      continue;
    }
    const event = parsed.data;
    const signed = event.type === 'payment.captured' ? event.amountCents : -event.amountCents;
    ledger.set(record.messageId, signed);
    balances.set(event.accountId, (balances.get(event.accountId) ?? 0) + signed);
    order.set(event.accountId, [...(order.get(event.accountId) ?? []), record.messageId]);
  }
  return { ledger, balances, deadLetters, duplicates, order };
}

export interface Verdict {
  readonly applied: number;
  /** Expected effects missing from the ledger. */
  readonly lost: string[];
  /** Message ids applied more than once. */
  readonly doubled: string[];
  /** Ledger entries nobody expected, or with the wrong amount. */
  readonly unexpected: string[];
  readonly deadLettersByReason: Record<string, number>;
  /** Accounts whose ledger entries (in insertion order) do not follow their events' order in the log. */
  readonly outOfOrder: string[];
  readonly violations: string[];
}

/**
 * Per account, whether the ledger's entries (by their serial id: insertion order) follow the
 * account's events in log order (G4, per key with lanes): one account's events must never be
 * applied out of order, whichever member or lane applied them.
 */
async function accountsOutOfOrder(pool: pg.Pool, expected: Expectation): Promise<string[]> {
  const { rows } = await pool.query<{ account_id: string; message_id: string }>(
    'SELECT account_id, message_id FROM payments.ledger_entries ORDER BY id',
  );
  const actual = new Map<string, string[]>();
  for (const row of rows) actual.set(row.account_id, [...(actual.get(row.account_id) ?? []), row.message_id]);
  return [...expected.order]
    .filter(([account, ids]) => {
      const applied = new Set(actual.get(account) ?? []);
      const expectedIds = new Set(ids);
      const wanted = ids.filter((id) => applied.has(id));
      const seen = new Set<string>();
      // First occurrences only: an event applied twice is reported as doubled, not here.
      const got = (actual.get(account) ?? []).filter((id) => !seen.has(id) && seen.add(id) && expectedIds.has(id));
      return wanted.join('\n') !== got.join('\n');
    })
    .map(([account]) => account);
}

/** Compares the chaos database with the expectation; every difference is a violation. */
export async function check(pool: pg.Pool, groupId: string, expected: Expectation): Promise<Verdict> {
  const violations: string[] = [];
  const { rows: entries } = await pool.query<{ message_id: string; n: string; amount: string }>(
    'SELECT message_id, count(*) AS n, sum(amount_cents) AS amount FROM payments.ledger_entries GROUP BY message_id',
  );
  const applied = new Map(entries.map((e) => [e.message_id, e]));
  const doubled = entries.filter((e) => Number(e.n) > 1).map((e) => e.message_id);
  const lost = [...expected.ledger.keys()].filter((id) => !applied.has(id));
  const unexpected = entries
    .filter((e) => Number(e.n) === 1 && expected.ledger.get(e.message_id) !== Number(e.amount))
    .map((e) => e.message_id);
  if (lost.length > 0) violations.push(`${lost.length} events lost (e.g. ${lost.slice(0, 5).join(', ')})`);
  if (doubled.length > 0)
    violations.push(`${doubled.length} events applied twice (e.g. ${doubled.slice(0, 5).join(', ')})`);
  if (unexpected.length > 0)
    violations.push(`${unexpected.length} unexpected ledger entries (e.g. ${unexpected.slice(0, 5).join(', ')})`);

  const { rows: balances } = await pool.query<{ account_id: string; balance_cents: string }>(
    'SELECT account_id, balance_cents FROM payments.accounts',
  );
  const wrong = [...expected.balances].filter(
    ([account, cents]) => Number(balances.find((b) => b.account_id === account)?.balance_cents) !== cents,
  );
  if (wrong.length > 0)
    violations.push(
      `${wrong.length} account balances wrong (e.g. ${wrong
        .slice(0, 3)
        .map(([a]) => a)
        .join(', ')})`,
    );

  const { rows: letters } = await pool.query<{ partition: number; offset: string; reason: string }>(
    'SELECT partition, "offset", reason FROM oncely.dead_letters WHERE consumer_group = $1',
    [groupId],
  );
  const stored = new Map(letters.map((l) => [`${l.partition}/${l.offset}`, l.reason]));
  const deadLettersByReason: Record<string, number> = {};
  for (const reason of stored.values()) deadLettersByReason[reason] = (deadLettersByReason[reason] ?? 0) + 1;
  const missing = [...expected.deadLetters].filter(([where, reason]) => stored.get(where) !== reason);
  const extra = [...stored].filter(([where]) => !expected.deadLetters.has(where));
  if (missing.length > 0) {
    violations.push(
      `${missing.length} dead letters missing or with the wrong reason (e.g. ${missing
        .slice(0, 5)
        .map(([w, r]) => `${w} ${r}`)
        .join(', ')})`,
    );
  }
  if (extra.length > 0)
    violations.push(
      `${extra.length} unexpected dead letters (e.g. ${extra
        .slice(0, 5)
        .map(([w, r]) => `${w} ${r}`)
        .join(', ')})`,
    );

  const outOfOrder = await accountsOutOfOrder(pool, expected);
  if (outOfOrder.length > 0)
    violations.push(
      `${outOfOrder.length} accounts applied out of their events' order in the log (e.g. ${outOfOrder.slice(0, 5).join(', ')})`,
    );

  return { applied: entries.length, lost, doubled, unexpected, deadLettersByReason, outOfOrder, violations };
}

/** What the payment provider's own records say, against the ledger and the dead letters. */
export interface ProviderVerdict {
  /** Charges the provider made: one per idempotency key. */
  readonly charges: number;
  /** Distinct payments among them. */
  readonly paymentsCharged: number;
  /** Captured payments in the ledger, plus charged payments that were dead-lettered afterwards. */
  readonly expectedCharges: number;
  /** Requests that repeated a key the provider had already charged (a call made again after a kill or a cut connection). */
  readonly repeatedCalls: number;
  /** Captured payments in the ledger the provider never charged. */
  readonly uncharged: number;
  /** Payments charged more than once, whatever keys were used. */
  readonly chargedTwice: number;
  readonly refunds: number;
  /** Charged payments whose message was dead-lettered after the charge (`handler_failed`). */
  readonly expectedRefunds: number;
  readonly violations: string[];
}

/**
 * Checks the provider by payment id, not by key: a second key for the same payment would be a
 * second charge the provider cannot dedupe. Every captured payment applied to the ledger is
 * charged exactly once; a charged payment that is not in the ledger must have been dead-lettered
 * and refunded once; nothing else is refunded.
 */
export async function checkProvider(
  pool: pg.Pool,
  groupId: string,
  provider: Pick<PaymentProvider, 'charges' | 'refunds'>,
): Promise<ProviderVerdict> {
  const violations: string[] = [];
  const { rows: captures } = await pool.query<{ payment_id: string }>(
    "SELECT DISTINCT payment_id FROM payments.ledger_entries WHERE kind = 'capture'",
  );
  const applied = new Set(captures.map((c) => c.payment_id));
  // Only handler_failed dead letters ran the handler (and so its charge step); the others were
  // refused before it (invalid payload, a reused id whose original stands).
  const { rows: letters } = await pool.query<{ value: Buffer | null }>(
    "SELECT value FROM oncely.dead_letters WHERE consumer_group = $1 AND reason = 'handler_failed'",
    [groupId],
  );
  const deadLettered = new Set<string>();
  for (const letter of letters) {
    const parsed = paymentEvent.safeParse(safeJson(letter.value?.toString('utf8')));
    if (parsed.success) deadLettered.add(parsed.data.paymentId);
  }

  const chargesPerPayment = new Map<string, number>();
  const paymentOfCharge = new Map<string, string>();
  let repeatedCalls = 0;
  for (const charge of provider.charges.values()) {
    chargesPerPayment.set(charge.paymentId, (chargesPerPayment.get(charge.paymentId) ?? 0) + 1);
    paymentOfCharge.set(charge.id, charge.paymentId);
    repeatedCalls += charge.calls - 1;
  }
  const chargedTwice = [...chargesPerPayment].filter(([, n]) => n > 1).map(([payment]) => payment);
  const uncharged = [...applied].filter((payment) => !chargesPerPayment.has(payment));
  const notApplied = [...chargesPerPayment.keys()].filter((payment) => !applied.has(payment));
  const strays = notApplied.filter((payment) => !deadLettered.has(payment));
  const toRefund = new Set(notApplied.filter((payment) => deadLettered.has(payment)));

  const refundsPerPayment = new Map<string, number>();
  for (const refund of provider.refunds.values()) {
    const payment = paymentOfCharge.get(refund.chargeId) ?? `unknown charge ${refund.chargeId}`;
    refundsPerPayment.set(payment, (refundsPerPayment.get(payment) ?? 0) + 1);
  }
  const wrongRefunds = [...refundsPerPayment].filter(([payment, n]) => !toRefund.has(payment) || n > 1);
  const unrefunded = [...toRefund].filter((payment) => !refundsPerPayment.has(payment));

  const some = (ids: readonly string[]): string => ids.slice(0, 5).join(', ');
  if (chargedTwice.length > 0)
    violations.push(`${chargedTwice.length} payments charged twice at the provider (e.g. ${some(chargedTwice)})`);
  if (uncharged.length > 0)
    violations.push(`${uncharged.length} applied captures never charged at the provider (e.g. ${some(uncharged)})`);
  if (strays.length > 0)
    violations.push(`${strays.length} payments charged but neither applied nor dead-lettered (e.g. ${some(strays)})`);
  if (unrefunded.length > 0)
    violations.push(`${unrefunded.length} dead-lettered charges not refunded (e.g. ${some(unrefunded)})`);
  if (wrongRefunds.length > 0)
    violations.push(
      `${wrongRefunds.length} payments refunded without a dead letter or more than once (e.g. ${some(wrongRefunds.map(([p]) => p))})`,
    );

  return {
    charges: provider.charges.size,
    paymentsCharged: chargesPerPayment.size,
    expectedCharges: applied.size + toRefund.size,
    repeatedCalls,
    uncharged: uncharged.length,
    chargedTwice: chargedTwice.length,
    refunds: provider.refunds.size,
    expectedRefunds: toRefund.size,
    violations,
  };
}

function safeJson(text: string | undefined): unknown {
  try {
    return text === undefined ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}
