/**
 * Steps: external side effects made once (docs/steps.md, DESIGN §10, G9).
 *
 * A step wraps one call to the outside world (charge a card, send a payout). Its result is recorded
 * in `oncely.steps` in a short transaction of its own, on another pooled connection, as soon as the
 * call returns: a recovery point that survives the handler's rollback, a crash and a rebalance. A
 * later attempt for the same owner finds the row and returns the recorded result without calling
 * again. The call gets an idempotency key that is the same on every attempt, so even a crash
 * between the call and the record (the provider did the work, the row was never written) ends in
 * one effect when the provider honours the key.
 *
 * Framework-neutral: the Kafka pipeline runs it with scope = the consumer group and owner = the
 * message id; HTTP idempotency runs it with scope = the route's scope, owner = the
 * Idempotency-Key and the key's generation (a key reused after it expired is a new owner).
 */
import type pg from 'pg';

import { configError, NonRetriableError, OncelyError } from '../errors.js';
import { externalKey, isWellFormedText } from '../identity.js';
import { DEFAULT_ACQUIRE_TIMEOUT_MS } from '../inbox/pool.js';
import { loadSteps, recordStep, type StepConnections, type StoredStep } from './store.js';

/** What a step's function receives. */
export interface StepCallContext {
  /**
   * `oncely-step.<step name>~<digest of scope, owner and name>` (at most 255 characters of
   * `[A-Za-z0-9._~-]`): the same on every attempt of this owner and never shared by two owners.
   * Send it to the provider (Stripe's `Idempotency-Key` header) so a retried call is recognised,
   * not repeated.
   */
  readonly idempotencyKey: string;
  /** Aborts when the attempt is given up (the handler timeout): pass it to `fetch`. */
  readonly signal: AbortSignal;
}

/** What a compensation receives. */
export interface CompensationContext {
  /** `oncely-compensation.<step name>~<digest>`: the same on every try of this compensation. */
  readonly idempotencyKey: string;
  /** Aborts when the try runs past `timeoutMs` (a failed try, retried): pass it to `fetch`. */
  readonly signal: AbortSignal;
}

/** Undoes a completed step (refund a charge); `result` is the step's recorded result. */
export type Compensate<T> = (result: T, ctx: CompensationContext) => unknown;

export interface StepOptions<T> {
  /**
   * Run (in reverse completion order, each once) when the owner is finally given up — a message
   * dead-lettered after its attempts. Default: none (the step needs no undoing).
   */
  readonly compensate?: Compensate<T>;
}

/**
 * Runs `fn` once per owner and name. Resolves with `fn`'s result as JSON would carry it (the same
 * value on the first run and on every replay): `undefined` becomes `null`, a `Date` its ISO string,
 * object fields that are functions, symbols or `undefined` are left out; a result JSON cannot hold
 * (a BigInt, a cycle) rejects with `ONCELY_CONFIG`.
 */
export type StepFunction = <T>(
  name: string,
  fn: (ctx: StepCallContext) => Promise<T> | T,
  options?: StepOptions<T>,
) => Promise<T>;

export interface StepRunnerOptions {
  /** Where `oncely.steps` lives. Each step record takes a connection of its own for one statement. */
  readonly pool: pg.Pool;
  /**
   * The longest wait for that connection, in ms; then the step rejects with `ONCELY_POOL_EXHAUSTED`
   * (retriable). The caller usually holds a connection of the same pool for its transaction: an
   * unbounded wait could wedge a pool whose every connection waits for a second one. Default 10 000.
   */
  readonly acquireTimeoutMs?: number;
  /** The consumer group, or the HTTP route's key scope. Part of every idempotency key. */
  readonly scope: string;
  /** The message id, or the request's Idempotency-Key. Part of every idempotency key. */
  readonly ownerId: string;
  /**
   * The owner's generation (an HTTP key's: a key reused after it expired starts a new one, whose
   * steps run again under new idempotency keys), a whole number ≥ 1. Part of every idempotency
   * key when given. Default: none (a message).
   */
  readonly generation?: number | bigint;
  /** Passed to each step's function. Default: a signal that never aborts. A function is read lazily. */
  readonly signal?: AbortSignal | (() => AbortSignal);
  /**
   * The runner of the owner's previous attempt, if any: its `compensate` functions carry over, so a
   * step completed in an earlier attempt can still be undone if the last attempt never reached it.
   */
  readonly previous?: StepRunner;
}

export interface CompensateOptions {
  /** Tries per compensation before it is reported as failed. Default 5. */
  readonly attempts?: number;
  /** Delay before try n + 1 after n failures. Default: 200 ms doubling, at most 10 s. */
  readonly delayMs?: (failures: number) => number;
  /**
   * Waits between tries; resolve false to stop (the caller lost the right to continue, e.g. its
   * partition). Default: a timer.
   */
  readonly wait?: (ms: number) => Promise<boolean>;
  /** How long one try may run before it counts as failed (its signal aborts). 0: no limit. Default 30 s. */
  readonly timeoutMs?: number;
}

