import type pg from 'pg';

import { OncelyError } from '../errors.js';

/*
 * SQL only: which inbox scope a consumer group claims in (`oncely.group_scopes`, migration 0009).
 *
 * One keyspace: inbox rows, horizons, plans, purges, retention, dead letters and steps are keyed
 * by the scope; Kafka offsets and `oncely.offsets` stay per group. Operators name a group; these
 * functions find its scope.
 */

/**
 * Records, at a consumer's start, the scope the group claims in and the topics it consumes.
 * Returns the scope recorded before, when it was another one (the group moved to another inbox).
 */
export async function recordGroupScope(
  pool: pg.Pool,
  entry: { readonly groupId: string; readonly inboxScope: string; readonly topics: readonly string[] },
): Promise<string | undefined> {
  const { rows } = await pool.query<{ previous: string | null }>(
    `WITH previous AS (SELECT inbox_scope FROM oncely.group_scopes WHERE consumer_group = $1)
     INSERT INTO oncely.group_scopes AS g (consumer_group, inbox_scope, topics)
     VALUES ($1, $2, $3::text[])
     ON CONFLICT (consumer_group) DO UPDATE
       SET inbox_scope = EXCLUDED.inbox_scope, topics = EXCLUDED.topics, updated_at = now()
     RETURNING (SELECT inbox_scope FROM previous) AS previous`,
    [entry.groupId, entry.inboxScope, [...entry.topics].sort()],
  );
  const previous = rows[0]?.previous ?? null;
  return previous !== null && previous !== entry.inboxScope ? previous : undefined;
}

/**
 * The inbox scope of `groupId`: the one its consumer recorded at its last start, or the group id
 * when it never recorded one (a group that never ran, or last ran before migration 0009, claimed
 * in its own id). An `explicit` scope is used when nothing is recorded and must agree with what
 * is: planning or purging another scope than the one the group claims in would count and delete
 * the wrong rows, so a contradiction is refused.
 */
export async function resolveInboxScope(
  db: pg.Pool | pg.ClientBase,
  groupId: string,
  explicit?: string,
): Promise<string> {
  const { rows } = await db.query<{ inbox_scope: string }>(
    'SELECT inbox_scope FROM oncely.group_scopes WHERE consumer_group = $1',
    [groupId],
  );
  const recorded = rows[0]?.inbox_scope;
  if (explicit !== undefined && recorded !== undefined && explicit !== recorded) {
    throw new OncelyError(
      'ONCELY_CONFIG',
      `Invalid option \`inboxScope\`: group "${groupId}" claims in inbox scope "${recorded}" (recorded by its consumer at ` +
        `its last start), not "${explicit}". Leave --inbox-scope out, or give "${recorded}".`,
      { context: { option: 'inboxScope', groupId, recorded, explicit } },
    );
  }
  if (explicit !== undefined && explicit.length === 0) {
    throw new OncelyError('ONCELY_CONFIG', 'Invalid option `inboxScope`: must not be empty.', {
      context: { option: 'inboxScope', groupId },
    });
  }
  return recorded ?? explicit ?? groupId;
}

/** A group that reads a scope: its topics, or null when unknown (then: those it has resume points for). */
export interface ScopeReader {
  readonly groupId: string;
  readonly topics: readonly string[] | null;
}

/**
 * Every group that reads `scope`: those recorded with it, and the group named like the scope when
 * it recorded nothing (it claims in its own id by default). `also` is counted in whatever is
 * recorded (the group a purge was asked about, whose consumer may not have started yet).
 */
export async function scopeReaders(db: pg.Pool | pg.ClientBase, scope: string, also?: string): Promise<ScopeReader[]> {
  const { rows } = await db.query<{ consumer_group: string; topics: string[] | null }>(
    `SELECT consumer_group, topics FROM oncely.group_scopes WHERE inbox_scope = $1
     UNION ALL
     SELECT g, NULL FROM unnest(ARRAY[$1, $2]::text[]) AS g
      WHERE g IS NOT NULL AND NOT EXISTS (SELECT 1 FROM oncely.group_scopes s WHERE s.consumer_group = g)
     ORDER BY 1`,
    [scope, also ?? null],
  );
  const readers = new Map<string, ScopeReader>();
  for (const row of rows) readers.set(row.consumer_group, { groupId: row.consumer_group, topics: row.topics });
  return [...readers.values()];
}
