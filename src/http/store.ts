import type pg from 'pg';

import { resolvePool, type DatabaseInput } from '../inbox/database.js';
import type { StoredResponseHeader } from './tables.js';

/**
 * The advisory lock name of (scope, key). The length prefix keeps ("a:b", "c") and ("a", "b:c")
 * apart. Two different pairs sharing a 64-bit hash only make one of them wait or answer 409: the
 * row itself is looked up by its real primary key.
 */
function lockName(scope: string, key: string): string {
  return `oncely.idempotency:${scope.length}:${scope}:${key}`;
}

/**
 * Tries the transaction-level lock on (scope, key) without waiting, then reads the key's row: two
 * statements in one round trip. They must stay two statements: under READ COMMITTED each takes its
 * snapshot when it starts, so the read sees whatever a previous holder committed before releasing
 * the lock; one statement would have taken its snapshot before the lock and could miss that row.
 * The row is read even when the lock is taken by another request: a live row is final (it changes
 * only after it expires), so concurrent retries of a finished request replay instead of getting 409.
 */
export async function tryLockAndFindKey(
  client: pg.PoolClient,
  scope: string,
  key: string,
): Promise<{ locked: boolean; stored: StoredKey | undefined }> {
  // A simple query (no parameters) so both statements travel together; values are escaped
  // literals (the key is printable ASCII, checked before; the scope any text).
  const results = (await client.query(
    `SELECT pg_try_advisory_xact_lock(hashtextextended(${client.escapeLiteral(lockName(scope, key))}, 0)) AS locked; ` +
      `${SELECT_KEY} WHERE scope = ${client.escapeLiteral(scope)} AND key = ${client.escapeLiteral(key)}`,
  )) as unknown as [pg.QueryResult<{ locked: boolean }>, pg.QueryResult<KeyRow>];
  const row = results[1].rows[0];
  return { locked: results[0].rows[0]?.locked === true, stored: row === undefined ? undefined : toStoredKey(row) };
}

/**
 * Waits at most `timeoutMs` for the lock on (scope, key). `lock_timeout` is set for the wait only
 * and restored after it, so the handler's own statements keep the session's setting. A timeout
 * aborts the transaction: the caller must roll back (it throws the PostgreSQL error 55P03).
 */
export async function waitLockKey(client: pg.PoolClient, scope: string, key: string, timeoutMs: number): Promise<void> {
  const { rows } = await client.query<{ previous: string }>(
    "SELECT current_setting('lock_timeout') AS previous, set_config('lock_timeout', $1, true)",
    [`${Math.max(1, Math.trunc(timeoutMs))}ms`],
  );
  await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lockName(scope, key)]);
  await client.query("SELECT set_config('lock_timeout', $1, true)", [rows[0]?.previous ?? '0']);
}

/** True for PostgreSQL's "lock not available" (lock_timeout expired). */
export function isLockTimeout(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '55P03';
}

export interface StoredKey {
  readonly fingerprint: Buffer;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly headers: StoredResponseHeader[];
  readonly body: Buffer;
  /** False once `expires_at` has passed: the key is then treated as new. */
  readonly live: boolean;
}

interface KeyRow {
  request_fingerprint: Buffer;
  method: string;
  path: string;
  response_status: number;
  response_headers: StoredResponseHeader[];
  response_body: Buffer;
  live: boolean;
}

const SELECT_KEY = `SELECT request_fingerprint, method, path, response_status, response_headers, response_body,
       expires_at > now() AS live
  FROM oncely.idempotency_keys`;

function toStoredKey(row: KeyRow): StoredKey {
  return {
    fingerprint: row.request_fingerprint,
    method: row.method,
    path: row.path,
    status: row.response_status,
    headers: row.response_headers,
    body: row.response_body,
    live: row.live,
  };
}

export async function findKey(client: pg.PoolClient, scope: string, key: string): Promise<StoredKey | undefined> {
  const { rows } = await client.query<KeyRow>(`${SELECT_KEY} WHERE scope = $1 AND key = $2`, [scope, key]);
  const row = rows[0];
  return row === undefined ? undefined : toStoredKey(row);
}

export interface KeyToStore {
  readonly scope: string;
  readonly key: string;
  readonly fingerprint: Buffer;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly headers: readonly StoredResponseHeader[];
  readonly body: Uint8Array;
  readonly ttlMs: number;
}

/**
 * Stores the response in the request's transaction, so it commits with the effects or not at all.
 * An expired row for the key is overwritten; a live one cannot exist here (the caller holds the
 * key's lock and found none), and if it does the statement fails rather than replace it.
 */
export async function storeKey(client: pg.PoolClient, row: KeyToStore): Promise<void> {
  const result = await client.query(
    `INSERT INTO oncely.idempotency_keys AS k
       (scope, key, request_fingerprint, method, path, response_status, response_headers, response_body,
        created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, now(), now() + $9 * interval '1 millisecond')
     ON CONFLICT (scope, key) DO UPDATE SET
       request_fingerprint = EXCLUDED.request_fingerprint, method = EXCLUDED.method, path = EXCLUDED.path,
       response_status = EXCLUDED.response_status, response_headers = EXCLUDED.response_headers,
       response_body = EXCLUDED.response_body, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
     WHERE k.expires_at <= now()`,
    [
      row.scope,
      row.key,
      row.fingerprint,
      row.method,
      row.path,
      row.status,
      JSON.stringify(row.headers),
      Buffer.from(row.body.buffer, row.body.byteOffset, row.body.byteLength),
      row.ttlMs,
    ],
  );
  if (result.rowCount !== 1) {
    throw new Error(`idempotency key row for scope/key was not written (a live row exists): lock invariant broken`);
  }
}

/** Options of {@link purgeExpiredIdempotencyKeys}. */
export interface PurgeIdempotencyKeysOptions {
  /** Rows deleted per statement (each its own short transaction). Default 1000. */
  readonly batchSize?: number;
  /** Stop after this many batches (a time-boxed job). Default: until none is left. */
  readonly maxBatches?: number;
}

/**
 * Deletes expired idempotency keys, oldest first, in batches of `batchSize`, each its own
 * statement so no lock is held long. A key being re-used right now (its row locked by the request
 * that overwrites it) is skipped, never waited for. Safe to run from several processes at once.
 * Returns how many rows were deleted.
 */
export async function purgeExpiredIdempotencyKeys(
  db: DatabaseInput,
  { batchSize = 1000, maxBatches = Number.POSITIVE_INFINITY }: PurgeIdempotencyKeysOptions = {},
): Promise<{ deleted: number }> {
  const { pool, owned } = resolvePool(db);
  let deleted = 0;
  try {
    for (let batch = 0; batch < maxBatches; batch++) {
      // The outer `expires_at <= now()` is re-checked on a row updated meanwhile, so a key that a
      // concurrent request has just renewed is not deleted.
      const result = await pool.query(
        `DELETE FROM oncely.idempotency_keys k
          USING (SELECT scope, key FROM oncely.idempotency_keys
                  WHERE expires_at <= now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) old
          WHERE k.scope = old.scope AND k.key = old.key AND k.expires_at <= now()`,
        [Math.max(1, Math.trunc(batchSize))],
      );
      const count = result.rowCount ?? 0;
      deleted += count;
      if (count < batchSize) break;
    }
  } finally {
    if (owned) await pool.end();
  }
  return { deleted };
}
