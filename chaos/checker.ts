import type pg from 'pg';

import { paymentEvent } from '../examples/payments/handler.js';

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
  }
  return { ledger, balances, deadLetters, duplicates };
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
  readonly violations: string[];
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

  return { applied: entries.length, lost, doubled, unexpected, deadLettersByReason, violations };
}
