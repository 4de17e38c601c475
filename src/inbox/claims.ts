import type pg from 'pg';

/** The outcome stored in `oncely.inbox.status`. */
export type InboxStatus = 'processed' | 'dead_lettered';

export interface ClaimRequest {
  /** The consumer group: its resume point is recorded in `oncely.offsets`. */
  readonly groupId: string;
  /** The inbox the id is claimed in (`inbox.consumer_group`): the group's own unless shared. */
  readonly inboxScope: string;
  readonly messageId: string;
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  /** The partition's next offset to record with the outcome: `offset + 1`. */
  readonly nextOffset: string;
  readonly payloadHash: Buffer;
  /**
   * The record's Kafka timestamp (ms since the epoch, decimal): with `payloadHash`, the
   * {@link ResumeMark} of `nextOffset`.
   */
  readonly timestamp: string;
  readonly status: InboxStatus;
  readonly attempts: number;
  readonly firstSeenAt: Date;
}

/** The row that holds a message id, as a duplicate is classified against it. */
export interface InboxEntry {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly payloadHash: Buffer;
  readonly status: InboxStatus;
  /**
   * When the holder's outcome was recorded: a duplicate's age is measured from it. Null when the
   * original outcome is a dead letter without an inbox row of its own (key reuse, invalid id).
   */
  readonly processedAt: Date | null;
}

export type ClaimResult =
  /**
   * `row` locates the inserted inbox row for {@link reclassifyClaims} (valid in this transaction);
   * null when the claim did not send it back (a commit group's): the row is then found by its id,
   * with {@link reclassifyChunkClaims}.
   */
  { readonly claimed: true; readonly row: string | null } | { readonly claimed: false; readonly existing: InboxEntry };

/**
 * What recognises a partition's log at its resume point: the record just before it
 * (`next_offset − 1`), by its payload fingerprint and its Kafka timestamp. Written by the same
 * statement that records the offset; on assignment the consumer fetches that record again and
 * compares (pipeline/lifecycle/resume-points.ts): a topic deleted and re-created holds other records there,
 * whatever its length.
 */
export interface ResumeMark {
  /** SHA-256 of the record's value (its payload fingerprint). */
  readonly payloadHash: Buffer;
  /** The record's Kafka timestamp: milliseconds since the epoch, as a decimal string. */
  readonly timestamp: string;
}

/**
 * The CTE that records a partition's next offset, with the {@link ResumeMark} of the record before
 * it. The offset only ever moves forward (GREATEST): a late duplicate of an old offset must not
 * rewind the resume point, nor replace its mark with an older record's. At an equal offset the
 * mark is the same record's, so writing it again fills a row from before the mark existed.
 */
function moveResumePoint(group: string, topic: string, partition: string, next: string, hash: string, ts: string) {
  return `moved AS (
  INSERT INTO oncely.offsets AS o (consumer_group, topic, partition, next_offset, previous_payload_hash, previous_timestamp)
  VALUES (${group}, ${topic}, ${partition}, ${next}::bigint, ${hash}, ${ts}::bigint)
  ON CONFLICT (consumer_group, topic, partition)
  DO UPDATE SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset),
    previous_payload_hash = CASE WHEN EXCLUDED.next_offset >= o.next_offset
      THEN EXCLUDED.previous_payload_hash ELSE o.previous_payload_hash END,
    previous_timestamp = CASE WHEN EXCLUDED.next_offset >= o.next_offset
      THEN EXCLUDED.previous_timestamp ELSE o.previous_timestamp END,
    updated_at = now()
)`;
}

interface HolderRow {
  topic: string | null;
  partition: number | null;
  offset: string | null;
  payload_hash: Buffer | null;
  status: InboxStatus | null;
  processed_at: Date | null;
}

