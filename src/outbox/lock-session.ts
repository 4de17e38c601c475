/**
 * The relay's lock session: a connection of its own (not from the pool) that holds the relay's
 * advisory lock and LISTENs for new outbox rows for its whole life, and knows how long the lock is
 * surely still its own (the lease).
 */
import pg from 'pg';
import type { Logger } from 'pino';

/**
 * A fixed key for the relay's session-level advisory lock: one active relay per database. Next to
 * the migrations' key ("oncely" in ASCII) and distinct from it.
 */
export const RELAY_LOCK_KEY = 0x6f6e63656c79n + 0x0b0en;

/** The lock session stopped answering, or could not be confirmed within half its lease. */
export class LockSessionLost extends Error {}

/**
 * The settings that make PostgreSQL itself end the session of a relay that stopped talking to it,
 * so its advisory lock is released within the lease however the connection died:
 * - `idle_session_timeout` / `idle_in_transaction_session_timeout`: the session of a relay that
 *   sends nothing for a lease is ended (the relay confirms it every quarter lease, so a live one
 *   never is). This also covers a peer whose TCP stack still answers (a frozen proxy, a paused VM).
 * - `tcp_keepalives_*` and `tcp_user_timeout`: a peer that vanished is noticed in about a lease
 *   even while the server waits to send to it (where the idle timeout does not count).
 * - `statement_timeout`: no statement on the lock session runs longer than half a lease.
 * TCP settings are ignored on a Unix socket; the idle timeout needs PostgreSQL 14.
 */
export function lockSessionSettings(lockLeaseMs: number, serverVersion: number): Record<string, string> {
  const seconds = (ms: number): string => String(Math.max(1, Math.floor(ms / 1000)));
  const settings: Record<string, string> = {
    idle_in_transaction_session_timeout: String(lockLeaseMs),
    statement_timeout: String(Math.floor(lockLeaseMs / 2)),
    tcp_keepalives_idle: seconds(lockLeaseMs / 3),
    tcp_keepalives_interval: seconds(lockLeaseMs / 6),
    tcp_keepalives_count: '3',
    tcp_user_timeout: String(lockLeaseMs),
  };
  if (serverVersion >= 140000) settings.idle_session_timeout = String(lockLeaseMs);
  return settings;
}

/** How often the lock session is confirmed (a query) while nothing else runs on it: a quarter lease. */
function heartbeatMs(lockLeaseMs: number): number {
  return Math.max(250, Math.floor(lockLeaseMs / 4));
}

export interface LockSessionConfig {
  readonly connection: pg.ClientConfig;
  readonly lockLeaseMs: number;
  readonly logger: Logger;
  /** Called once the session stops answering (an error, its end, a heartbeat without answer). */
  readonly onLost: (session: LockSession) => void;
  /** Called on every LISTEN notification. */
  readonly onNotification: () => void;
}

export class LockSession {
  /**
   * When the session last answered, as the time its query was sent (performance.now()): the
   * server had not ended the session before then, so it cannot end it (and free the lock) before
   * this plus the lease. Sends start only within half a lease of it (see {@link holdLease}).
   */
  #confirmedAt = Number.NEGATIVE_INFINITY;
  #lost = false;
  #closed = false;
  #heartbeat: NodeJS.Timeout | undefined;

  private constructor(
    private readonly client: pg.Client,
    private readonly config: LockSessionConfig,
  ) {}

