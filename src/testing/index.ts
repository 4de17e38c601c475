/**
 * oncely/testing: prove your handlers effectively-once under adversarial delivery, against your
 * real database and without a broker — and start Kafka and PostgreSQL for your integration tests
 * the way oncely's own tests do.
 */
import assert from 'node:assert/strict';

import type { ConsumedRecord } from '../kafka/runner.js';
import {
  type DeliveredOutcome,
  Delivery,
  type DeliveryOptions,
  type DeliveryReport,
  type TestMessage,
} from './delivery.js';
import { seededRandom } from './seeded-random.js';

export { startDevServices, type DevServices, type DevServicesOptions } from '../dev/index.js';
export { seededRandom };
export type { DeliveredOutcome, DeliveryOptions, DeliveryReport, TestMessage };

/**
 * - `redelivery`: every message again at the same coordinates — a crash after the database
 *   commit, before the offset commit.
 * - `republish`: every message twice at different offsets — a producer retry, an outbox re-send.
 * - `concurrent`: every message on two partitions at once, two connections racing for its claim.
 * - `mutated`: every message with an id of its own again, with other bytes — key reuse, which
 *   must be dead-lettered and change nothing.
 * - `shuffled`: the partitions interleaved in a random (seeded) order; order within each partition kept.
 * - `rolled-back`: every message's first transaction that ran the handler fails at COMMIT and rolls
 *   back, then the message is delivered again. Writes made outside `ctx.tx` (through the pool, an
 *   HTTP call) survive the rollback and happen twice; writes through `ctx.tx` do not.
 */
export const SCENARIOS = ['redelivery', 'republish', 'concurrent', 'mutated', 'shuffled', 'rolled-back'] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** Delivers every message once, in order: the reference a clean run produces. */
export async function deliverOnce(options: DeliveryOptions): Promise<DeliveryReport> {
  const delivery = new Delivery(options);
  await delivery.deliver(delivery.plan(options.messages));
  return delivery.report();
}

/** Delivers the messages the way `scenario` says (see {@link SCENARIOS}), under a fresh consumer group. */
export async function deliverAdversarially(options: DeliveryOptions & { scenario: Scenario }): Promise<DeliveryReport> {
  const delivery = new Delivery(options);
  const planned = delivery.plan(options.messages);
  switch (options.scenario) {
    case 'redelivery': {
      const records = await delivery.deliver(planned);
      await delivery.redeliver(records);
      break;
    }
    case 'republish':
      await delivery.deliver(planned);
      await delivery.deliver(planned);
      break;
    case 'concurrent':
      for (const one of planned) {
        // The same message on its partition and on the next one, claimed by two transactions at once.
        await Promise.all([delivery.deliver([one]), delivery.deliver([{ ...one, partition: one.partition + 1 }])]);
      }
      break;
    case 'mutated': {
      const records = await delivery.deliver(planned);
      const withOwnId: ConsumedRecord[] = [];
      for (const r of records) if (r.value !== null && (await delivery.hasOwnId(r))) withOwnId.push(r);
      const mutated = withOwnId.map(mutate);
      await delivery.redeliver(mutated.map((r) => ({ ...r, offset: `${BigInt(r.offset) + BigInt(records.length)}` })));
      break;
    }
    case 'shuffled':
      await delivery.deliver(interleave(planned, options.seed ?? 1));
      break;
    case 'rolled-back':
      await delivery.deliver(planned, { rollBackOnce: true });
      break;
  }
  return delivery.report();
}

export interface SameAsCleanOptions extends DeliveryOptions {
  /** Reads the state your handlers build (your tables), as a comparable value. */
  readonly snapshot: () => Promise<unknown>;
  /** Empties that state between runs (e.g. `TRUNCATE ledger, accounts`). */
  readonly reset: () => Promise<void>;
  /** Default: all of {@link SCENARIOS}. */
  readonly scenarios?: readonly Scenario[];
}

/**
 * Asserts that adversarial delivery leaves your database exactly as one clean delivery does:
 * delivers the messages once and snapshots, then for each scenario resets, delivers
 * adversarially, snapshots and compares. Throws an `AssertionError` naming the scenario, with a
 * diff, at the first difference; also when a scenario processed a message more than once or did
 * not dead-letter reused keys. Returns the reports.
 */
export async function expectSameAsCleanDelivery(
  options: SameAsCleanOptions,
): Promise<{ clean: DeliveryReport } & Partial<Record<Scenario, DeliveryReport>>> {
  await options.reset();
  const clean = await deliverOnce(options);
  const expected = await options.snapshot();
  const reports: { clean: DeliveryReport } & Partial<Record<Scenario, DeliveryReport>> = { clean };
  for (const scenario of options.scenarios ?? SCENARIOS) {
    await options.reset();
    const report = await deliverAdversarially({ ...options, scenario });
    reports[scenario] = report;
    assert.deepStrictEqual(
      await options.snapshot(),
      expected,
      `scenario "${scenario}" left a different state than one clean delivery (group ${report.groupId})`,
    );
    assert.equal(
      report.processed,
      clean.processed,
      `scenario "${scenario}" processed ${report.processed} messages; a clean delivery processes ${clean.processed}`,
    );
    if (scenario === 'mutated') {
      assert.ok(
        (report.deadLettered.key_reuse ?? 0) >= 1 || clean.processed === 0,
        'scenario "mutated": reused ids with other payloads were not dead-lettered as key_reuse',
      );
    }
  }
  return reports;
}

/** The same record with other bytes: a trailing space keeps JSON valid and changes the fingerprint. */
function mutate(record: ConsumedRecord): ConsumedRecord {
  return { ...record, value: Buffer.concat([record.value ?? Buffer.alloc(0), Buffer.from(' ')]) };
}

/** A seeded random interleaving of the partitions, each partition's own order kept. */
function interleave<T extends { readonly topic: string; readonly partition: number }>(
  items: readonly T[],
  seed: number,
): T[] {
  const queues = new Map<string, T[]>();
  for (const item of items) {
    const key = `${item.topic}\u0000${item.partition}`;
    const queue = queues.get(key) ?? [];
    queue.push(item);
    queues.set(key, queue);
  }
  const random = seededRandom(seed);
  const out: T[] = [];
  let open = [...queues.values()];
  while (open.length > 0) {
    const queue = open[Math.floor(random() * open.length)];
    const next = queue?.shift();
    if (next !== undefined) out.push(next);
    open = open.filter((q) => q.length > 0);
  }
  return out;
}