/** A compensation that gave up. The error is stored as `{ name, message, code? }`. */
export interface FailedCompensation {
  readonly step: string;
  readonly attempts: number;
  readonly error: { readonly name: string; readonly message: string; readonly code?: string };
}

export interface CompensationReport {
  /** Steps compensated, by this call or by an earlier one that crashed before the end, in the order undone. */
  readonly compensated: readonly string[];
  /** Compensations that failed after every try: they need a person. */
  readonly failed: readonly FailedCompensation[];
  /**
   * Completed steps that had a `compensate` function in an earlier process that this process never
   * saw (the last attempts never reached them): not undone; they need a person.
   */
  readonly unknown: readonly string[];
  /** `wait` resolved false: the rest was not tried (it resumes on the owner's next compensation). */
  readonly stopped: boolean;
}

export interface StepRunner {
  readonly scope: string;
  readonly ownerId: string;
  /** The owner's generation, if it has one (an HTTP key's). */
  readonly generation: bigint | undefined;
  /** Runs a step (see {@link StepFunction}). */
  readonly step: StepFunction;
  /**
   * Call after the handler returned: throws (non-retriable) when this run found that compensation
   * of the owner had begun, because an owner whose steps are being undone must not be applied.
   */
  assertNotCompensating(): void;
  /**
   * Undoes the owner's completed steps, newest first, each once: every compensation is recorded as
   * a step of its own (`compensate:<name>`), so a crash mid-way resumes without repeating one.
   */
  compensate(options?: CompensateOptions): Promise<CompensationReport>;
}

/** The name of the row written when compensation of an owner begins. Never a user step name. */
const COMPENSATING_MARKER = 'compensate:';
const COMPENSATION_PREFIX = 'compensate:';
const MAX_NAME_LENGTH = 200;

/**
 * The idempotency key of a step: a digest of (scope, owner, generation, name) behind a readable
 * prefix (`oncely-step.<name>~<digest>`, see `externalKey`), so two owners can never share one
 * (`acme:eu` + `k1` and `acme` + `eu:k1` used to) and it fits providers' 255-character limit.
 * NEVER change this format again: keys already sent to providers must be sent again, identical,
 * by every later version, or a retry after an upgrade charges twice.
 */
export function stepIdempotencyKey(scope: string, ownerId: string, name: string, generation?: number | bigint): string {
  return externalKey({ kind: 'step', scope, id: ownerId, name, ...(generation === undefined ? {} : { generation }) });
}

/** The idempotency key of a step's compensation: like {@link stepIdempotencyKey}, of its own kind. */
export function compensationIdempotencyKey(
  scope: string,
  ownerId: string,
  name: string,
  generation?: number | bigint,
): string {
  return externalKey({
    kind: 'compensation',
    scope,
    id: ownerId,
    name,
    ...(generation === undefined ? {} : { generation }),
  });
}

const neverAborted = new AbortController().signal;

/** A step runner for one owner and one attempt (see {@link StepRunner}). */
export function createStepRunner(options: StepRunnerOptions): StepRunner {
  return new Runner(options);
}

/**
 * A step runner given every step row of its owner, already read after the owner was claimed in
 * this attempt's transaction (a commit group reads its members' at once): it sends no read of its
 * own. oncely's only: a map read at any other moment could be stale, and a stale map runs a
 * completed step again.
 */
export function stepRunnerWithRecorded(
  options: StepRunnerOptions,
  recorded: ReadonlyMap<string, StoredStep>,
): StepRunner {
  return new Runner(options, recorded);
}

class Runner implements StepRunner {
  readonly scope: string;
  readonly ownerId: string;
  readonly generation: bigint | undefined;
  readonly step: StepFunction;
  /** Known compensate functions by step name, carried from attempt to attempt. */
  readonly compensations: Map<string, Compensate<unknown>>;
  private readonly connections: StepConnections;
  private readonly signal: AbortSignal | (() => AbortSignal) | undefined;
  private readonly used = new Set<string>();
  private recorded: Promise<Map<string, StoredStep>> | undefined;
  private compensating = false;

