/**
 * The relay's side of the broker: one producer, connected when first needed, whose work a stop
 * abandons instead of waiting for it, and the broker's topic list, read again at most once per poll.
 */
import type { KafkaClient, KafkaProducerSettings } from '../kafka/client.js';
import { type OutgoingRecord, RecordProducer } from '../kafka/producer.js';

/** What a send or connect abandoned by `stop()` rejects with. */
export class RelayStopped extends Error {}

export class RelayProducer {
  #producer: RecordProducer | undefined;
  #knownTopics: { names: Set<string>; at: number } | undefined;
  /** Rejected by {@link abandon}: every race of {@link untilStopped} ends with it. */
  readonly #stopRequested: Promise<never>;
  #onStop: (() => void) | undefined;
  /**
   * Work still running in kafkajs (abandoned or not): a send abandoned by stop() against a
   * reachable broker finishes a moment later and may open a broker connection after the disconnect.
   */
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Second disconnects pending; {@link settle} waits a short while for them. */
  readonly #lingering = new Set<Promise<unknown>>();

  constructor(
    private readonly kafka: KafkaClient,
    private readonly settings: KafkaProducerSettings,
    /** How long the list of topics is trusted before it is read again. */
    private readonly topicListMs: number,
  ) {
    this.#stopRequested = new Promise<never>((_, reject) => {
      this.#onStop = () => reject(new RelayStopped('the relay is stopping'));
    });
    this.#stopRequested.catch(() => undefined);
  }

  /** Sends records; tells per record whether every in-sync replica has it (see RecordProducer.send). */
  async send(records: readonly OutgoingRecord[]): Promise<boolean[]> {
    const producer = await this.connected();
    return this.untilStopped(producer.send(records));
  }

  /**
   * Whether the broker has the topic: `'yes'`, `'no'` (the list was just read again, so this
   * counts as an attempt), or `'unknown'` (read too recently to read again: the row just waits).
   */
  async topicExists(topic: string): Promise<'yes' | 'no' | 'unknown'> {
    const producer = await this.connected();
    if (this.#knownTopics?.names.has(topic) === true) return 'yes';
    if (this.#knownTopics !== undefined && Date.now() - this.#knownTopics.at < this.topicListMs) return 'unknown';
    this.#knownTopics = { names: new Set(await producer.listTopics()), at: Date.now() };
    return this.#knownTopics.names.has(topic) ? 'yes' : 'no';
  }

  /**
   * stop() must not wait for kafkajs to give up on an unreachable broker (its retries can take
   * tens of seconds): a connect or send still running then is abandoned. Safe: nothing was marked,
   * so the rows stay pending and the next active relay sends them.
   */
  abandon(): void {
    this.#onStop?.();
  }

  /** Disconnects (the next send connects again). */
  async close(): Promise<void> {
    const p = this.#producer;
    this.#producer = undefined;
    this.#knownTopics = undefined;
    const disconnect = (): Promise<unknown> => p?.disconnect() ?? Promise.resolve();
    await disconnect();
    // Once the work still running in these clients ends, disconnect again: whatever connection it
    // opened after the first disconnect is closed too (in the background: it may take kafkajs'
    // retries against an unreachable broker).
    if (this.#inFlight.size > 0 && p !== undefined) {
      // A failed second disconnect is nobody's concern (the clients are dropped either way), and
      // must not surface as an unhandled rejection of the promise below.
      const again = Promise.all([...this.#inFlight])
        .then(disconnect)
        .catch(() => undefined);
      this.#lingering.add(again);
      void again.finally(() => this.#lingering.delete(again));
    }
  }

  /** Waits for the second disconnects of {@link close}: usually a moment, at most `ms` for a broker that never answers. */
  async settle(ms: number): Promise<void> {
    await Promise.race([Promise.all([...this.#lingering]), new Promise((resolve) => setTimeout(resolve, ms).unref())]);
  }

  private async connected(): Promise<RecordProducer> {
    this.#producer ??= await RecordProducer.connect(this.kafka, this.settings, (work) => this.untilStopped(work));
    return this.#producer;
  }

  private untilStopped<T>(work: Promise<T>): Promise<T> {
    const settled = work.then(
      () => undefined,
      () => undefined, // an abandoned send's failure is nobody's concern
    );
    this.#inFlight.add(settled);
    void settled.finally(() => this.#inFlight.delete(settled));
    return Promise.race([work, this.#stopRequested]);
  }
}
