/**
 * What the consumer does with one partition's fetched batch: start where PostgreSQL says the
 * partition is, pass over what is already recorded, and take the rest to their outcomes — one
 * record (or commit group) at a time in message mode, chunk by chunk in batch mode. Offsets are
 * resolved here and only after the commit that recorded their outcomes (G3).
 */
import type { ResolvedConsumerConfig } from '../options.js';
import { TransactionChain } from '../../inbox/transaction.js';
import type { ConsumedRecord, PartitionBatch } from '../../kafka/runner.js';

import type { PartitionControl, PipelineContext } from '../context.js';
import type { BatchHandlerDefinition, HandlerDefinition } from '../handler.js';
import type { PartitionPauses } from './pauses.js';
import { processChunk } from '../modes/batch.js';
import { processRecords, type RecordsResult } from '../modes/commit-group.js';
import { PartitionLanes } from '../lanes/lanes.js';
import type { ResumePoints } from './resume-points.js';

export interface BatchProcessing {
  readonly config: Pick<
    ResolvedConsumerConfig,
    'handlers' | 'batchSize' | 'maxMessagesPerTransaction' | 'pool' | 'bind' | 'lanes'
  >;
  readonly pipeline: PipelineContext;
  readonly resumePoints: ResumePoints;
  readonly pauses: PartitionPauses;
}

export async function processBatch(processing: BatchProcessing, batch: PartitionBatch): Promise<void> {
  const { config, pipeline, resumePoints, pauses } = processing;
  const handler = config.handlers.get(batch.topic);
  if (handler === undefined) return; // not subscribed by us; cannot happen with one subscription per handler
  const start = await resumePoints.startOf(batch, pipeline);
  if (start === undefined) return; // stopped while the database or the broker was unreachable
  // Offsets that disagree with the log: paused, nothing processed (see PartitionPauses.offsetsMismatch).
  if (start.mismatch !== undefined || pauses.has(batch.topic, batch.partition)) return;
  if (!batch.isActive()) return;
  // Fetched from where Kafka was before oncely moved the partition to its resume point: stale.
  // Only until the first batch fetched from there; after it, the partition reads on as usual.
  if (start.seekTo !== undefined && resumePoints.seekPending(batch)) {
    if (BigInt(batch.fetchedOffset) > start.seekTo) return;
    resumePoints.seekDone(batch);
  }
  const resumeAt = start.resumeAt ?? 0n;

  // Below the resume point recorded in PostgreSQL: these records' outcomes committed before a
  // crash or rebalance lost Kafka's offset commit. Pass over them without claiming; resolving
  // them is safe because their outcomes are durable.
  let firstNew = 0;
  while (firstNew < batch.records.length && BigInt(batch.records[firstNew]?.offset ?? '0') < resumeAt) firstNew++;
  const passedOver = batch.records[firstNew - 1];
  if (passedOver !== undefined) batch.resolve(passedOver.offset);
  const records = firstNew === 0 ? batch.records : batch.records.slice(firstNew);
  if (records.length === 0) {
    const last = batch.records.at(-1);
    if (last !== undefined && BigInt(last.offset) + 1n < resumeAt && batch.isActive()) {
      // The whole batch was below the resume point and more is: jump there instead of fetching it.
      batch.seek(resumeAt.toString());
    }
    return;
  }
  // One connection for the partition's transactions while this batch lasts.
  const transactions = new TransactionChain(config.pool, config.bind);
  const control: PartitionControl = {
    heartbeat: () => batch.heartbeat(),
    isActive: () => batch.isActive(),
    transactions,
  };
  try {
    if (handler.kind === 'batch') await processChunks(processing, batch, handler, records, control);
    else await processMessages(processing, batch, handler, records, control);
  } finally {
    await transactions.close();
  }
}

/** Message mode: each record its own claim and handler call, grouped into transactions (modes/commit-group.ts). */
async function processMessages(
  { config, pipeline, pauses }: BatchProcessing,
  batch: PartitionBatch,
  handler: HandlerDefinition,
  records: readonly ConsumedRecord[],
  control: PartitionControl,
): Promise<void> {
  const lanes = config.lanes;
  const result: RecordsResult =
    lanes === undefined
      ? await processRecords(pipeline, handler, records, control, {
          maxMessages: config.maxMessagesPerTransaction,
          // Called only after a commit: the outcomes up to that offset are durable, so Kafka may pass them (G3).
          committed: (offset) => batch.resolve(offset),
        })
      : // Per-key lanes: offsets move with the partition's watermark (lanes/watermark.ts).
        await new PartitionLanes(pipeline, handler, batch, records, {
          pool: config.pool,
          bind: config.bind,
          lanes,
          maxMessagesPerTransaction: config.maxMessagesPerTransaction,
        }).run();
  if (result.kind === 'stopped') {
    const { record, messageId, reason, error, attempts } = result;
    pauses.pauseAt(record, { messageId, reason, error, attempts });
  }
}

/** Batch mode: chunks of up to batchSize records, each in one transaction. */
async function processChunks(
  { config, pipeline, pauses }: BatchProcessing,
  batch: PartitionBatch,
  handler: BatchHandlerDefinition,
  records: readonly ConsumedRecord[],
  control: PartitionControl,
): Promise<void> {
  for (let start = 0; start < records.length; start += config.batchSize) {
    if (!batch.isActive()) return;
    const chunk = records.slice(start, start + config.batchSize);
    control.transactions.expectMore?.(start + config.batchSize < records.length);
    // Called after each commit: the outcomes up to that offset are durable, so Kafka may pass them.
    const result = await processChunk(pipeline, handler, chunk, control, (offset) => batch.resolve(offset));
    if (result.kind === 'abandoned') return;
    if (result.kind === 'paused' || result.kind === 'unrecordable') {
      const { record, messageId } = result.at;
      const reason = result.kind === 'paused' ? 'exhausted' : 'unrecordable';
      pauses.pauseAt(record, { messageId, reason, error: result.error, attempts: result.attempts });
      return;
    }
    await batch.heartbeat();
  }
}