/**
 * One statement, one round trip: claim the id, record the partition's next offset, and set
 * `synchronous_commit = on` for this transaction only (an inbox commit that could be lost after its
 * offset reached Kafka would be a lost message; LOCAL leaves the session of a shared pool as it was).
 *
 * The claim is an INSERT … ON CONFLICT DO NOTHING on the primary key, never a select-then-insert:
 * a concurrent claimer of the same id waits on the unique index until the first transaction ends,
 * then sees the conflict (or inserts, when the first rolled back). The offsets row only ever moves
 * forward (GREATEST): a late duplicate of an old offset must not rewind the resume point. The
 * claimed record is the one before `nextOffset`, so its fingerprint ($6) and timestamp mark the
 * resume point — no extra round trip, one more parameter.
 *
 * The statement does not read the inbox: a read in it would be planned once for the prepared
 * statement, possibly while the inbox was empty, and that plan (a sequential scan) would then run
 * on every claim as the table grows. The holder of a taken id is read separately, only then.
 */
export const CLAIM = {
  name: 'oncely_claim_v5',
  text: `
WITH claimed AS (
  INSERT INTO oncely.inbox
    (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at)
  VALUES ($11, $2, $3, $4, $5::bigint, $6, $7, $8, $9)
  ON CONFLICT (consumer_group, message_id) DO NOTHING
  RETURNING ctid
), ${moveResumePoint('$1', '$3', '$4', '$10', '$6', '$12')}
SELECT set_config('synchronous_commit', 'on', true) AS sync, (SELECT ctid::text FROM claimed) AS row`,
} as const;

export async function claimMessage(client: pg.ClientBase, request: ClaimRequest): Promise<ClaimResult> {
  const { rows } = await client.query<{ row: string | null }>({
    ...CLAIM,
    values: [
      request.groupId,
      request.messageId,
      request.topic,
      request.partition,
      request.offset,
      request.payloadHash,
      request.status,
      request.attempts,
      request.firstSeenAt,
      request.nextOffset,
      request.inboxScope,
      request.timestamp,
    ],
  });
  return claimResult(client, request, rows[0]?.row);
}

/**
 * The answer to a claim whose INSERT returned `row` (null or undefined: it conflicted). The holder
 * of a taken id is read after the INSERT, in a new statement: READ COMMITTED gives it a fresh
 * snapshot, so a holder committed by a concurrent transaction (the one the INSERT waited for) is
 * visible.
 */
export async function claimResult(
  client: pg.ClientBase,
  request: Pick<ClaimRequest, 'inboxScope' | 'messageId'>,
  row: string | null | undefined,
): Promise<ClaimResult> {
  if (row !== null && row !== undefined) return { claimed: true, row };
  const existing = await findInboxEntry(client, request.inboxScope, request.messageId);
  if (existing === undefined) {
    // The conflicting row was deleted between the conflict and the read (a retention purge).
    // Rare and harmless: the caller retries the whole transaction.
    throw new Error(`message id ${request.messageId} conflicted but its inbox row vanished; retrying`);
  }
  return { claimed: false, existing };
}

export async function findInboxEntry(
  client: pg.ClientBase,
  inboxScope: string,
  messageId: string,
): Promise<InboxEntry | undefined> {
  // Unnamed on purpose: planned for the table as it is now, not frozen in a cached plan (see CLAIM).
  const { rows } = await client.query<HolderRow>(
    `SELECT topic, partition, "offset", payload_hash, status, processed_at
       FROM oncely.inbox WHERE consumer_group = $1 AND message_id = $2`,
    [inboxScope, messageId],
  );
  return rows[0] === undefined ? undefined : toEntry(rows[0]);
}

function toEntry(row: HolderRow): InboxEntry | undefined {
  if (
    row.topic === null ||
    row.partition === null ||
    row.offset === null ||
    row.payload_hash === null ||
    row.status === null ||
    row.processed_at === null
  ) {
    return undefined;
  }
  return {
    topic: row.topic,
    partition: row.partition,
    offset: row.offset,
    payloadHash: row.payload_hash,
    status: row.status,
    processedAt: row.processed_at,
  };
}

export interface OffsetRecord {
  readonly groupId: string;
  readonly topic: string;
  readonly partition: number;
  readonly nextOffset: string;
  /** The record at `nextOffset − 1`, which marks the resume point. */
  readonly previous: ResumeMark;
}

/**
 * Records a partition's next offset without claiming an id: past a record that has no valid id
 * to claim (reason `invalid_message_id`), past a commit group, or at a lane's watermark. Sets
 * `synchronous_commit = on` like the claim does.
 */
