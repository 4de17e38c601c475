/** The SQL of `oncely.steps`. Every write is a short transaction of its own on a pooled connection. */
import type pg from 'pg';

import { textArrayLiteral } from '../inbox/claims.js';
import { withPooledClient } from '../inbox/pool.js';

/**
 * Where step rows are read and written. The caller usually holds a connection of the same pool for
 * its own transaction, so each statement's connection is waited for at most `acquireTimeoutMs`
 * (then `ONCELY_POOL_EXHAUSTED`): a pool whose every connection waits for a second one never moves.
 */
export interface StepConnections {
  readonly pool: pg.Pool;
  readonly acquireTimeoutMs: number;
}

export interface StoredStep {
  readonly name: string;
  readonly result: unknown;
  readonly status: 'completed' | 'failed';
  readonly compensable: boolean;
  readonly seq: bigint;
}

/** A row of `oncely.steps` as read back (`seq` as text: a bigint). */
interface StepRow {
  readonly name: string;
  readonly result: unknown;
  readonly status: 'completed' | 'failed';
  readonly compensable: boolean;
  readonly seq: string;
}

function storedStep({ seq, ...row }: StepRow): StoredStep {
  return { ...row, seq: BigInt(seq) };
}

/**
 * Every step row of one owner's generation (0 for a message), in completion order: one round trip
 * per handler attempt.
 */
export async function loadSteps(
  connections: StepConnections,
  scope: string,
  ownerId: string,
  generation: bigint = 0n,
): Promise<Map<string, StoredStep>> {
  const { rows } = await withPooledClient(
    connections.pool,
    connections.acquireTimeoutMs,
    `reading the steps of ${ownerId}`,
    (client) =>
      client.query<StepRow>({
        name: 'oncely-steps-load-v2',
        text: `SELECT name, result, status, compensable, seq FROM oncely.steps
            WHERE scope = $1 AND owner_id = $2 AND generation = $3 ORDER BY seq`,
        values: [scope, ownerId, generation.toString()],
      }),
  );
  return new Map(rows.map((r) => [r.name, storedStep(r)]));
}

/**
 * Every step row of some messages (generation 0), by message id, each in completion order: one
 * round trip for a commit group's members instead of one per member. Read on the caller's
 * connection — a commit group reads in its own transaction, right after its claim: a claim that
 * waited for an earlier owner of an id to end has seen that owner's steps committed, and this read,
 * a statement of its own under READ COMMITTED, takes a snapshot that sees them too. Undefined when
 * the connection's transactions are not READ COMMITTED (a database whose default isolation is
 * higher): their snapshot is taken before the claim waits, so rows recorded meanwhile would be
 * missed.
 */
export async function loadMessageSteps(
  client: pg.ClientBase,
  scope: string,
  messageIds: readonly string[],
): Promise<Map<string, Map<string, StoredStep>> | undefined> {
  if (!(await readsCommitted(client))) return undefined;
  const { rows } = await client.query<StepRow & { readonly owner_id: string }>({
    // One primary-key lookup per id, whatever the table's statistics say: `owner_id = ANY(…)`
    // was planned, on a table never analysed, as a scan of the scope's every row filtered by id.
    // Unnamed, so planned on each call rather than kept from a time the table was empty.
    text: `SELECT s.owner_id, s.name, s.result, s.status, s.compensable, s.seq
             FROM unnest($2::text[]) AS wanted(owner_id)
             CROSS JOIN LATERAL (
               SELECT * FROM oncely.steps i
                WHERE i.scope = $1 AND i.owner_id = wanted.owner_id AND i.generation = 0 OFFSET 0
             ) s
            ORDER BY s.seq`,
    values: [scope, textArrayLiteral(messageIds)],
  });
  const byOwner = new Map<string, Map<string, StoredStep>>();
  for (const { owner_id: ownerId, ...row } of rows) {
    let steps = byOwner.get(ownerId);
    if (steps === undefined) {
      steps = new Map<string, StoredStep>();
      byOwner.set(ownerId, steps);
    }
    steps.set(row.name, storedStep(row));
  }
  return byOwner;
}

/** Whether each connection's transactions run READ COMMITTED: asked once per connection. */
const readCommitted = new WeakMap<pg.ClientBase, boolean>();

async function readsCommitted(client: pg.ClientBase): Promise<boolean> {
  let known = readCommitted.get(client);
  if (known === undefined) {
    // Inside oncely's transaction, begun without a level: the connection's default.
    const { rows } = await client.query<{ transaction_isolation: string }>('SHOW transaction_isolation');
    known = rows[0]?.transaction_isolation === 'read committed';
    readCommitted.set(client, known);
  }
  return known;
}

export interface StepRecord {
  readonly scope: string;
  readonly ownerId: string;
  /** The owner's generation: 0 for a message, the key's generation for an HTTP request. */
  readonly generation: bigint;
  readonly name: string;
  /** JSON text (already serialised, so what is stored is exactly what the caller returns). */
  readonly resultJson: string;
  readonly status: 'completed' | 'failed';
  readonly compensable: boolean;
}

