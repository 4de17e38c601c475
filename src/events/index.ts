import type { Logger } from 'pino';

import type { DeadLetterReason, StoredError } from '../inbox/dead-letters.js';
import type { RecordHeaders } from '../kafka/message-identity.js';

/** Where a message sits in the stream; every message event carries it. */
export interface MessageCoordinates {
  readonly groupId: string;
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly messageId: string | null;
}

export type DuplicateClass = 'redelivery' | 'republish';

/** Why a partition stopped at a message. */
export type PauseReason = 'exhausted' | 'unrecordable' | 'offsets-mismatch';

/**
 * What every outcome event carries besides its coordinates: the record's headers (a tracer reads
 * `traceparent` from them) and how long the record took from its first attempt to its committed
 * outcome (in batch mode: its chunk's transaction).
 */
export interface OutcomeDetails {
  readonly headers: RecordHeaders;
  readonly durationMs: number;
}

export interface ConsumerEvents {
  /** The handler's writes committed together with the inbox row. */
  'message:processed': MessageCoordinates & OutcomeDetails & { readonly attempts: number };
  /** The id was already recorded; the handler was skipped. */
  'message:duplicate': MessageCoordinates &
    OutcomeDetails & {
      readonly duplicateClass: DuplicateClass;
      readonly original: {
        readonly topic: string;
        readonly partition: number;
        readonly offset: string;
        /**
         * When the original's outcome was recorded: the duplicate's age is measured from it. Null
         * for a record whose own dead letter was stored before (key reuse, invalid id).
         */
        readonly processedAt: Date | null;
      };
    };
  /** The message was stored in `oncely.dead_letters`; the partition moved on. */
  'message:dead-lettered': MessageCoordinates &
    OutcomeDetails & {
      readonly reason: DeadLetterReason;
      readonly error: StoredError;
      readonly attempts: number;
    };
  /** A tombstone was recorded and skipped (the handler's `tombstone: 'skip'`). */
  'message:skipped': MessageCoordinates & OutcomeDetails & { readonly reason: 'tombstone' };
  /**
   * A transaction that ran the handler committed: one message (message mode) or one chunk (batch
   * mode). `handlerMs` is the time spent in the user's handler, `durationMs` the whole transaction
   * from its first statement to COMMIT.
   */
  'transaction:committed': {
    readonly groupId: string;
    readonly topic: string;
    readonly partition: number;
    readonly messages: number;
    readonly durationMs: number;
    readonly handlerMs: number;
  };
  /**
   * Per-message mode: a handler attempt failed and will be retried after `delayMs`. Batch mode
   * emits `chunk:retrying` instead (an attempt covers a chunk, not a message).
   */
  'message:retrying': MessageCoordinates & {
    readonly attempt: number;
    readonly delayMs: number;
    readonly error: unknown;
  };
  /** Batch mode: an attempt at a chunk of one partition's messages failed and will be retried. */
  'chunk:retrying': {
    readonly groupId: string;
    readonly topic: string;
    readonly partition: number;
    readonly firstOffset: string;
    readonly lastOffset: string;
    readonly size: number;
    readonly attempt: number;
    readonly delayMs: number;
    readonly error: unknown;
  };
  /**
   * A partition stopped at a message and waits for `consumer.resume(topic, partition)`. Nothing
   * was recorded for the message. `reason`: `exhausted` (its attempts ran out with
   * `onExhausted: 'pause'`) or `unrecordable` (not even its dead letter could be stored).
   */
  'partition:paused': MessageCoordinates & {
    readonly reason: PauseReason;
    readonly error: StoredError;
    readonly attempts: number;
  };
  /**
   * The partition's resume point in `oncely.offsets` disagrees with the log: above its end (the
   * topic was deleted and re-created, or the log truncated), below its start (messages were
   * deleted before they were processed), or next to another record than the one recorded there
   * (`other-log`: the topic was deleted and re-created, whatever the new log's length). The
   * partition is paused instead of skipping anything; see `oncely offsets show` and `oncely
   * offsets reset`.
   */
  'partition:offsets-mismatch': {
    readonly groupId: string;
    readonly topic: string;
    readonly partition: number;
    /** The next offset recorded in `oncely.offsets`. */
    readonly resumeOffset: string;
    /** The first offset the log still holds. */
    readonly logStartOffset: string;
    /** The offset the next message written to the log gets. */
    readonly logEndOffset: string;
    readonly problem: 'ahead-of-log' | 'behind-log-start' | 'other-log';
  };
  /** A paused partition was resumed; its message is retried from attempt 1. */
  'partition:resumed': { readonly groupId: string; readonly topic: string; readonly partition: number };
  /** The Kafka consumer crashed; `restart` tells whether it restarts on its own. */
  'consumer:crash': { readonly groupId: string; readonly error: unknown; readonly restart: boolean };
}

export type ConsumerEventName = keyof ConsumerEvents;
export type ConsumerEventListener<E extends ConsumerEventName> = (payload: ConsumerEvents[E]) => unknown;

/**
 * Typed events whose payloads are built only when someone listens (the hot path pays nothing
 * otherwise), and whose listeners cannot hurt the consumer: a listener that throws or rejects is
 * logged and ignored.
 */
export class EventHub {
  readonly #listeners = new Map<ConsumerEventName, Set<(payload: never) => unknown>>();
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Adds a listener; returns a function that removes it. */
  on<E extends ConsumerEventName>(event: E, listener: ConsumerEventListener<E>): () => void {
    let set = this.#listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  /** Whether `event` has listeners: a hot loop checks once, then builds payloads only if so. */
  listening(event: ConsumerEventName): boolean {
    const set = this.#listeners.get(event);
    return set !== undefined && set.size > 0;
  }

  /**
   * Calls the listeners of `event` with a payload already built: for a loop that checked
   * {@link listening} once, instead of a `build` closure per call.
   */
  emitBuilt<E extends ConsumerEventName>(event: E, payload: ConsumerEvents[E]): void {
    const set = this.#listeners.get(event);
    if (set === undefined || set.size === 0) return;
    this.#call(event, set, payload);
  }

  /** Calls the listeners of `event` with the payload `build()` makes — if there are any. */
  emit<E extends ConsumerEventName>(event: E, build: () => ConsumerEvents[E]): void {
    const set = this.#listeners.get(event);
    if (set === undefined || set.size === 0) return;
    this.#call(event, set, build());
  }

  #call<E extends ConsumerEventName>(
    event: E,
    set: ReadonlySet<(payload: never) => unknown>,
    payload: ConsumerEvents[E],
  ): void {
    for (const listener of set) {
      try {
        const result = (listener as ConsumerEventListener<E>)(payload);
        if (result instanceof Promise) result.catch((error: unknown) => this.#listenerFailed(event, error));
      } catch (error) {
        this.#listenerFailed(event, error);
      }
    }
  }

  #listenerFailed(event: ConsumerEventName, error: unknown): void {
    this.#logger.error({ err: error, event }, `a listener of ${event} threw; the consumer carries on`);
  }
}