  constructor(options: StepRunnerOptions, recorded?: ReadonlyMap<string, StoredStep>) {
    if (typeof options.scope !== 'string' || options.scope.length === 0) {
      throw configError('scope', 'give the step scope (consumer group or HTTP key scope) as a non-empty string');
    }
    if (typeof options.ownerId !== 'string' || options.ownerId.length === 0) {
      throw configError('ownerId', 'give the owner (message id or Idempotency-Key) as a non-empty string');
    }
    this.connections = { pool: options.pool, acquireTimeoutMs: options.acquireTimeoutMs ?? DEFAULT_ACQUIRE_TIMEOUT_MS };
    this.scope = options.scope;
    this.ownerId = options.ownerId;
    const { generation } = options;
    if (
      generation !== undefined &&
      !(typeof generation === 'bigint' ? generation >= 1n : Number.isSafeInteger(generation) && generation >= 1)
    ) {
      // 0 is how `oncely.steps` stores "no generation" (a message's steps): never an owner's own.
      throw configError('generation', 'give the generation as a whole number ≥ 1, or leave it out for a message');
    }
    this.generation = generation === undefined ? undefined : BigInt(generation);
    this.signal = options.signal;
    this.compensations = new Map(options.previous instanceof Runner ? options.previous.compensations : []);
    this.step = (name, fn, stepOptions) => this.run(name, fn, stepOptions);
    if (recorded !== undefined) this.recorded = Promise.resolve(this.noteRecorded(new Map(recorded)));
  }

  /** Notes whether compensation of the owner has begun (its marker row is among its steps). */
  private noteRecorded(steps: Map<string, StoredStep>): Map<string, StoredStep> {
    if (steps.has(COMPENSATING_MARKER)) this.compensating = true;
    return steps;
  }

  private async run<T>(
    name: string,
    fn: (ctx: StepCallContext) => Promise<T> | T,
    options: StepOptions<T> | undefined,
  ): Promise<T> {
    this.checkName(name);
    if (typeof fn !== 'function')
      throw configError(`step("${name}")`, 'give the step a function ({ idempotencyKey, signal }) => …');
    const compensate = options?.compensate;
    if (compensate !== undefined && typeof compensate !== 'function') {
      throw configError(
        `step("${name}").compensate`,
        'give a function (result, { idempotencyKey }) => … or leave it out',
      );
    }
    // Claimed before the first await: a second call with this name fails at once, even concurrently.
    this.used.add(name);
    if (compensate !== undefined) this.compensations.set(name, compensate as Compensate<unknown>);
    // One read per attempt: every step of this owner, recorded by any earlier attempt or process.
    this.recorded ??= loadSteps(this.connections, this.scope, this.ownerId, this.generation).then((steps) =>
      this.noteRecorded(steps),
    );
    const done = (await this.recorded).get(name);
    if (done !== undefined && done.status === 'completed') return done.result as T;
    if (this.compensating) {
      throw new NonRetriableError(
        `Step "${name}" was not run: the steps of ${this.ownerId} are being compensated (an earlier ` +
          'process gave the owner up and began undoing them), so it is given up again to finish that.',
        { context: { scope: this.scope, ownerId: this.ownerId, step: name } },
      );
    }
    const idempotencyKey = stepIdempotencyKey(this.scope, this.ownerId, name, this.generation);
    const value = await fn({ idempotencyKey, signal: this.currentSignal() });
    const resultJson = toJson(value, name);
    // Recorded now, in its own autocommitted statement on another connection: the handler's
    // transaction may still roll back, and the call must not be made again when it does.
    const { result } = await recordStep(this.connections, {
      scope: this.scope,
      ownerId: this.ownerId,
      generation: this.generation ?? 0n,
      name,
      resultJson,
      status: 'completed',
      compensable: compensate !== undefined,
    });
    return result as T;
  }

  private checkName(name: string): void {
    if (typeof name !== 'string' || name.length === 0 || name.length > MAX_NAME_LENGTH || !isWellFormedText(name)) {
      // A lone surrogate would reach PostgreSQL as U+FFFD: two names, one recovery point.
      throw configError(
        'step(name)',
        `give each step a non-empty name of at most ${MAX_NAME_LENGTH} characters of well-formed text`,
      );
    }
    if (name.startsWith(COMPENSATION_PREFIX)) {
      throw configError(
        `step("${name}")`,
        `names starting with "${COMPENSATION_PREFIX}" are oncely's; rename the step`,
      );
    }
    if (this.used.has(name)) {
      // A repeated name would silently replay the first call's result for the second call.
      throw new OncelyError(
        'ONCELY_CONFIG',
        `Step "${name}" was called twice in one handler run of ${this.ownerId}. Step names identify ` +
          'recovery points: give each call its own name (e.g. `charge:${item.id}`).',
        { context: { option: 'step(name)', scope: this.scope, ownerId: this.ownerId, step: name } },
      );
    }
  }

  private currentSignal(): AbortSignal {
    // A signal of its own per call: `fetch` hangs a listener on the signal it is given until the
    // request is collected, so one shared signal gathered thousands under load (a leak warning).
    if (this.signal === undefined) return new AbortController().signal;
    return typeof this.signal === 'function' ? this.signal() : this.signal;
  }

