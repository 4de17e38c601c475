import type { KafkaClient } from '../kafka/client.js';
import type pg from 'pg';
import type { Logger } from 'pino';

import type { ResolvedRetention } from './options.js';
import { purge } from './purge.js';

export interface RetentionSchedule {
  /** Stops the timer and waits for a purge in progress to stop after its current batch. */
  stop(): Promise<void>;
}

/**
 * Runs `purge()` for the group's inbox scope every `retention.every` ms (first run after one interval, so a
 * start-up is never slowed by it). Every member of a group runs the timer; the purge's advisory
 * lock lets one of them work at a time. A failed purge is logged and tried again next interval:
 * retention must never stop a consumer.
 */
export function startRetention(settings: {
  readonly retention: ResolvedRetention | undefined;
  readonly pool: pg.Pool;
  readonly kafka: KafkaClient;
  readonly groupId: string;
  /** The consumer's inbox scope: the purge works on it, bounded by every group that reads it. */
  readonly inboxScope: string;
  readonly logger: Logger;
}): RetentionSchedule | undefined {
  const { retention } = settings;
  if (retention === undefined) return undefined;
  const abort = new AbortController();
  let running: Promise<unknown> | undefined;
  const timer = setInterval(() => {
    if (running !== undefined) return;
    running = purge({
      pool: settings.pool,
      kafka: settings.kafka,
      groupId: settings.groupId,
      inboxScope: settings.inboxScope,
      inboxFor: retention.inboxFor,
      deadLettersFor: retention.deadLettersFor,
      batchSize: retention.batchSize,
      signal: abort.signal,
      logger: settings.logger,
    })
      .catch((error: unknown) => {
        settings.logger.warn({ err: error }, 'retention purge failed; it runs again at the next interval');
      })
      .finally(() => {
        running = undefined;
      });
  }, retention.every);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      abort.abort();
      await running;
    },
  };
}