export async function recordOffset(client: pg.ClientBase, record: OffsetRecord): Promise<void> {
  await client.query({
    name: 'oncely_record_offset_v2',
    text: `
WITH ${moveResumePoint('$1', '$2', '$3', '$4', '$5', '$6')}
SELECT set_config('synchronous_commit', 'on', true)`,
    values: [
      record.groupId,
      record.topic,
      record.partition,
      record.nextOffset,
      record.previous.payloadHash,
      record.previous.timestamp,
    ],
  });
}

/** A partition's resume point: the next offset recorded, and what recognises its log there. */
export interface ResumePoint {
  readonly nextOffset: bigint;
  /** Undefined for a row recorded before migration 0007 (or reset to an offset with no record before it). */
  readonly previous: ResumeMark | undefined;
}

/**
 * The resume point recorded for each partition of `topic` in this group. A consumer that is
 * assigned a partition passes over every record below it without claiming: those outcomes are
 * already committed, even when Kafka's offset commit for them was lost in a crash.
 */
export async function loadResumePoints(
  pool: pg.Pool,
  groupId: string,
  topic: string,
): Promise<Map<number, ResumePoint>> {
  const { rows } = await pool.query<{
    partition: number;
    next_offset: string;
    previous_payload_hash: Buffer | null;
    previous_timestamp: string | null;
  }>(
    `SELECT partition, next_offset, previous_payload_hash, previous_timestamp
       FROM oncely.offsets WHERE consumer_group = $1 AND topic = $2`,
    [groupId, topic],
  );
  return new Map(
    rows.map((r) => [
      r.partition,
      {
        nextOffset: BigInt(r.next_offset),
        previous:
          r.previous_payload_hash === null || r.previous_timestamp === null
            ? undefined
            : { payloadHash: r.previous_payload_hash, timestamp: r.previous_timestamp },
      },
    ]),
  );
}

/** Many ids of one partition, claimed by one statement (a chunk's, a commit group's). */
export interface ManyIds {
  /** The inbox the ids are claimed in; see {@link ClaimRequest.inboxScope}. */
  readonly inboxScope: string;
  readonly topic: string;
  readonly partition: number;
  /** The ids to claim, in offset order. */
  readonly messageIds: readonly string[];
  /** Each id's offset: unique among them, as they share one partition. */
  readonly offsets: readonly string[];
  /** Each id's payload fingerprint, 32 bytes apiece, concatenated in the same order. */
  readonly payloadHashes: Buffer;
  readonly firstSeenAt: Date;
}

export interface ChunkClaimRequest extends ManyIds {
  /** The consumer group, for `oncely.offsets`. */
  readonly groupId: string;
  /** Every row is claimed as `processed` with these attempts; {@link reclassifyChunkClaims} corrects exceptions. */
  readonly attempts: number;
  /** The partition's next offset after the whole chunk. */
  readonly nextOffset: string;
  /** The chunk's last record (claimed or not), which marks the resume point `nextOffset`. */
  readonly last: ResumeMark;
}

/** What a chunk's claim answers: only the exceptions, so the common case carries nothing back. */
export interface ChunkClaimResult {
  /** The offsets whose id was not claimed (another row holds it): empty when every id was claimed. */
  readonly conflicts: ReadonlySet<string>;
}

const NO_CONFLICTS: ReadonlySet<string> = new Set();

/**
 * Claims a whole chunk of one partition in one statement, records the partition's next offset and
 * sets `synchronous_commit = on` locally — one round trip, like {@link claimMessage}. However long
 * the chunk, the statement has twelve parameters (a VALUES list would hit PostgreSQL's 65,535-parameter
 * limit): ids and offsets as array literals built here (cheaper than the driver's per-element
 * escaping), the fingerprints as one binary buffer cut into 32-byte slices in SQL (no hex text, no
 * `decode()`). Rows are inserted in chunk order: when an id occurs twice in the chunk, the first
 * occurrence claims it and the later one conflicts with it like any duplicate.
 *
 * It answers with the offsets not claimed, and only when there are any: a chunk of new messages
 * gets back one row of two nulls, not an array per claimed message to send and parse.
 */