/**
 * Records a step and returns what is recorded for it. Autocommitted at once, with
 * `synchronous_commit = on` (a recovery point that could be lost after a crash is no recovery
 * point). A step completed concurrently by another attempt (a rebalance overlap) wins: its result
 * is returned, so both attempts go on with the same result. A `failed` row (a compensation that
 * gave up earlier) is replaced by a later outcome.
 */
export async function recordStep(connections: StepConnections, step: StepRecord): Promise<{ result: unknown }> {
  return await withPooledClient(
    connections.pool,
    connections.acquireTimeoutMs,
    `recording step "${step.name}"`,
    (client) => recordStepOn(client, step),
  );
}

async function recordStepOn(client: pg.PoolClient, step: StepRecord): Promise<{ result: unknown }> {
  // One statement, so one implicit transaction: set_config(…, true) applies to its commit.
  const { rows } = await client.query<{ inserted: boolean; result: unknown; found: boolean; existing: unknown }>({
    name: 'oncely-steps-record-v2',
    text: `WITH recorded AS (
  INSERT INTO oncely.steps AS s (scope, owner_id, generation, name, result, status, compensable)
  VALUES ($1, $2, $7, $3, $4::jsonb, $5, $6)
  ON CONFLICT (scope, owner_id, generation, name) DO UPDATE
    SET result = EXCLUDED.result, status = EXCLUDED.status, completed_at = now()
    WHERE s.status = 'failed'
  RETURNING result)
SELECT set_config('synchronous_commit', 'on', true) AS sync,
       EXISTS (SELECT 1 FROM recorded) AS inserted,
       (SELECT result FROM recorded) AS result,
       EXISTS (SELECT 1 FROM oncely.steps WHERE scope = $1 AND owner_id = $2 AND generation = $7 AND name = $3) AS found,
       (SELECT result FROM oncely.steps WHERE scope = $1 AND owner_id = $2 AND generation = $7 AND name = $3) AS existing`,
    values: [
      step.scope,
      step.ownerId,
      step.name,
      step.resultJson,
      step.status,
      step.compensable,
      step.generation.toString(),
    ],
  });
  const row = rows[0];
  // jsonb `null` reads as JavaScript null too: the booleans say whether a row was there.
  if (row?.inserted === true) return { result: row.result };
  if (row?.found === true) return { result: row.existing };
  // Recorded by a concurrent attempt that committed after this statement's snapshot: read it now.
  const again = await client.query<{ result: unknown }>(
    'SELECT result FROM oncely.steps WHERE scope = $1 AND owner_id = $2 AND generation = $4 AND name = $3',
    [step.scope, step.ownerId, step.name, step.generation.toString()],
  );
  return { result: again.rows[0]?.result ?? null };
}

/**
 * Deletes steps rows older than `cutoff` whose owner has no inbox row younger than that: the
 * rows of a message go with its inbox row, an HTTP request's (no inbox row) with their age unless
 * their key's generation is still stored (those go with the key, `purgeExpiredIdempotencyKeys`:
 * a live or in-flight generation must still find its completed steps). Deletes
 * in batches of `batchSize` (short lock times), oldest first; returns how many rows it deleted.
 */
export async function deleteOldSteps(pool: pg.Pool, cutoff: Date, batchSize: number): Promise<number> {
  let deleted = 0;
  for (;;) {
    const { rowCount } = await pool.query(
      `WITH doomed AS (
  SELECT s.scope, s.owner_id, s.generation, s.name FROM oncely.steps s
   WHERE s.completed_at < $1::timestamptz
     AND NOT EXISTS (
       SELECT 1 FROM oncely.inbox i
        WHERE i.consumer_group = s.scope AND i.message_id = s.owner_id
          AND i.processed_at >= $1::timestamptz)
     AND NOT EXISTS (
       -- A message whose dead letter is still open may be retried by hand: its completed steps
       -- must replay then, not call the provider again (G9), whatever their age.
       SELECT 1 FROM oncely.dead_letters l
        WHERE s.generation = 0 AND l.consumer_group = s.scope AND l.message_id = s.owner_id AND l.status = 'open')
     AND NOT EXISTS (
       SELECT 1 FROM oncely.idempotency_keys k
        WHERE s.generation > 0 AND k.scope = s.scope AND k.key = s.owner_id AND k.generation = s.generation)
   ORDER BY s.completed_at
   LIMIT $2
   FOR UPDATE SKIP LOCKED)
DELETE FROM oncely.steps s USING doomed d
 WHERE s.scope = d.scope AND s.owner_id = d.owner_id AND s.generation = d.generation AND s.name = d.name`,
      [cutoff, batchSize],
    );
    deleted += rowCount ?? 0;
    if ((rowCount ?? 0) < batchSize) return deleted;
  }
}
