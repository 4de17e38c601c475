import type pg from 'pg';

/** What one consumer group has recorded, per topic. */
export interface GroupStatus {
  readonly groupId: string;
  readonly topic: string;
  /** Next offset to read, per partition, as recorded with the last outcome. */
  readonly partitions: readonly { readonly partition: number; readonly nextOffset: string; readonly updatedAt: Date }[];
  /** Messages recorded as processed in the inbox (duplicates are not counted again). */
  readonly processed: number;
  /**
   * Records in `oncely.dead_letters`, one per record that could not be applied (also those without
   * a valid id, and reused ids, which have no inbox row of their own), by status.
   */
  readonly deadLetters: {
    readonly total: number;
    readonly open: number;
    readonly retried: number;
    readonly discarded: number;
  };
}

/** A summary of the inbox per group and topic, for `oncely status`. */
export async function readGroupStatus(pool: pg.Pool): Promise<GroupStatus[]> {
  const [offsets, inbox, letters] = await Promise.all([
    pool.query<{ consumer_group: string; topic: string; partition: number; next_offset: string; updated_at: Date }>(
      'SELECT consumer_group, topic, partition, next_offset, updated_at FROM oncely.offsets ORDER BY 1, 2, 3',
    ),
    pool.query<{ consumer_group: string; topic: string; processed: string }>(
      `SELECT consumer_group, topic, count(*) AS processed FROM oncely.inbox WHERE status = 'processed' GROUP BY 1, 2`,
    ),
    // One source for every dead-letter count: the inbox's dead_lettered rows miss the records that
    // had no valid id or reused one, which is how two different counts once appeared side by side.
    pool.query<{
      consumer_group: string;
      topic: string;
      total: string;
      open: string;
      retried: string;
      discarded: string;
    }>(
      `SELECT consumer_group, topic, count(*) AS total,
              count(*) FILTER (WHERE status = 'open') AS open,
              count(*) FILTER (WHERE status = 'retried') AS retried,
              count(*) FILTER (WHERE status = 'discarded') AS discarded
         FROM oncely.dead_letters GROUP BY 1, 2`,
    ),
  ]);
  const key = (group: string, topic: string): string => JSON.stringify([group, topic]);
  type Entry = {
    -readonly [K in keyof GroupStatus]: K extends 'partitions' ? GroupStatus['partitions'][number][] : GroupStatus[K];
  };
  const groups = new Map<string, Entry>();
  const entry = (groupId: string, topic: string): Entry => {
    let found = groups.get(key(groupId, topic));
    if (found === undefined) {
      found = {
        groupId,
        topic,
        partitions: [],
        processed: 0,
        deadLetters: { total: 0, open: 0, retried: 0, discarded: 0 },
      };
      groups.set(key(groupId, topic), found);
    }
    return found;
  };
  for (const row of offsets.rows) {
    entry(row.consumer_group, row.topic).partitions.push({
      partition: row.partition,
      nextOffset: row.next_offset,
      updatedAt: row.updated_at,
    });
  }
  for (const row of inbox.rows) entry(row.consumer_group, row.topic).processed = Number(row.processed);
  for (const row of letters.rows) {
    entry(row.consumer_group, row.topic).deadLetters = {
      total: Number(row.total),
      open: Number(row.open),
      retried: Number(row.retried),
      discarded: Number(row.discarded),
    };
  }
  return [...groups.values()].sort((a, b) => a.groupId.localeCompare(b.groupId) || a.topic.localeCompare(b.topic));
}

/** Open dead letters of one group, per topic and reason. */
export interface OpenDeadLetterCount {
  readonly topic: string;
  readonly reason: string;
  readonly open: number;
}

/**
 * Counts a group's open dead letters per topic and reason, for the `oncely_dead_letters_open`
 * gauge and `oncely doctor`. Served by a scan of the open rows only (few, on a healthy system).
 * Dead letters are kept in the group's inbox scope (`oncely.group_scopes`; the group id when none
 * is recorded), so a group renamed with `inboxScope` counts the ones it shares with its old name.
 */
export async function countOpenDeadLetters(pool: pg.Pool, groupId: string): Promise<OpenDeadLetterCount[]> {
  const { rows } = await pool.query<{ topic: string; reason: string; open: string }>(
    `SELECT topic, reason, count(*) AS open FROM oncely.dead_letters
      WHERE status = 'open'
        AND consumer_group = coalesce((SELECT inbox_scope FROM oncely.group_scopes WHERE consumer_group = $1), $1)
      GROUP BY 1, 2 ORDER BY 1, 2`,
    [groupId],
  );
  return rows.map((r) => ({ topic: r.topic, reason: r.reason, open: Number(r.open) }));
}

/** Per topic, the replays of a group still running: messages re-read so far, and left to re-read. */
export interface RunningReplayTotals {
  readonly topic: string;
  readonly replayed: number;
  readonly remaining: number;
}

/**
 * What the replay metrics show, summed per topic over the group's replays whose group has not yet
 * passed the end of every range. Reads the audit rows and `oncely.offsets` only (a few rows per
 * replay), never the inbox: cheap enough for a scrape.
 */
export async function runningReplayTotals(pool: pg.Pool, groupId: string): Promise<RunningReplayTotals[]> {
  const { rows } = await pool.query<{ topic: string; replayed: string; remaining: string }>(
    `WITH ranges AS (
       SELECT r.id, r.topic, x.start, x."end",
              -- Where the group is within the range: its resume point, held to [start, end].
              LEAST(GREATEST(COALESCE(o.next_offset, x.start), x.start), x."end") AS reached
         FROM oncely.replays r
        CROSS JOIN jsonb_to_recordset(r.ranges) AS x(partition int, start bigint, "end" bigint)
         LEFT JOIN oncely.offsets o
           ON o.consumer_group = r.consumer_group AND o.topic = r.topic AND o.partition = x.partition
        WHERE r.consumer_group = $1 AND r.completed_at IS NULL)
     SELECT topic, sum(reached - start)::text AS replayed, sum("end" - reached)::text AS remaining
       FROM ranges
      WHERE id IN (SELECT id FROM ranges GROUP BY id HAVING sum("end" - reached) > 0)
      GROUP BY topic`,
    [groupId],
  );
  return rows.map((r) => ({ topic: r.topic, replayed: Number(r.replayed), remaining: Number(r.remaining) }));
}
