import { describe, expect, it } from 'vitest';

import { formatSummary, runChaos } from '../../../chaos/chaos.js';

describe('chaos (reduced run)', () => {
  it('G1 G2 G3 G5 G8 G9: 5,000 payment events, consumed by two publishing groups, through kills, a broker restart, cut connections and rebalances: zero lost, zero doubled, on both hops, no payment charged twice at the provider', async () => {
    const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 1_000_000));
    const lines: string[] = [];
    const summary = await runChaos({
      seed,
      mode: 'message',
      events: 5_000,
      kills: 5,
      killEveryMs: 2_500,
      brokerRestarts: 1,
      connectionKillRounds: 2,
      timeoutMs: 230_000,
      log: (line) => void lines.push(line),
    });
    const report = `${lines.join('\n')}\n${formatSummary(summary)}\n(replay with CHAOS_SEED=${seed})`;
    expect(summary.violations, report).toEqual([]);
    expect(summary.crashes, report).toEqual([]);
    expect(summary.kills).toBeGreaterThanOrEqual(5);
    expect(summary.brokerRestarts).toBe(1);
    expect(summary.lost + summary.doubled + summary.unexpected).toBe(0);
    expect(summary.applied).toBe(5_000);
    // The second hop: ledger.posted through the outbox, relays killed with the members.
    expect(summary.downstream.lost + summary.downstream.doubled + summary.downstream.unexpected).toBe(0);
    expect(summary.downstream.applied).toBe(5_000);
    // A second group on the same topic publishes for every message too: no collision, each once.
    expect(summary.audit.lost + summary.audit.doubled, report).toBe(0);
    expect(summary.audit.applied).toBe(5_000);
    // The provider (in this process, outliving the kills): every captured payment charged exactly
    // once by payment id, whatever keys; the workload holds no review accounts, so no refunds.
    expect(summary.provider.chargedTwice, report).toBe(0);
    expect(summary.provider.uncharged, report).toBe(0);
    expect(summary.provider.paymentsCharged, report).toBe(summary.captures);
    expect(summary.provider.charges, report).toBe(summary.captures);
    expect(summary.provider.refunds, report).toBe(0);
  }, 260_000);
});
