/** How a committed outcome is announced: a log line and an event. */
import type { ConsumedRecord } from '../../kafka/runner.js';

import type { Outcome, PipelineContext } from '../context.js';
import type { MessageCoordinates } from '../../events/index.js';
import type { PreparedRecord } from './prepare.js';

/** A record's place, for log lines: the logger already carries the group id. */
export function locate(where: MessageCoordinates): Omit<MessageCoordinates, 'groupId'> {
  return { topic: where.topic, partition: where.partition, offset: where.offset, messageId: where.messageId };
}

export function announce(
  pipeline: PipelineContext,
  where: MessageCoordinates,
  outcome: Outcome,
  durationMs: number,
  record: ConsumedRecord,
): void {
  const { logger, events } = pipeline;
  switch (outcome.kind) {
    case 'processed':
      if (logger.isLevelEnabled('debug')) {
        logger.debug({ ...locate(where), outcome: 'processed', attempts: outcome.attempts }, 'processed');
      }
      events.emit('message:processed', () => ({
        ...where,
        attempts: outcome.attempts,
        durationMs,
        headers: record.headers,
      }));
      return;
    case 'skipped':
      if (logger.isLevelEnabled('debug')) logger.debug({ ...locate(where), outcome: 'skipped' }, 'tombstone skipped');
      events.emit('message:skipped', () => ({
        ...where,
        reason: 'tombstone' as const,
        durationMs,
        headers: record.headers,
      }));
      return;
    case 'duplicate':
      if (logger.isLevelEnabled('debug')) {
        logger.debug(
          { ...locate(where), outcome: 'duplicate', duplicateClass: outcome.duplicateClass },
          'duplicate skipped',
        );
      }
      events.emit('message:duplicate', () => ({
        ...where,
        duplicateClass: outcome.duplicateClass,
        original: {
          topic: outcome.original.topic,
          partition: outcome.original.partition,
          offset: outcome.original.offset,
          processedAt: outcome.original.processedAt,
        },
        durationMs,
        headers: record.headers,
      }));
      return;
    case 'dead_lettered': {
      // Bad input (and a handler's NonRetriableError) is expected in a payments stream: one concise
      // warn line, the stack only at debug. A handler that failed until its attempts ran out is not:
      // logged as an error with everything stored.
      const { stack, issues, ...brief } = outcome.error;
      const expected = outcome.reason !== 'handler_failed' || outcome.error.code === 'ONCELY_NON_RETRIABLE';
      const fields = {
        ...locate(where),
        outcome: 'dead_lettered',
        reason: outcome.reason,
        attempts: outcome.attempts,
        error: expected ? brief : outcome.error,
        ...(pipeline.logPayloads ? { value: record.value?.toString('utf8') } : {}),
      };
      const line = `dead-lettered (${outcome.reason}): ${outcome.error.message}`;
      if (!expected) logger.error(fields, line);
      else {
        logger.warn(fields, line);
        if (logger.isLevelEnabled('debug')) logger.debug({ ...locate(where), stack, issues }, 'dead letter details');
      }
      events.emit('message:dead-lettered', () => ({
        ...where,
        reason: outcome.reason,
        error: outcome.error,
        attempts: outcome.attempts,
        durationMs,
        headers: record.headers,
      }));
      return;
    }
    case 'paused':
      logger.error(
        { ...locate(where), outcome: 'paused', attempts: outcome.attempts, error: outcome.error },
        'attempts exhausted; pausing the partition until resume()',
      );
      return;
    case 'unrecordable':
      return; // logged where it was decided, with the database's error
    case 'abandoned':
      logger.info(
        { ...locate(where), outcome: 'abandoned' },
        'stopped before an outcome was recorded; the message will be redelivered',
      );
      return;
  }
}

/**
 * Announces the committed outcomes of a chunk or a commit group, `outcomes[i]` being `records[i]`'s.
 * The two common ones — processed and duplicate — are emitted here, their payloads built only
 * when the event has listeners and without copying the coordinates through a spread; the rest
 * (and everything when debug logging is on) go through {@link announce}.
 */
export function announceAll(
  pipeline: PipelineContext,
  records: readonly PreparedRecord[],
  outcomes: readonly Outcome[],
  durationOf: (index: number) => number,
): void {
  const { events, groupId } = pipeline;
  const fast = !pipeline.logger.isLevelEnabled('debug');
  const processed = events.listening('message:processed');
  const duplicate = events.listening('message:duplicate');
  for (let i = 0; i < outcomes.length; i++) {
    const outcome = outcomes[i];
    const prepared = records[i];
    if (outcome === undefined || prepared === undefined) continue;
    const { record } = prepared;
    if (fast && outcome.kind === 'processed') {
      if (processed) {
        events.emitBuilt('message:processed', {
          groupId,
          topic: record.topic,
          partition: record.partition,
          offset: record.offset,
          messageId: prepared.messageId,
          attempts: outcome.attempts,
          durationMs: durationOf(i),
          headers: record.headers,
        });
      }
    } else if (fast && outcome.kind === 'duplicate') {
      if (duplicate) {
        const { original } = outcome;
        events.emitBuilt('message:duplicate', {
          groupId,
          topic: record.topic,
          partition: record.partition,
          offset: record.offset,
          messageId: prepared.messageId,
          duplicateClass: outcome.duplicateClass,
          original: {
            topic: original.topic,
            partition: original.partition,
            offset: original.offset,
            processedAt: original.processedAt,
          },
          durationMs: durationOf(i),
          headers: record.headers,
        });
      }
    } else {
      announce(pipeline, prepared.where, outcome, durationOf(i), record);
    }
  }
}
