/**
 * Admission control for idempotent routes (DESIGN §3a "Connections", G7 under load).
 *
 * A request holds a pooled connection for its whole transaction, and a request with steps needs a
 * second one for a moment, for each step's recovery point. Let more requests in at once than the
 * pool can give two connections to, and every connection ends up held by a transaction that waits
 * for a second one: the pool never moves again. So every idempotent route on one pool shares one
 * semaphore counted in connections: a request takes `connectionsPerRequest` of them (2 by default)
 * before its transaction begins and gives them back when it ends. Requests beyond that wait in a
 * FIFO queue for at most `queueTimeoutMs`; a full queue or a wait past the bound is refused with
 * 503 `server_busy` and `Retry-After` — an answer within a bound, never a wedge.
 *
 * The permit is taken after the body was read and fingerprinted: a slow upload holds no share of
 * the pool.
 */
import type pg from 'pg';

import { configError } from '../errors.js';
import { type OncelyDatabase, poolMax, resolvePool } from '../inbox/database.js';
import { poolUsage, type PoolUsage } from '../inbox/pool.js';

/** Options of the admission of idempotent requests (`admission` of `idempotent()`). */
export interface AdmissionOptions {
  /**
   * Connections one request of this route may hold at once: 2 (its transaction and one step
   * record), or 1 for a route whose handler never calls `ctx.step` (such a route's `ctx.step`
   * then refuses with `ONCELY_CONFIG`). Default 2.
   */
  readonly connectionsPerRequest?: 1 | 2;
  /**
   * The pool's connections that idempotent requests may hold between them. Lower it when other
   * work shares the pool (a consumer needs its `concurrency` + 1). The first route on a pool sets
   * it; every route on that pool must agree. Default: the pool's `max`.
   */
  readonly connections?: number;
  /** The longest wait for a turn, in ms; then 503 `server_busy` with `Retry-After`. Default 5 000. */
  readonly queueTimeoutMs?: number;
  /** Requests that may wait for a turn per pool; one more is answered 503 at once. Default 1 000. */
  readonly maxQueue?: number;
}

export interface ResolvedAdmission {
  readonly connectionsPerRequest: 1 | 2;
  readonly queueTimeoutMs: number;
  readonly gate: AdmissionGate;
}

/** A turn: hold it for the request's transaction, give it back once. */
export interface Permit {
  release(): void;
}

interface Waiter {
  readonly units: number;
  readonly since: number;
  readonly admit: (permit: Permit) => void;
  readonly timer: NodeJS.Timeout;
}

/** What {@link admissionStatus} reports for a pool's gate. */
export interface AdmissionStatus {
  /** Connections idempotent requests may hold between them. */
  readonly capacity: number;
  /** Connections held by admitted requests now. */
  readonly inUse: number;
  /** Requests waiting for a turn now, and how long the oldest has waited (ms). */
  readonly queued: number;
  readonly oldestWaitMs: number;
  /** Requests refused with 503 since the gate was made. */
  readonly refused: number;
  readonly maxQueue: number;
}

/**
 * The semaphore of one pool, counted in connections. FIFO: a request that needs two connections is
 * not overtaken forever by requests that need one.
 */
export class AdmissionGate {
  #inUse = 0;
  #refused = 0;
  readonly #queue: Waiter[] = [];

  constructor(
    readonly capacity: number,
    readonly maxQueue: number,
  ) {}

  /** A permit for `units` connections, or undefined when the queue is full or the wait ran past `timeoutMs`. */
  acquire(units: number, timeoutMs: number): Promise<Permit | undefined> | Permit | undefined {
    if (this.#queue.length === 0 && this.#inUse + units <= this.capacity) return this.#grant(units);
    if (this.#queue.length >= this.maxQueue) {
      this.#refused++;
      return undefined;
    }
    return new Promise<Permit | undefined>((resolve) => {
      const waiter: Waiter = {
        units,
        since: Date.now(),
        admit: resolve,
        timer: setTimeout(() => {
          const at = this.#queue.indexOf(waiter);
          if (at < 0) return;
          this.#queue.splice(at, 1);
          this.#refused++;
          resolve(undefined);
          // The head may have been the one blocking smaller requests behind it.
          this.#drain();
        }, timeoutMs),
      };
      this.#queue.push(waiter);
    });
  }

  status(): AdmissionStatus {
    const oldest = this.#queue[0];
    return {
      capacity: this.capacity,
      inUse: this.#inUse,
      queued: this.#queue.length,
      oldestWaitMs: oldest === undefined ? 0 : Date.now() - oldest.since,
      refused: this.#refused,
      maxQueue: this.maxQueue,
    };
  }

  #grant(units: number): Permit {
    this.#inUse += units;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#inUse -= units;
        this.#drain();
      },
    };
  }

  #drain(): void {
    for (;;) {
      const head = this.#queue[0];
      if (head === undefined || this.#inUse + head.units > this.capacity) return;
      this.#queue.shift();
      clearTimeout(head.timer);
      head.admit(this.#grant(head.units));
    }
  }
}