export async function claimChunk(client: pg.ClientBase, request: ChunkClaimRequest): Promise<ChunkClaimResult> {
  const { rows } = await client.query<{ conflicts: string[] | null }>({
    name: 'oncely_claim_chunk_v5',
    text: `
WITH input AS (
  SELECT * FROM unnest($4::text[], $5::bigint[]) WITH ORDINALITY AS t(message_id, "offset", ord)
), claimed AS (
  INSERT INTO oncely.inbox
    (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at)
  SELECT $10, message_id, $2, $3, "offset", substring($6::bytea FROM (ord::int - 1) * 32 + 1 FOR 32), 'processed', $7, $8
    FROM input ORDER BY ord
  ON CONFLICT (consumer_group, message_id) DO NOTHING
  RETURNING "offset"
), ${moveResumePoint('$1', '$2', '$3', '$9', '$11', '$12')}
SELECT set_config('synchronous_commit', 'on', true) AS sync,
       CASE WHEN (SELECT count(*) FROM claimed) < cardinality($4::text[])
            THEN ARRAY(SELECT "offset"::text FROM input WHERE "offset" NOT IN (SELECT "offset" FROM claimed))
       END AS conflicts`,
    values: chunkClaimValues('claimChunk', request),
  });
  const conflicts = rows[0]?.conflicts;
  return { conflicts: conflicts === null || conflicts === undefined ? NO_CONFLICTS : new Set(conflicts) };
}

/**
 * The optimistic half of a chunk claim, for ids {@link findInboxEntries} just found free: a plain
 * INSERT, with the partition's next offset and `synchronous_commit = on` like {@link claimChunk}.
 * No `ON CONFLICT`, so no speculative insertion (PostgreSQL's ON CONFLICT writes an extra WAL
 * record per row to confirm each speculative insert). When an id was taken meanwhile — a
 * concurrent claimer committed, or still holds it — the unique index makes the statement fail
 * with SQLSTATE 23505 ({@link isClaimRace}); that aborts the transaction, so the caller rolls back
 * and claims the chunk again with {@link claimChunk}.
 */
export async function insertChunkClaims(client: pg.ClientBase, request: ChunkClaimRequest): Promise<void> {
  await client.query({
    name: 'oncely_insert_chunk_claims_v2',
    text: `
WITH claimed AS (
  INSERT INTO oncely.inbox
    (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts, first_seen_at)
  SELECT $10, message_id, $2, $3, "offset", substring($6::bytea FROM (ord::int - 1) * 32 + 1 FOR 32), 'processed', $7, $8
    FROM unnest($4::text[], $5::bigint[]) WITH ORDINALITY AS t(message_id, "offset", ord)
), ${moveResumePoint('$1', '$2', '$3', '$9', '$11', '$12')}
SELECT set_config('synchronous_commit', 'on', true) AS sync`,
    values: chunkClaimValues('insertChunkClaims', request),
  });
}

/**
 * The parameters both chunk claim statements take ($1 … $12), after checking that the arrays
 * describe the same messages.
 */
function chunkClaimValues(caller: string, request: ChunkClaimRequest): unknown[] {
  const { messageIds, offsets } = request;
  if (request.payloadHashes.length !== messageIds.length * 32 || offsets.length !== messageIds.length) {
    throw new TypeError(
      `${caller}: messageIds, offsets and payloadHashes (32 bytes each) must describe the same messages`,
    );
  }
  return [
    request.groupId,
    request.topic,
    request.partition,
    textArrayLiteral(messageIds),
    `{${offsets.join(',')}}`,
    request.payloadHashes,
    request.attempts,
    request.firstSeenAt,
    request.nextOffset,
    request.inboxScope,
    request.last.payloadHash,
    request.last.timestamp,
  ];
}

/** Whether `error` is the unique violation of an optimistic claim that lost a race (SQLSTATE 23505). */
export function isClaimRace(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '23505';
}

