/**
 * The console's own SQL: its audit log (`oncely.console_audit`, migration 0010) and the throughput
 * it charts. Every value travels as a parameter; no statement is built from request text.
 */
import type pg from 'pg';

export interface AuditEntry {
  readonly id: string;
  readonly actor: string;
  readonly auth: 'token' | 'host';
  readonly remoteAddress: string | null;
  readonly action: string;
  readonly target: Record<string, unknown>;
  readonly outcome: 'done' | 'refused' | 'failed' | null;
  readonly result: string | null;
  readonly createdAt: Date;
  readonly finishedAt: Date | null;
}

export interface Actor {
  readonly name: string;
  readonly auth: 'token' | 'host';
  readonly remoteAddress: string | undefined;
}

/** Records a write before it runs; returns the row's id, to finish it with {@link finishAudit}. */
export async function startAudit(
  pool: pg.Pool,
  actor: Actor,
  action: string,
  target: Record<string, unknown>,
): Promise<string> {
  const { rows } = await pool.query<{ id: string }>(
    `INSERT INTO oncely.console_audit (actor, auth, remote_address, action, target)
     VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id`,
    [actor.name, actor.auth, actor.remoteAddress ?? null, action, JSON.stringify(target)],
  );
  return rows[0]?.id ?? '';
}

export async function finishAudit(
  pool: pg.Pool,
  id: string,
  outcome: 'done' | 'refused' | 'failed',
  result: string,
): Promise<void> {
  await pool.query('UPDATE oncely.console_audit SET outcome = $2, result = $3, finished_at = now() WHERE id = $1', [
    id,
    outcome,
    result,
  ]);
}

export async function readAudit(pool: pg.Pool, limit = 100): Promise<AuditEntry[]> {
  const { rows } = await pool.query<{
    id: string;
    actor: string;
    auth: 'token' | 'host';
    remote_address: string | null;
    action: string;
    target: Record<string, unknown>;
    outcome: AuditEntry['outcome'];
    result: string | null;
    created_at: Date;
    finished_at: Date | null;
  }>('SELECT * FROM oncely.console_audit ORDER BY id DESC LIMIT $1', [limit]);
  return rows.map((r) => ({
    id: r.id,
    actor: r.actor,
    auth: r.auth,
    remoteAddress: r.remote_address,
    action: r.action,
    target: r.target,
    outcome: r.outcome,
    result: r.result,
    createdAt: r.created_at,
    finishedAt: r.finished_at,
  }));
}

/**
 * Messages recorded as processed per group and minute over the last `minutes`, from the inbox's
 * `processed_at` (indexed for retention): throughput that survives restarts of the console.
 */
export async function processedPerMinute(
  pool: pg.Pool,
  minutes: number,
): Promise<{ groupId: string; minute: number; count: number }[]> {
  const { rows } = await pool.query<{ consumer_group: string; minute: string; n: string }>(
    `SELECT consumer_group, floor(extract(epoch FROM processed_at) / 60)::bigint AS minute, count(*) AS n
       FROM oncely.inbox
      WHERE processed_at > now() - $1 * interval '1 minute' AND status = 'processed'
      GROUP BY 1, 2 ORDER BY 1, 2`,
    [minutes],
  );
  return rows.map((r) => ({ groupId: r.consumer_group, minute: Number(r.minute), count: Number(r.n) }));
}

/** The consumer groups oncely knows of (recorded offsets or scopes), for the replay form. */
export async function knownGroups(pool: pg.Pool): Promise<{ groupId: string; topics: string[] }[]> {
  const { rows } = await pool.query<{ consumer_group: string; topics: string[] }>(
    `SELECT consumer_group, array_agg(DISTINCT topic ORDER BY topic) AS topics
       FROM oncely.offsets GROUP BY 1 ORDER BY 1`,
  );
  return rows.map((r) => ({ groupId: r.consumer_group, topics: r.topics }));
}