/** One gate per pool: every idempotent route on a pool shares its connections. */
const gates = new WeakMap<pg.Pool, AdmissionGate>();

function positiveInteger(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) throw configError(option, `expected a whole number ≥ 1, got ${value}.`);
  return value;
}

/** Validates a route's `admission` options and finds (or makes) its pool's gate. */
export function resolveAdmission(pool: pg.Pool, options: AdmissionOptions | undefined): ResolvedAdmission {
  const o = options ?? {};
  if (o.connectionsPerRequest !== undefined && o.connectionsPerRequest !== 1 && o.connectionsPerRequest !== 2) {
    throw configError(
      'admission.connectionsPerRequest',
      `expected 1 or 2, got ${String(o.connectionsPerRequest)}: 2 for a route whose handler calls ctx.step, 1 otherwise.`,
    );
  }
  const connectionsPerRequest = o.connectionsPerRequest ?? 2;
  const max = poolMax(pool);
  const capacity = positiveInteger('admission.connections', o.connections, max);
  if (capacity > max) {
    throw configError(
      'admission.connections',
      `${capacity} is more than the pool's max (${max}): requests would wait for connections the pool cannot open.`,
    );
  }
  if (capacity < connectionsPerRequest) {
    throw configError(
      'admission.connections',
      `${capacity} connection(s) cannot hold one request that needs ${connectionsPerRequest}; ` +
        'create the pool with a larger max (pool max ≥ 2 × the requests you serve at once).',
    );
  }
  const queueTimeoutMs = positiveInteger('admission.queueTimeoutMs', o.queueTimeoutMs, 5_000);
  const maxQueue = positiveInteger('admission.maxQueue', o.maxQueue, 1_000);
  let gate = gates.get(pool);
  if (gate === undefined) {
    gate = new AdmissionGate(capacity, maxQueue);
    gates.set(pool, gate);
  } else if (o.connections !== undefined && gate.capacity !== capacity) {
    throw configError(
      'admission.connections',
      `another idempotent route on this pool set it to ${gate.capacity}; every route on one pool shares one limit, ` +
        'so give them all the same value (or leave it out on all but the first).',
    );
  }
  return { connectionsPerRequest, queueTimeoutMs, gate };
}

/** A readiness report of a pool that serves idempotent routes. */
export interface PoolReadiness {
  /**
   * False while requests wait for a turn or callers wait for a connection: the process is at its
   * limit, and a load balancer should send new requests elsewhere.
   */
  readonly ready: boolean;
  /** Why it is not ready; undefined when ready. */
  readonly reason: string | undefined;
  readonly pool: PoolUsage;
  /** The admission gate of idempotent routes on this pool, if any route was made over it. */
  readonly admission: AdmissionStatus | undefined;
}

/**
 * How a pool that serves idempotent routes is doing, for a readiness probe: the pool's own counts
 * and the admission gate's. Cheap (no query): call it on every probe.
 */
export function poolReadiness(db: OncelyDatabase | pg.Pool): PoolReadiness {
  const { pool } = resolvePool(db);
  const usage = poolUsage(pool);
  const admission = gates.get(pool)?.status();
  let reason: string | undefined;
  if (admission !== undefined && admission.queued > 0) {
    reason = `${admission.queued} request(s) wait for a turn (oldest ${admission.oldestWaitMs} ms); all ${admission.capacity} connections of idempotent requests are held`;
  } else if (usage.waiting > 0 && usage.idle === 0 && usage.total >= usage.max) {
    reason = `pool exhausted: all ${usage.max} connections in use and ${usage.waiting} caller(s) wait for one`;
  }
  return { ready: reason === undefined, reason, pool: usage, admission };
}