const NEEDS_ESCAPE = /["\\]/;

/**
 * A PostgreSQL `text[]` literal. Every element is quoted, so only `"` and `\` need escaping (ids
 * hold no NUL); most ids have neither, and skip the replace.
 */
export function textArrayLiteral(values: readonly string[]): string {
  let literal = '{';
  for (let i = 0; i < values.length; i++) {
    const value = values[i] ?? '';
    literal += `${i === 0 ? '' : ','}"${NEEDS_ESCAPE.test(value) ? value.replace(/["\\]/g, '\\$&') : value}"`;
  }
  return `${literal}}`;
}

/**
 * Corrects rows claimed as `processed` whose message turned out, once decoded after the claim,
 * to be invalid (`dead_lettered`) or a skipped tombstone (`processed`, attempts 0). See
 * {@link reclassifyChunkClaims} for rows located by id.
 */
export async function reclassifyClaims(
  client: pg.ClientBase,
  changes: { readonly deadLettered: readonly string[]; readonly skipped: readonly string[] },
): Promise<void> {
  // Rows are found by the location the claim returned: a TID scan, whatever the statistics say.
  // The locations stay valid because the rows are this transaction's own, uncommitted and touched
  // by nobody else.
  if (changes.deadLettered.length > 0) {
    await client.query(`UPDATE oncely.inbox SET status = 'dead_lettered', attempts = 0 WHERE ctid = ANY($1::tid[])`, [
      changes.deadLettered,
    ]);
  }
  if (changes.skipped.length > 0) {
    await client.query('UPDATE oncely.inbox SET attempts = 0 WHERE ctid = ANY($1::tid[])', [changes.skipped]);
  }
}

/**
 * {@link reclassifyClaims} for a chunk's claims, by message id: the chunk claim does not send back
 * where its rows went (that would cost every chunk an array per message for an exception few ever
 * see). Each id is found by one primary-key lookup (the LATERAL form of {@link HOLDERS_SQL}, whatever
 * the statistics say), and the rows are then updated by location, a TID scan.
 */
export async function reclassifyChunkClaims(
  client: pg.ClientBase,
  inboxScope: string,
  changes: { readonly deadLettered: readonly string[]; readonly skipped: readonly string[] },
): Promise<void> {
  const located = `ARRAY(SELECT h.ctid FROM unnest($2::text[]) AS wanted(message_id)
    CROSS JOIN LATERAL (
      SELECT ctid FROM oncely.inbox i WHERE i.consumer_group = $1 AND i.message_id = wanted.message_id LIMIT 1
    ) h)`;
  if (changes.deadLettered.length > 0) {
    await client.query(`UPDATE oncely.inbox SET status = 'dead_lettered', attempts = 0 WHERE ctid = ANY(${located})`, [
      inboxScope,
      changes.deadLettered,
    ]);
  }
  if (changes.skipped.length > 0) {
    await client.query(`UPDATE oncely.inbox SET attempts = 0 WHERE ctid = ANY(${located})`, [
      inboxScope,
      changes.skipped,
    ]);
  }
}

export const HOLDERS_SQL = `
SELECT wanted.ord::int4 AS ord, h.topic, h.partition, h."offset", h.status,
       (extract(epoch FROM h.processed_at) * 1000)::float8 AS processed_ms,
       h.payload_hash = substring($3::bytea FROM (wanted.ord::int - 1) * 32 + 1 FOR 32) AS same_hash,
       CASE WHEN h.payload_hash = substring($3::bytea FROM (wanted.ord::int - 1) * 32 + 1 FOR 32)
            THEN NULL ELSE h.payload_hash END AS payload_hash
  FROM unnest($2::text[]) WITH ORDINALITY AS wanted(message_id, ord)
  CROSS JOIN LATERAL (
    SELECT topic, partition, "offset", payload_hash, status, processed_at FROM oncely.inbox i
     WHERE i.consumer_group = $1 AND i.message_id = wanted.message_id
     LIMIT 1
  ) h`;

interface HoldersRow {
  ord: number;
  topic: string | null;
  partition: number | null;
  offset: string | null;
  status: InboxStatus | null;
  processed_ms: number | null;
  same_hash: boolean | null;
  payload_hash: Buffer | null;
}

/**
 * The holders of `messageIds`, read with a fresh snapshot (so holders committed by concurrent
 * transactions, and rows this transaction inserted, are all visible).
 *
 * A replay reads one holder per message, so the answer is kept cheap to parse: the time as epoch
 * milliseconds (a number, not a timestamp string to parse), and — when `payloadHashes` gives the
 * fingerprints the caller holds (32 bytes per id, in the same order) — the holder's fingerprint
 * only where it differs; where it is the same, the entry shares the caller's bytes.
 */
export async function findInboxEntries(
  client: pg.ClientBase,
  groupId: string,
  messageIds: readonly string[],
  payloadHashes?: Buffer,
): Promise<Map<string, InboxEntry>> {
  // One point lookup on the primary key per id (a LATERAL subquery on the whole key), whatever the
  // statistics say. Measured with statistics taken while only another group existed (200k rows
  // each): `message_id = ANY($2)` scanned the whole group, 1,042 ms for 500 ids; a plain join
  // hashed the whole group, 89 ms; this, 2.7 ms. Unnamed, so it is never a cached generic plan.
  // The ids go as one array literal built here, cheaper than the driver's per-element escaping.
  const { rows } = await client.query<HoldersRow>(HOLDERS_SQL, [
    groupId,
    textArrayLiteral(messageIds),
    payloadHashes ?? null,
  ]);
  const entries = new Map<string, InboxEntry>();
  for (const row of rows) {
    const messageId = messageIds[row.ord - 1];
    const payloadHash =
      row.same_hash === true && payloadHashes !== undefined
        ? payloadHashes.subarray((row.ord - 1) * 32, row.ord * 32)
        : row.payload_hash;
    if (
      messageId === undefined ||
      row.topic === null ||
      row.partition === null ||
      row.offset === null ||
      row.status === null ||
      row.processed_ms === null ||
      payloadHash === null
    ) {
      continue;
    }
    entries.set(messageId, {
      topic: row.topic,
      partition: row.partition,
      offset: row.offset,
      payloadHash,
      status: row.status,
      processedAt: new Date(row.processed_ms),
    });
  }
  return entries;
}

/**
 * A chunk's ids looked up one primary-key lookup each, answered as one row: per id one character
 * of `codes` (`.` free, `r` held by the record itself and processed, `d` the same dead-lettered,
 * `o` held by another row) and, for each id the record itself holds, its processed time in epoch
 * milliseconds (comma-separated, in order). "The record itself" is a row with the record's topic,
 * partition, offset and payload fingerprint: a redelivery, all a replay holds.
 *
 * The same statement moves the partition's resume point past the chunk, as a chunk's claim does:
 * a replayed chunk (every id held by its record) then needs no other statement. Its commit waits
 * for the WAL flush unless every id is held by its record and every record had an id ($11): such
 * a chunk records nothing but its resume point, as every record is a duplicate whose outcome was
 * durable long before. Losing that commit in a crash leaves the resume point before records that
 * are all duplicates: they are read again and found again, and Kafka's later committed offset wins
 * at start-up. Anything else the chunk records (a claim, a dead letter) is then made durable too.
 */
export const CHUNK_HOLDERS_SQL = `
WITH ${moveResumePoint('$7', '$4', '$5', '$8', '$9', '$10')},
held AS (
  SELECT string_agg(CASE WHEN h.payload_hash IS NULL THEN '.'
                         WHEN h.topic = $4 AND h.partition = $5 AND h."offset" = wanted."offset"
                          AND h.payload_hash = substring($3::bytea FROM (wanted.ord::int - 1) * 32 + 1 FOR 32)
                         THEN CASE h.status WHEN 'processed' THEN 'r' ELSE 'd' END
                         ELSE 'o' END, '' ORDER BY wanted.ord) AS codes,
         string_agg(CASE WHEN h.topic = $4 AND h.partition = $5 AND h."offset" = wanted."offset"
                          AND h.payload_hash = substring($3::bytea FROM (wanted.ord::int - 1) * 32 + 1 FOR 32)
                         THEN ((extract(epoch FROM h.processed_at) * 1000)::float8)::text END, ',' ORDER BY wanted.ord) AS processed_ms
    FROM unnest($2::text[], $6::bigint[]) WITH ORDINALITY AS wanted(message_id, "offset", ord)
    LEFT JOIN LATERAL (
      SELECT topic, partition, "offset", payload_hash, status, processed_at FROM oncely.inbox i
       WHERE i.consumer_group = $1 AND i.message_id = wanted.message_id
       LIMIT 1
    ) h ON true
)
SELECT codes, processed_ms,
       set_config('synchronous_commit',
                  CASE WHEN $11::boolean AND coalesce(codes, '') !~ '[.o]' THEN 'off' ELSE 'on' END, true) AS sync
  FROM held`;

/** What {@link findChunkHolders} found, id by id in the chunk's order. */
export interface ChunkHolders {
  /** The row holding each id; undefined where the id is free. */
  readonly holders: readonly (InboxEntry | undefined)[];
  /** Whether each id's holder is the record itself (same topic, partition, offset and fingerprint). */
  readonly itself: Uint8Array;
  /** Whether any id is held. */
  readonly anyHeld: boolean;
}

/**
 * The holders of a chunk's ids, read with a fresh snapshot like {@link findInboxEntries}, and the
 * partition's resume point moved past the chunk (see {@link CHUNK_HOLDERS_SQL}). A replay
 * reads one holder per record, and each holder is the record itself: those come back as one
 * character and one number each in a single row, not as a row each, and their entries are made
 * from what the caller already holds. Only holders elsewhere (a republish, a key reuse) are read
 * in full, by a second statement sent only when there are some.
 */
export async function findChunkHolders(
  client: pg.ClientBase,
  chunk: ChunkClaimRequest,
  options: { readonly everyRecordHasId: boolean },
): Promise<ChunkHolders> {
  const { inboxScope, messageIds, offsets, topic, partition, payloadHashes } = chunk;
  const { rows } = await client.query<{ codes: string | null; processed_ms: string | null }>(CHUNK_HOLDERS_SQL, [
    inboxScope,
    textArrayLiteral(messageIds),
    payloadHashes,
    topic,
    partition,
    `{${offsets.join(',')}}`,
    chunk.groupId,
    chunk.nextOffset,
    chunk.last.payloadHash,
    chunk.last.timestamp,
    // Whether every record of the chunk had an id (one without is dead-lettered: a durable commit).
    options.everyRecordHasId,
  ]);
  const codes = rows[0]?.codes ?? '';
  if (codes.length !== messageIds.length) {
    throw new Error(`internal error: ${codes.length} holder codes for ${messageIds.length} message ids`);
  }
  const times = rows[0]?.processed_ms?.split(',') ?? [];
  const holders = new Array<InboxEntry | undefined>(messageIds.length);
  const itself = new Uint8Array(messageIds.length);
  let elsewhere: number[] | undefined;
  let anyHeld = false;
  for (let i = 0, time = 0; i < codes.length; i++) {
    const code = codes.charCodeAt(i);
    if (code === FREE) continue;
    anyHeld = true;
    if (code === ELSEWHERE) {
      (elsewhere ??= []).push(i);
      continue;
    }
    itself[i] = 1;
    // Made from what the caller sent: the row is the record's own (a plain object, so a spread or
    // a copy keeps every field).
    holders[i] = {
      topic,
      partition,
      offset: offsets[i] ?? '',
      payloadHash: payloadHashes.subarray(i * 32, i * 32 + 32),
      status: code === PROCESSED_ITSELF ? 'processed' : 'dead_lettered',
      processedAt: new Date(Number(times[time++])),
    };
  }
  if (elsewhere !== undefined) {
    const ids = elsewhere.map((i) => messageIds[i] ?? '');
    const entries = await findInboxEntries(
      client,
      inboxScope,
      ids,
      Buffer.concat(elsewhere.map((i) => payloadHashes.subarray(i * 32, i * 32 + 32))),
    );
    // An entry missing here was deleted between the two reads (a retention purge): the id stays
    // undefined, i.e. free, and the claim that follows inserts it.
    for (const i of elsewhere) holders[i] = entries.get(messageIds[i] ?? '');
  }
  return { holders, itself, anyHeld };
}

const FREE = '.'.charCodeAt(0);
const ELSEWHERE = 'o'.charCodeAt(0);
const PROCESSED_ITSELF = 'r'.charCodeAt(0);

/** Per topic, the consumer groups that have recorded a resume point for it. */
export async function groupsByTopic(pool: pg.Pool, topics: readonly string[]): Promise<Map<string, string[]>> {
  const { rows } = await pool.query<{ topic: string; groups: string[] }>(
    'SELECT topic, array_agg(DISTINCT consumer_group ORDER BY consumer_group) AS groups FROM oncely.offsets WHERE topic = ANY($1::text[]) GROUP BY topic',
    [topics],
  );
  return new Map(rows.map((r) => [r.topic, r.groups]));
}