  assertNotCompensating(): void {
    if (!this.compensating) return;
    throw new NonRetriableError(
      `The steps of ${this.ownerId} are being compensated (an earlier process gave it up): it is not ` +
        'applied; it is given up again so that compensation finishes.',
      { context: { scope: this.scope, ownerId: this.ownerId } },
    );
  }

  async compensate(options: CompensateOptions = {}): Promise<CompensationReport> {
    const attempts = Math.max(1, options.attempts ?? 5);
    const delayMs = options.delayMs ?? ((failures: number) => Math.min(10_000, 200 * 2 ** (failures - 1)));
    const wait = options.wait ?? ((ms: number) => new Promise<boolean>((r) => setTimeout(() => r(true), ms)));
    // Fresh: rows written since this attempt's read (and by earlier processes) count too.
    const steps = await loadSteps(this.connections, this.scope, this.ownerId, this.generation);
    const toUndo = [...steps.values()]
      .filter((s) => s.status === 'completed' && s.compensable && !s.name.startsWith(COMPENSATION_PREFIX))
      .sort((a, b) => (a.seq < b.seq ? 1 : a.seq > b.seq ? -1 : 0));
    const report = {
      compensated: [] as string[],
      failed: [] as FailedCompensation[],
      unknown: [] as string[],
      stopped: false,
    };
    if (toUndo.length === 0) return report;
    if (!steps.has(COMPENSATING_MARKER)) {
      // From here on the owner must never be applied: a redelivery finds this row and gives up again.
      await recordStep(this.connections, this.row(COMPENSATING_MARKER, 'null', 'completed'));
    }
    this.compensating = true;
    for (const step of toUndo) {
      const name = `${COMPENSATION_PREFIX}${step.name}`;
      if (steps.get(name)?.status === 'completed') {
        report.compensated.push(step.name);
        continue;
      }
      const compensate = this.compensations.get(step.name);
      if (compensate === undefined) {
        report.unknown.push(step.name);
        continue;
      }
      const idempotencyKey = compensationIdempotencyKey(this.scope, this.ownerId, step.name, this.generation);
      for (let tries = 1; ; tries++) {
        try {
          const value = await withTimeout(options.timeoutMs ?? 30_000, (signal) =>
            compensate(step.result, { idempotencyKey, signal }),
          );
          await recordStep(this.connections, this.row(name, toJson(value, name), 'completed'));
          report.compensated.push(step.name);
          break;
        } catch (error) {
          if (tries >= attempts) {
            const failed = { step: step.name, attempts: tries, error: errorSummary(error) };
            // Recorded too: `oncely.steps` shows what was left undone, next to what was undone.
            await recordStep(this.connections, this.row(name, JSON.stringify(failed), 'failed')).catch(() => undefined);
            report.failed.push(failed);
            break;
          }
          if (!(await wait(delayMs(tries)))) {
            report.stopped = true;
            return report;
          }
        }
      }
    }
    return report;
  }

  private row(name: string, resultJson: string, status: 'completed' | 'failed') {
    return {
      scope: this.scope,
      ownerId: this.ownerId,
      generation: this.generation ?? 0n,
      name,
      resultJson,
      status,
      compensable: false,
    } as const;
  }
}

/** The JSON text stored for a result; throws `ONCELY_CONFIG` for values JSON cannot hold. */
function toJson(value: unknown, name: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (error) {
    throw new OncelyError(
      'ONCELY_CONFIG',
      `Step "${name}" returned a value JSON cannot hold (${error instanceof Error ? error.message : String(error)}). ` +
        'Return plain JSON data (strings, numbers, booleans, arrays, objects; a BigInt as a string).',
      { cause: error, context: { option: 'step(fn)', step: name } },
    );
  }
  // A function or symbol at the top level stringifies to undefined: stored as null, like undefined.
  return text ?? 'null';
}

function errorSummary(error: unknown): FailedCompensation['error'] {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { name: error.name, message: error.message, ...(typeof code === 'string' ? { code } : {}) };
  }
  return { name: 'NonError', message: String(error) };
}

/** Runs `work` with a signal that aborts after `ms` (0: never); rejects when the time is up. */
async function withTimeout<T>(ms: number, work: (signal: AbortSignal) => T): Promise<Awaited<T>> {
  if (ms <= 0) return await work(neverAborted);
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new Error(`the compensation did not finish within ${ms} ms`);
      error.name = 'TimeoutError';
      controller.abort(error);
      reject(error);
    }, ms);
  });
  try {
    return await Promise.race([Promise.resolve().then(() => work(controller.signal)), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
