import type pg from 'pg';

import { resolvePool, type DatabaseInput } from '../inbox/database.js';
import type { StoredResponseHeader } from './tables.js';

/**
 * The advisory lock name of (scope, key): `oncely.idempotency:<UTF-16 length of scope>:<scope>:<key>`.
 * Unambiguous: the length says where the scope ends, the key is the rest, so ("a:b", "c") and
 * ("a", "b:c") never share a name. It is hashed as UTF-8 text, which is why scopes must be
 * well-formed (checked before): a lone surrogate would become U+FFFD and two scopes one name.
 * Two different pairs sharing a 64-bit hash only make one of them wait or answer 409: the row
 * itself is looked up by its real primary key. Never change it: during a rolling upgrade, old and
 * new processes must take the same lock for one key.
 */
export function lockName(scope: string, key: string): string {
  return `oncely.idempotency:${scope.length}:${scope}:${key}`;
}

/**
 * Tries the transaction-level lock on (scope, key) without waiting, then reads the key's row: two
 * statements in one round trip. They must stay two statements: under READ COMMITTED each takes its
 * snapshot when it starts, so the read sees whatever a previous holder committed before releasing
 * the lock; one statement would have taken its snapshot before the lock and could miss that row.
 * The row is read even when the lock is taken by another request: a live completed row is final
 * (it changes only after it expires), so concurrent retries of a finished request replay instead of
 * getting 409, and a live row of another request is refused (422) at once.
 *
 * `forUpdate` (the request's own transaction) also locks the row, so that the ttl purge, which
 * skips locked rows, never removes a key whose request is running, however long it runs. Rows
 * locked by someone else are skipped rather than waited for: with the key's lock held that can only
 * be a purge batch deleting an expired row, and the caller then answers 409 (retry later).
 */
