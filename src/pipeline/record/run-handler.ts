import type { Logger } from 'pino';

import { OncelyError } from '../../errors.js';
import type { StepFunction } from '../../steps/runner.js';
import type { OncelyTransaction } from '../../inbox/database.js';
import type { OpenTransaction } from '../../inbox/transaction.js';
import type {
  AnyHandlerDefinition,
  BatchContext,
  BatchEvent,
  BatchStepFunction,
  HandlerContext,
  MessageInfo,
} from '../handler.js';
import { batchPublisher, messagePublisher } from '../../outbox/context.js';

export interface Bounds {
  readonly transaction: OpenTransaction;
  /** 0 disables the timeout. */
  readonly timeoutMs: number;
  /** Keeps the group membership alive while the handler runs; failures are ignored here. */
  readonly heartbeat?: (() => Promise<void>) | undefined;
  /** For the timeout error's context. */
  readonly messageId?: string | undefined;
  /** Cancels the statement running on the backend with this process id (from another connection). */
  readonly cancel?: ((backendPid: number) => Promise<void>) | undefined;
}

/**
 * One handler attempt's hold on its ctx. An attempt owns its transaction and its ctx for exactly
 * the attempt (DESIGN §3a): once it has ended — returned, failed or timed out — every member of its
 * ctx that could have an effect (`tx`, `publish`, `step`) refuses with `ONCELY_ATTEMPT_ENDED`, so
 * work a handler left running (a timed-out attempt, an un-awaited promise) cannot commit inside the
 * next message's transaction on the same connection.
 */
export interface AttemptLease {
  /** `ctx.signal`, made on first read (aborted already if read after a timeout). */
  readonly signal: () => AbortSignal;
  /** True once the attempt has ended. */
  readonly ended: () => boolean;
}

/** The error every member of an ended attempt's ctx answers with. */
export function attemptEnded(member: string): OncelyError {
  return new OncelyError(
    'ONCELY_ATTEMPT_ENDED',
    `${member} was used after its handler attempt had ended (returned, failed or timed out), and was refused: ` +
      'nothing of an ended attempt may commit. Await everything the handler starts before it returns, ' +
      'and pass ctx.signal to slow calls so they stop when the attempt times out.',
    // Not the fault of whatever attempt is running now: the late caller's own attempt is over.
    { retriable: true },
  );
}

const HEARTBEAT_EVERY_MS = 1_000;
/** After a timeout, how long to wait for the cancelled handler to let go of the connection. */
const SETTLE_AFTER_CANCEL_MS = 5_000;

/**
 * Runs user code inside a message's (or chunk's) transaction, bounded by the handler timeout: when
 * it fires, the signal aborts and the attempt fails with `ONCELY_HANDLER_TIMEOUT` (a failed,
 * retriable attempt), so a hung call cannot hold a partition forever. A handler stuck in the
 * database is cut off too: its statement is cancelled from another connection
 * (`pg_cancel_backend`), so the ROLLBACK that follows is not queued behind a query that never
 * ends. The group is heartbeated meanwhile — also while the cancelled handler lets go — so a slow
 * handler does not get its member evicted and the partition handed to another member while it
 * still works on it.
 */
