/** How a committed outcome is announced: a log line and an event. */
import type { ConsumedRecord } from '../kafka/runner.js';

import type { Outcome, PipelineContext } from './context.js';
import type { MessageCoordinates } from './events.js';

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