  /** Opens a session with the lease's settings (see {@link lockSessionSettings}); on failure nothing stays open. */
  static async open(config: LockSessionConfig): Promise<LockSession> {
    const session = new LockSession(new pg.Client(config.connection), config);
    const { client, config: s } = session;
    client.on('error', (error) => {
      if (!session.#lost) s.logger.warn({ err: error }, 'the outbox relay lost its database connection');
      session.markLost();
    });
    client.on('end', () => session.markLost());
    client.on('notification', () => s.onNotification());
    try {
      await client.connect();
      // The lease (see lockSessionSettings): PostgreSQL ends this session if the relay goes silent.
      const { rows } = await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
      const values = lockSessionSettings(s.lockLeaseMs, Number(rows[0]?.v ?? 0));
      await client.query(
        `SELECT ${Object.keys(values)
          .map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, false)`)
          .join(', ')}`,
        Object.entries(values).flat(),
      );
      if (values.idle_session_timeout === undefined) {
        s.logger.warn(
          { lockLeaseMs: s.lockLeaseMs },
          'PostgreSQL before 14 has no idle_session_timeout: a relay cut off behind a live TCP peer keeps its lock until TCP gives up',
        );
      }
    } catch (error) {
      await endWithin(client, 1_000);
      throw error;
    }
    session.startHeartbeat();
    return session;
  }

  /** Whether the session stopped answering: whatever the relay does now, it sends nothing more. */
  get lost(): boolean {
    return this.#lost;
  }

  /** Runs a query on the session; once it answers, the session is confirmed as of when it was sent. */
  async run<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
    const sentAt = performance.now();
    const result = await work(this.client);
    if (!this.#closed && !this.#lost) this.#confirmedAt = Math.max(this.#confirmedAt, sentAt);
    return result;
  }

  /** Tries to take the relay's advisory lock; false while another relay's session holds it. */
  async tryLock(): Promise<boolean> {
    const { rows } = await this.run((c) =>
      c.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [RELAY_LOCK_KEY.toString()]),
    );
    return rows[0]?.locked === true;
  }

  async listen(channel: string): Promise<void> {
    await this.client.query(`LISTEN ${channel}`);
  }

  /**
   * Called right before every send: the lock is surely still this relay's for half a lease after
   * the session last answered (PostgreSQL ends a silent session only a whole lease after its last
   * command), so a send may start within that half; past it, the session is asked again, and a
   * relay that cannot confirm it (a frozen or lost connection) sends nothing — another relay may
   * hold the lock by now. A send already under way when the lease runs out may still land: its
   * rows are not marked, so the next active relay sends them again with the same message-id.
   */
  async holdLease(): Promise<void> {
    const halfLease = this.config.lockLeaseMs / 2;
    if (!this.#lost && performance.now() - this.#confirmedAt < halfLease) return;
    if (!this.#lost) await this.run((c) => c.query('SELECT 1')).catch(() => undefined);
    if (this.#lost || performance.now() - this.#confirmedAt >= halfLease) {
      throw new LockSessionLost('the relay could not confirm its lock within half its lease; it stops sending');
    }
  }

  /**
   * Ends the session, which releases the advisory lock: a standby takes over. A connection that
   * stopped answering may never confirm the end: it is cut after a moment (the server ends that
   * session on its own within the lease).
   */
  async end(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    this.#confirmedAt = Number.NEGATIVE_INFINITY;
    await endWithin(this.client, 1_000);
  }

  private markLost(): void {
    this.#lost = true;
    this.config.onLost(this);
  }

  /**
   * Confirms the session while the relay waits (for the broker, a notification, the lock): a
   * live relay is never idle for a lease, and a relay whose session stops answering learns it
   * within half a lease (the query times out) and stops being active.
   */
  private startHeartbeat(): void {
    const every = heartbeatMs(this.config.lockLeaseMs);
    this.#heartbeat = setInterval(() => {
      if (this.#closed || this.#lost) return;
      if (performance.now() - this.#confirmedAt < every) return;
      this.run((c) => c.query('SELECT 1')).catch((error: unknown) => {
        if (!this.#lost)
          this.config.logger.warn({ err: error }, 'the outbox relay could not confirm its database session');
        this.markLost();
      });
    }, every / 2);
    this.#heartbeat.unref();
  }
}

/**
 * Ends a pg client, waiting at most `ms` for the server to confirm: a connection that stopped
 * answering would keep `end()` waiting for ever. Then its socket is destroyed.
 */
async function endWithin(db: pg.Client, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const ended = await Promise.race([
    db.end().then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
  ]);
  clearTimeout(timer);
  if (!ended) (db as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}