export async function tryLockAndFindKey(
  client: pg.PoolClient,
  scope: string,
  key: string,
  { forUpdate = false }: { forUpdate?: boolean } = {},
): Promise<{ locked: boolean; stored: StoredKey | undefined }> {
  // A simple query (no parameters) so both statements travel together; values are escaped
  // literals (the key is printable ASCII, checked before; the scope any well-formed text).
  const results = (await client.query(
    `SELECT pg_try_advisory_xact_lock(hashtextextended(${client.escapeLiteral(lockName(scope, key))}, 0)) AS locked; ` +
      `${SELECT_KEY} WHERE scope = ${client.escapeLiteral(scope)} AND key = ${client.escapeLiteral(key)}` +
      (forUpdate ? ' FOR UPDATE SKIP LOCKED' : ''),
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

/** A key's row: its current generation, in progress or completed with its response. */
export interface StoredKey {
  readonly generation: bigint;
  readonly completed: boolean;
  readonly fingerprint: Buffer;
  readonly method: string;
  readonly path: string;
  /** The stored response; undefined while the generation is in progress. */
  readonly response:
    { readonly status: number; readonly headers: StoredResponseHeader[]; readonly body: Buffer } | undefined;
  /** False once `expires_at` has passed: the key is then treated as new (a new generation). */
  readonly live: boolean;
}

interface KeyRow {
  generation: string;
  status: 'in_progress' | 'completed';
  request_fingerprint: Buffer;
  method: string;
  path: string;
  response_status: number | null;
  response_headers: StoredResponseHeader[];
  response_body: Buffer | null;
  live: boolean;
}

// `clock_timestamp()`, not `now()`: a waiter's transaction began before its wait, and a key must be
// judged by the time it is read.
const SELECT_KEY = `SELECT generation::text, status, request_fingerprint, method, path, response_status,
       response_headers, response_body, expires_at > clock_timestamp() AS live
  FROM oncely.idempotency_keys`;

function toStoredKey(row: KeyRow): StoredKey {
  const completed = row.status === 'completed' && row.response_status !== null && row.response_body !== null;
  return {
    generation: BigInt(row.generation),
    completed,
    fingerprint: row.request_fingerprint,
    method: row.method,
    path: row.path,
    response: completed
      ? { status: row.response_status ?? 0, headers: row.response_headers, body: row.response_body ?? Buffer.alloc(0) }
      : undefined,
    live: row.live,
  };
}

/** Reads the key's row (after {@link waitLockKey}); `forUpdate` locks it (see {@link tryLockAndFindKey}). */
export async function findKey(
  client: pg.PoolClient,
  scope: string,
  key: string,
  { forUpdate = false }: { forUpdate?: boolean } = {},
): Promise<StoredKey | undefined> {
  const { rows } = await client.query<KeyRow>(
    `${SELECT_KEY} WHERE scope = $1 AND key = $2${forUpdate ? ' FOR UPDATE' : ''}`,
    [scope, key],
  );
  const row = rows[0];
  return row === undefined ? undefined : toStoredKey(row);
}

export interface GenerationToStart {
  readonly scope: string;
  readonly key: string;
  readonly fingerprint: Buffer;
  readonly method: string;
  readonly path: string;
  readonly ttlMs: number;
  /** The expired generation this one replaces, if the key had a row: its steps are deleted. */
  readonly previous: bigint | undefined;
}

/**
 * Starts a new generation of the key: its row, `in_progress` with the request's fingerprint, and
 * a generation number from the sequence (never one the key had before, even after a purge). The
 * caller commits this at once, before the request's own transaction: from then on the key is bound
 * to this request's parameters (another request with it is 422) and its steps and events have an
 * owner, whether or not the request finishes. The replaced generation's steps go with it: their
 * recovery points belong to a request whose key expired. Until the response is stored the row
 * expires `ttlMs` after first use, so a crashed attempt's key is bound for the ttl, like a finished
 * one. Throws if a live row exists (the caller holds the key's lock and found none: broken invariant).
 */
export async function startGeneration(client: pg.PoolClient, row: GenerationToStart): Promise<bigint> {
  const { rows } = await client.query<{ generation: string | null }>(
    `WITH started AS (
  INSERT INTO oncely.idempotency_keys AS k
    (scope, key, generation, status, request_fingerprint, method, path,
     response_status, response_headers, response_body, created_at, expires_at)
  VALUES ($1, $2, nextval('oncely.idempotency_generation_seq'), 'in_progress', $3, $4, $5,
          NULL, '[]', NULL, clock_timestamp(), clock_timestamp() + $6 * interval '1 millisecond')
  ON CONFLICT (scope, key) DO UPDATE SET
    generation = EXCLUDED.generation, status = EXCLUDED.status,
    request_fingerprint = EXCLUDED.request_fingerprint, method = EXCLUDED.method, path = EXCLUDED.path,
    response_status = NULL, response_headers = '[]', response_body = NULL,
    created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
  WHERE k.expires_at <= clock_timestamp()
  RETURNING k.generation),
dropped AS (
  DELETE FROM oncely.steps s
   WHERE s.scope = $1 AND s.owner_id = $2 AND s.generation = $7::bigint AND EXISTS (SELECT 1 FROM started))
-- A recovery point that a crash could lose is none: this commit is durable whatever the session says.
SELECT set_config('synchronous_commit', 'on', true) AS sync, (SELECT generation::text FROM started) AS generation`,
    [row.scope, row.key, row.fingerprint, row.method, row.path, row.ttlMs, row.previous?.toString() ?? null],
  );
  const generation = rows[0]?.generation;
  if (generation === null || generation === undefined) {
    throw new Error('idempotency key row for scope/key was not written (a live row exists): lock invariant broken');
  }
  return BigInt(generation);
}

export interface ResponseToStore {
  readonly scope: string;
  readonly key: string;
  readonly generation: bigint;
  readonly status: number;
  readonly headers: readonly StoredResponseHeader[];
  readonly body: Uint8Array;
  readonly ttlMs: number;
}

/**
 * Completes the generation with its response, in the request's transaction, so it commits with the
 * effects or not at all. The ttl counts from now (`clock_timestamp()`, not the transaction's start):
 * a request that ran longer than its ttl still stores a live key, so its retries replay it.
 */
export async function storeResponse(client: pg.PoolClient, row: ResponseToStore): Promise<void> {
  const result = await client.query(
    `UPDATE oncely.idempotency_keys
        SET status = 'completed', response_status = $4, response_headers = $5::jsonb, response_body = $6,
            expires_at = clock_timestamp() + $7 * interval '1 millisecond'
      WHERE scope = $1 AND key = $2 AND generation = $3 AND status = 'in_progress'`,
    [
      row.scope,
      row.key,
      row.generation.toString(),
      row.status,
      JSON.stringify(row.headers),
      Buffer.from(row.body.buffer, row.body.byteOffset, row.body.byteLength),
      row.ttlMs,
    ],
  );
  if (result.rowCount !== 1) {
    // The row is locked by this transaction since the handler started: nothing else can change it.
    throw new Error('idempotency key generation was not in progress when its response was stored: invariant broken');
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
 * Deletes expired idempotency keys with the steps of their generation, oldest first, in batches of
 * `batchSize`, each its own statement so no lock is held long. A key whose request is running (its
 * row locked by the request's transaction, even past its ttl) is skipped, never waited for. Safe to
 * run from several processes at once. Returns how many key rows were deleted.
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
      // concurrent request has just renewed is not deleted. The generation's steps go in the same
      // statement: recovery points of a generation that can never run again.
      const result = await pool.query<{ deleted: number }>(
        `WITH gone AS (
  DELETE FROM oncely.idempotency_keys k
   USING (SELECT scope, key FROM oncely.idempotency_keys
           WHERE expires_at <= now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) old
   WHERE k.scope = old.scope AND k.key = old.key AND k.expires_at <= now()
  RETURNING k.scope, k.key, k.generation),
steps AS (
  DELETE FROM oncely.steps s USING gone
   WHERE s.scope = gone.scope AND s.owner_id = gone.key AND s.generation = gone.generation)
SELECT count(*)::int AS deleted FROM gone`,
        [Math.max(1, Math.trunc(batchSize))],
      );
      const count = result.rows[0]?.deleted ?? 0;
      deleted += count;
      if (count < batchSize) break;
    }
  } finally {
    if (owned) await pool.end();
  }
  return { deleted };
}
