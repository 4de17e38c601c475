/**
 * How the relay waits: for a poll interval, a backoff, or a LISTEN notification, whichever comes
 * first. One waiter at a time; a notification that arrives while the relay is busy is not lost:
 * the next wait ends at once.
 */
export class Wakeup {
  #woken = false;
  #wake: (() => void) | undefined;
  #stopped = false;

  /** Ends the current wait (or the next one, when nobody waits now). */
  notify(): void {
    this.#woken = true;
    this.#wake?.();
  }

  /** Forgets earlier notifications: the relay is about to read everything they announced. */
  reset(): void {
    this.#woken = false;
  }

  /** Ends the current wait and every later one at once. */
  stop(): void {
    this.#stopped = true;
    this.notify();
  }

  /** Waits `ms`; a notification ends the wait early when `wakeable` (a backoff is not cut short), a stop always. */
  sleep(ms: number, wakeable = true): Promise<void> {
    if (this.#stopped || (wakeable && this.#woken)) {
      this.#woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = () => {
        if (this.#stopped || wakeable) done();
      };
    });
  }
}
