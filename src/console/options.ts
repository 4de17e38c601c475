import type { KafkaClient } from '../kafka/client.js';
import type { Logger } from 'pino';

import { configError } from '../errors.js';
import type { DatabaseInput } from '../inbox/database.js';
import type { AnyHandlerDefinition } from '../pipeline/handler.js';
import type { InboxConsumer } from '../pipeline/consumer.js';

/**
 * Options of the operator console, mounted (`oncely/console`) or run by `oncely console`.
 * `Req` is the framework's request type, passed to `identify`.
 */
export interface ConsoleOptions<Req = unknown> {
  /**
   * The oncely database: a connection string (the console opens a small pool of its own and
   * closes it on close), a pg Pool, or the consumer's drizzle database (its schema types `ctx.tx`
   * when a dead letter is retried).
   */
  readonly db: DatabaseInput;
  /** A kafkajs client. Without it the console shows no group state or lag, and cannot plan or run replays. */
  readonly kafka?: KafkaClient;
  /**
   * The token every request must carry: once as `?token=` or through the sign-in form (a signed,
   * HttpOnly, SameSite=Strict cookie follows), or as `Authorization: Bearer <token>`. Compared in
   * constant time. Required unless `identify` is given.
   */
  readonly token?: string;
  /**
   * The host application's own auth, when mounted: the signed-in operator's name for a request,
   * or undefined/null to refuse it (401). Called on every request.
   */
  readonly identify?: (request: Req) => string | undefined | null | Promise<string | undefined | null>;
  /**
   * The key CSRF tokens are signed with when `identify` is used (with a token, the token is the
   * key). Default: random per process; give the same secret to every instance behind one balancer.
   */
  readonly secret?: string;
  /** Allow writes (retry, discard, replay run, resume). Default false: the console is read-only. */
  readonly write?: boolean;
  /**
   * Show payload values (dead letters' values, keys and header values, outbox keys, stored HTTP
   * response bodies) and allow searching dead letters by payload text. Default false: payment
   * payloads hold personal data.
   */
  readonly payloads?: boolean;
  /**
   * The consumer's handlers: needed to retry dead letters, and for replay plans when a handler
   * derives ids with `messageId(event)`.
   */
  readonly handlers?: readonly AnyHandlerDefinition[];
  /**
   * Consumers running in this process, by group id: their paused partitions are listed, and can be
   * resumed where that is safe.
   */
  readonly consumers?: Readonly<Record<string, Pick<InboxConsumer, 'paused' | 'resume'>>>;
  /** Seconds between live updates of a screen. Default 5. */
  readonly refreshSeconds?: number;
  /** Where failures are logged in full (the page shows one line). Default: silent. */
  readonly logger?: Logger;
}

/** Checks the options once, at construction: a console without a lock is refused. */
export function checkConsoleOptions<Req>(options: ConsoleOptions<Req>): void {
  if ((options.token === undefined || options.token === '') && options.identify === undefined) {
    throw configError(
      'token',
      "give the console a token (token: a long random string) or the host app's auth (identify: (req) => user name); it never runs unlocked",
    );
  }
  if (options.token !== undefined && options.token.length < 16) {
    throw configError('token', 'use a token of at least 16 characters (e.g. 32 random bytes, base64url)');
  }
  if (
    options.refreshSeconds !== undefined &&
    (!Number.isFinite(options.refreshSeconds) || options.refreshSeconds < 1)
  ) {
    throw configError('refreshSeconds', 'give a number of seconds of 1 or more');
  }
}