export async function runBounded(bounds: Bounds, apply: (lease: AttemptLease) => Promise<void> | void): Promise<void> {
  // Made only when the handler reads ctx.signal: most handlers never do, and it is per message.
  let controller: AbortController | undefined;
  let abortedWith: unknown;
  const signal = (): AbortSignal => {
    if (controller === undefined) {
      controller = new AbortController();
      // Read for the first time after the timeout: it must already be aborted.
      if (abortedWith !== undefined) controller.abort(abortedWith);
    }
    return controller.signal;
  };
  let ended = false;
  const end = (): void => {
    if (ended) return;
    ended = true;
    // Whatever the handler still has running may not touch the transaction any more.
    bounds.transaction.closeTx();
  };
  const lease: AttemptLease = { signal, ended: () => ended };
  // One timer per attempt, not a timeout and an interval: it fires every HEARTBEAT_EVERY_MS (or at
  // the deadline, if sooner) to heartbeat the group, and times the attempt out once the deadline has
  // passed. Most attempts end long before it first fires; then it costs one timer, set and cleared.
  let timer: NodeJS.Timeout | undefined;
  const deadline = bounds.timeoutMs > 0 ? performance.now() + bounds.timeoutMs : Infinity;
  const heartbeatEvery = bounds.heartbeat === undefined ? Infinity : HEARTBEAT_EVERY_MS;
  const applied = Promise.resolve().then(() => apply(lease));
  const settled =
    bounds.heartbeat === undefined && bounds.timeoutMs <= 0
      ? applied
      : new Promise<void>((resolve, reject) => {
          const tick = (): void => {
            const left = deadline - performance.now();
            if (left <= 0) {
              const error = new OncelyError(
                'ONCELY_HANDLER_TIMEOUT',
                `The handler did not finish within ${bounds.timeoutMs} ms (handlerTimeoutMs); the attempt was rolled back. ` +
                  'Pass ctx.signal to slow calls so they stop too, or raise handlerTimeoutMs.',
                { retriable: true, context: bounds.messageId === undefined ? {} : { messageId: bounds.messageId } },
              );
              abortedWith = error;
              controller?.abort(error);
              // The attempt is over now, not when the handler lets go: what it does from here on
              // (a publish, a step, a query) is refused, and the transaction is rolled back.
              end();
              // Heartbeats go on while the cancelled handler lets go (cancelStuckHandler).
              if (bounds.heartbeat !== undefined) {
                timer = setInterval(() => void bounds.heartbeat?.().catch(() => undefined), HEARTBEAT_EVERY_MS);
              }
              reject(error);
              return;
            }
            // Not the deadline: a heartbeat's turn (ticks come every HEARTBEAT_EVERY_MS before it).
            if (bounds.heartbeat !== undefined) void bounds.heartbeat().catch(() => undefined);
            timer = setTimeout(tick, Math.min(left, heartbeatEvery));
          };
          timer = setTimeout(tick, Math.min(deadline - performance.now(), heartbeatEvery));
          applied.then(resolve, reject);
        });
  try {
    try {
      await settled;
    } catch (error) {
      if (abortedWith !== undefined && error === abortedWith) {
        await cancelStuckHandler(bounds, applied);
        throw error;
      }
      throw refusedControl(bounds, error) ?? error;
    }
    // Checked before any outcome is recorded: a handler that ended the transaction itself must not
    // have oncely's COMMIT "succeed" on a connection with no transaction open.
    const refused = refusedControl(bounds, undefined);
    if (refused !== undefined) throw refused;
  } finally {
    clearTimeout(timer);
    end();
  }
}

/**
 * The attempt's failure when its handler sent transaction control (a ROLLBACK after a failed
 * statement, a COMMIT): its own fault, so not retriable — the message is dead-lettered. The
 * transaction is rolled back by the caller as for any failure; a statement `tx` refused was never
 * sent, so the claims and writes of the rest of a commit group are intact until then.
 */
function refusedControl(bounds: Bounds, cause: unknown): OncelyError | undefined {
  const what = bounds.transaction.transactionControl();
  if (what === undefined) return undefined;
  return new OncelyError(
    'ONCELY_TX_CONTROL',
    `The handler ${what}. Transaction control in a handler is refused: oncely owns the message's transaction, ` +
      "in which the handler's writes, the message's inbox row and the partition's offset commit together; a COMMIT " +
      'or ROLLBACK of the handler would commit or discard them apart. Throw to roll back (the message is retried), ' +
      'or use ctx.tx.transaction() for a savepoint the handler can roll back itself.',
    {
      retriable: false,
      ...(cause === undefined ? {} : { cause }),
      context: bounds.messageId === undefined ? {} : { messageId: bounds.messageId },
    },
  );
}

/**
 * The handler timed out: cancel whatever statement it still runs on the transaction's connection,
 * then give it a moment (heartbeats still running) to fail and let go, so the ROLLBACK that follows
 * runs at once instead of after a query that may never end.
 */
async function cancelStuckHandler(bounds: Bounds, applied: Promise<void>): Promise<void> {
  const pid = (bounds.transaction.client as { processID?: number }).processID;
  if (bounds.cancel !== undefined && typeof pid === 'number') await bounds.cancel(pid).catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    applied.catch(() => undefined),
    new Promise((resolve) => (timer = setTimeout(resolve, SETTLE_AFTER_CANCEL_MS))),
  ]);
  clearTimeout(timer);
}

/**
 * A message handler's ctx. A class, made once per message: its members are prototype getters, so
 * a handler that only writes through `ctx.tx` costs one small object, not a closure per member
 * (an object literal with getters builds its accessors anew each time). `step` and `publish` are
 * getters returning a function made on first read, so `const { tx, step } = ctx` works as with a
 * plain object.
 */
export class MessageContext implements HandlerContext {
  readonly message: MessageInfo;
  readonly messageId: string;
  readonly attempt: number;
  // This attempt's drizzle transaction, read once: `transaction.tx` binds a new one after the
  // attempt ended (for the next member of a commit group), which a late publish must never reach.
  readonly #tx: OncelyTransaction;
  readonly #scope: string;
  readonly #logger: Logger;
  readonly #lease: AttemptLease;
  readonly #runStep: StepFunction;
  #step: StepFunction | undefined;
  #publish: HandlerContext['publish'] | undefined;
  #log: Logger | undefined;

