/**
 * What the orchestrator (run.ts) tells a variant process (variant.ts), and what it reports back.
 */
import type { LedgerSummary } from './workload.js';
import type { Measurement } from './meter.js';

export const VARIANT_NAMES = [
  'R',
  'B0',
  'B1',
  'P0',
  'P1',
  'P',
  'G',
  'GK',
  'G0',
  'S',
  'SK',
  'B',
  'B-metrics',
  'D',
  'B-full',
] as const;
export type VariantName = (typeof VARIANT_NAMES)[number];

export const VARIANT_DESCRIPTIONS: Readonly<Record<VariantName, string>> = {
  R: 'raw kafkajs eachBatch, no database',
  B0: 'hand-written: one transaction per 500-message chunk, one unnest INSERT',
  B1: 'hand-written batched inbox: B0 plus one unnest INSERT … ON CONFLICT DO NOTHING into an inbox table',
  P0: 'hand-written: one drizzle transaction per message',
  P1: 'hand-written per-message inbox: kafkajs eachMessage, per message BEGIN, inbox INSERT, ledger INSERT, COMMIT',
  P: 'oncely, per-message mode, maxMessagesPerTransaction 1 (one transaction per message)',
  G: 'oncely, per-message mode with commit grouping (maxMessagesPerTransaction at its default)',
  GK: 'G with 8 lanes per partition (lanes by the Kafka key, the account id)',
  G0: "G with a handler that writes nothing: oncely's own cost per grouped message",
  S: 'per-message handler calling a 20 ms provider through ctx.step, then writing its ledger row (the step topic)',
  SK: 'S with 16 lanes per partition (lanes by the Kafka key, the account id)',
  B: 'oncely, batch mode (batchSize 500)',
  'B-metrics': 'oncely batch mode with Prometheus metrics on, scraped every 15 s',
  D: "oncely batch mode replaying B's range: every message a duplicate",
  'B-full': 'oncely batch mode, inbox pre-filled with other groups’ rows',
};

export interface VariantConfig {
  readonly variant: VariantName;
  readonly brokers: string[];
  readonly databaseUrl: string;
  readonly topic: string;
  readonly groupId: string;
  /** `bench.<ledger>` receives this variant's writes. */
  readonly ledger: string;
  /** B1 and P1 only: `bench.<inbox>` is their hand-written inbox. */
  readonly inbox?: string;
  readonly events: number;
  /** Sum of all amounts produced: each complete ledger must add up to it. */
  readonly totalCents: number;
  /** Per partition, the offset after its last message. */
  readonly endOffsets: number[];
  /** D only: the ledger as B left it; the replay must leave it exactly so. */
  readonly ledgerBefore?: LedgerSummary;
  /** S and SK: how long the provider takes per call. */
  readonly providerLatencyMs?: number;
  /** Fail the variant when no outcome commits for this long. */
  readonly idleTimeoutMs: number;
}

export interface OutcomeCounts {
  processed: number;
  duplicates: number;
  redeliveries: number;
  republishes: number;
  deadLettered: number;
}

export interface VariantResult extends Measurement {
  readonly variant: VariantName;
  readonly counts: OutcomeCounts;
  readonly ledger: LedgerSummary | undefined;
  /** Empty when every correctness check held. */
  readonly problems: string[];
  /**
   * Filled in by the orchestrator: the share of the machine (0–1) that processes outside this run
   * used while the variant ran; undefined when it cannot be told.
   */
  readonly otherLoad?: number;
}

/** The child prints its result on one stdout line that starts with this. */
export const RESULT_MARKER = 'BENCH_RESULT ';