  constructor(
    transaction: OpenTransaction,
    message: MessageInfo,
    scope: string,
    messageId: string,
    attempt: number,
    logger: Logger,
    lease: AttemptLease,
    step: StepFunction = stepsUnavailable,
  ) {
    this.message = message;
    this.messageId = messageId;
    this.attempt = attempt;
    this.#tx = transaction.tx;
    this.#scope = scope;
    this.#logger = logger;
    this.#lease = lease;
    this.#runStep = step;
    this.#step = undefined;
    this.#publish = undefined;
    this.#log = undefined;
  }

  get tx(): OncelyTransaction {
    if (this.#lease.ended()) throw attemptEnded('ctx.tx');
    return this.#tx;
  }

  get step(): StepFunction {
    const ended = this.#lease.ended;
    const step = this.#runStep;
    return (this.#step ??= (name, fn, options) =>
      ended() ? Promise.reject(attemptEnded('ctx.step')) : step(name, fn, options));
  }

  get publish(): HandlerContext['publish'] {
    if (this.#publish === undefined) {
      const ended = this.#lease.ended;
      const tx = this.#tx;
      // Numbered from 0 on each attempt: a failed attempt's outbox rows rolled back with it.
      const publish = messagePublisher(() => tx, this.#scope, { messageId: this.messageId, message: this.message });
      this.#publish = (event) => (ended() ? Promise.reject(attemptEnded('ctx.publish')) : publish(event));
    }
    return this.#publish;
  }

  get signal(): AbortSignal {
    return this.#lease.signal();
  }

  // A child logger costs a serialisation of its bindings: made only for handlers that log.
  get log(): Logger {
    const { message, messageId } = this;
    return (this.#log ??= this.#logger.child({
      topic: message.topic,
      partition: message.partition,
      offset: message.offset,
      messageId,
    }));
  }
}

export function batchContext(
  transaction: OpenTransaction,
  where: { readonly topic: string; readonly partition: number },
  scope: string,
  attempt: number,
  logger: Logger,
  lease: AttemptLease,
  step: BatchStepFunction = stepsUnavailable,
): BatchContext {
  let log: Logger | undefined;
  // Read once, as in messageContext: an ended attempt's publish must not bind a new transaction.
  const tx = transaction.tx;
  const ended = lease.ended;
  const publish = batchPublisher(() => tx, scope);
  return {
    get tx() {
      if (ended()) throw attemptEnded('ctx.tx');
      return tx;
    },
    step: (event, name, fn, options) =>
      ended() ? Promise.reject(attemptEnded('ctx.step')) : step(event, name, fn, options),
    topic: where.topic,
    partition: where.partition,
    attempt,
    publish: (event, options) => (ended() ? Promise.reject(attemptEnded('ctx.publish')) : publish(event, options)),
    get signal() {
      return lease.signal();
    },
    get log() {
      // Only the coordinates: `where` may be a whole record, whose value must not reach the logs.
      log ??= logger.child({ topic: where.topic, partition: where.partition });
      return log;
    },
  };
}

/** `ctx.step` where no step store was given (a context made outside the consumer's pipeline). */
function stepsUnavailable(): never {
  throw new OncelyError(
    'ONCELY_CONFIG',
    'ctx.step is not available here: this handler context was made without a step store. Run the handler ' +
      'through a consumer (or retryDeadLetter), which gives ctx.step its pool and scope.',
  );
}

/**
 * Applies one decoded event with either kind of handler (a batch handler gets a batch of one):
 * what re-driving a dead letter needs.
 */
export function applyOne(
  handler: AnyHandlerDefinition,
  event: unknown,
  transaction: OpenTransaction,
  message: MessageInfo,
  scope: string,
  messageId: string,
  attempt: number,
  logger: Logger,
  lease: AttemptLease,
  step?: StepFunction,
): Promise<void> | void {
  if (handler.kind === 'message') {
    return handler.handle(
      event,
      new MessageContext(transaction, message, scope, messageId, attempt, logger, lease, step),
    );
  }
  const events: BatchEvent<unknown>[] = [{ event, messageId, message }];
  const batchStep: BatchStepFunction | undefined =
    step === undefined ? undefined : (_event, name, fn, options) => step(name, fn, options);
  return handler.handleBatch(events, batchContext(transaction, message, scope, attempt, logger, lease, batchStep));
}
