import { randomUUID } from 'node:crypto';

import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';

import {
  CLAIM,
  claimChunk,
  type ChunkClaimRequest,
  type ClaimRequest,
  claimMessage,
  findChunkHolders,
  findInboxEntries,
  HOLDERS_SQL,
  insertChunkClaims,
  isClaimRace,
  loadResumePoints,
  reclassifyChunkClaims,
} from '../../../src/inbox/claims.js';
import { claimGroup, releaseGroupClaims } from '../../../src/inbox/group-claim.js';
import { migrate } from '../../../src/migrate/migrate.js';
import { databaseUrlFor, testPool } from '../../support/settings.js';

let admin: pg.Client;
let pool: pg.Pool;
const database = `oncely_claims_${randomUUID().replaceAll('-', '').slice(0, 12)}`;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('databaseUrl') });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  const url = databaseUrlFor(inject('databaseUrl'), database);
  await migrate(url);
  pool = testPool(url, 4);
});

afterAll(async () => {
  await pool.end();
  await admin.query(`DROP DATABASE ${database} WITH (FORCE)`);
  await admin.end();
});

/** Every node of an EXPLAIN (FORMAT JSON) plan. */
function planNodes(explained: unknown): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const walk = (node: Record<string, unknown>): void => {
    out.push(node);
    for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
  };
  for (const root of explained as { Plan: Record<string, unknown> }[]) walk(root.Plan);
  return out;
}

const request = (overrides: Partial<ClaimRequest> = {}): ClaimRequest => ({
  groupId: 'g',
  inboxScope: overrides.groupId ?? 'g',
  messageId: randomUUID(),
  topic: 't',
  partition: 0,
  offset: '10',
  nextOffset: '11',
  payloadHash: Buffer.alloc(32, 1),
  timestamp: '1700000000000',
  status: 'processed',
  attempts: 1,
  firstSeenAt: new Date(),
  ...overrides,
});

async function inTx<T>(client: pg.PoolClient, work: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  }
}

describe('claimMessage on PostgreSQL', () => {
  it('claims an id once; the next claim gets the holder’s coordinates and fingerprint', async () => {
    const first = request();
    const client = await pool.connect();
    try {
      expect(await inTx(client, () => claimMessage(client, first))).toMatchObject({ claimed: true });
      expect(await inTx(client, () => claimMessage(client, { ...first, offset: '20', nextOffset: '21' }))).toEqual({
        claimed: false,
        existing: {
          topic: 't',
          partition: 0,
          offset: '10',
          payloadHash: Buffer.alloc(32, 1),
          status: 'processed',
          processedAt: expect.any(Date),
        },
      });
    } finally {
      client.release();
    }
  });

  it('makes a concurrent claimer wait for the first transaction, then see the conflict when it committed', async () => {
    const claim = request();
    const [a, b] = [await pool.connect(), await pool.connect()];
    try {
      await a.query('BEGIN');
      expect(await claimMessage(a, claim)).toMatchObject({ claimed: true });
      await b.query('BEGIN');
      let settled = false;
      const second = claimMessage(b, { ...claim, offset: '30', nextOffset: '31' }).finally(() => (settled = true));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(settled).toBe(false); // blocked on the unique index, not answered from a snapshot
      await a.query('COMMIT');
      // The holder committed after b's statement began: b still sees it (via the fresh read).
      expect(await second).toMatchObject({ claimed: false, existing: { offset: '10' } });
      await b.query('COMMIT');
    } finally {
      // A failed assertion must not hand a connection with an open transaction (and its locks) back.
      await Promise.all([a.query('ROLLBACK'), b.query('ROLLBACK')]);
      a.release();
      b.release();
    }
  });

  it('lets a concurrent claimer take the id when the first transaction rolls back', async () => {
    const claim = request();
    const [a, b] = [await pool.connect(), await pool.connect()];
    try {
      await a.query('BEGIN');
      expect(await claimMessage(a, claim)).toMatchObject({ claimed: true });
      await b.query('BEGIN');
      const second = claimMessage(b, { ...claim, offset: '30', nextOffset: '31' });
      await new Promise((resolve) => setTimeout(resolve, 200));
      await a.query('ROLLBACK');
      expect(await second).toMatchObject({ claimed: true });
      await b.query('COMMIT');
    } finally {
      // A failed assertion must not hand a connection with an open transaction (and its locks) back.
      await Promise.all([a.query('ROLLBACK'), b.query('ROLLBACK')]);
      a.release();
      b.release();
    }
  });

  it('records the next offset with the claim, marked by the claimed record, and never moves it backwards', async () => {
    const groupId = `g-${randomUUID()}`;
    const client = await pool.connect();
    try {
      const at41 = { payloadHash: Buffer.alloc(32, 41), timestamp: '1700000000041' };
      await inTx(client, () => claimMessage(client, request({ groupId, offset: '41', nextOffset: '42', ...at41 })));
      // A late duplicate of an older offset (another member during a rebalance): neither the
      // offset nor the mark of the record before it moves back.
      await inTx(client, () =>
        claimMessage(
          client,
          request({ groupId, offset: '7', nextOffset: '8', payloadHash: Buffer.alloc(32, 7), timestamp: '7' }),
        ),
      );
      expect(await loadResumePoints(pool, groupId, 't')).toEqual(new Map([[0, { nextOffset: 42n, previous: at41 }]]));
    } finally {
      client.release();
    }
  });

  it('turns synchronous_commit on for the claiming transaction only', async () => {
    const client = await pool.connect();
    try {
      await client.query('SET synchronous_commit = off');
      await client.query('BEGIN');
      await claimMessage(client, request());
      expect((await client.query<{ s: string }>("SELECT current_setting('synchronous_commit') AS s")).rows[0]?.s).toBe(
        'on',
      );
      await client.query('COMMIT');
      expect((await client.query<{ s: string }>("SELECT current_setting('synchronous_commit') AS s")).rows[0]?.s).toBe(
        'off',
      );
    } finally {
      await client.query('RESET synchronous_commit');
      client.release();
    }
  });

  it('never reads the inbox in the claim statement, so no plan cached while the inbox was empty can scan it', async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`PREPARE explain_claim AS ${CLAIM.text}`);
      const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(
        `EXPLAIN (FORMAT JSON) EXECUTE explain_claim('g', 'x', 't', 0, 1, '\\x00'::bytea, 'processed', 1, now(), 2, 'g', 1)`,
      );
      // The inbox appears only as the INSERT's target, never as something scanned.
      const inboxNodes = planNodes(rows[0]?.['QUERY PLAN']).filter((n) => n['Relation Name'] === 'inbox');
      expect(inboxNodes.map((n) => n['Node Type'])).toEqual(['ModifyTable']);
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
  });

  it('looks holders up by their whole key, one probe per id, even with stale statistics', async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      // Statistics taken while only another group existed, then a big group nobody analyzed.
      await client.query(`INSERT INTO oncely.inbox SELECT 'stale-a', 'a-' || i, 't', 0, i, sha256(i::text::bytea), 'processed', 1, now(), now()
                            FROM generate_series(1, 20000) i`);
      await client.query('ANALYZE oncely.inbox');
      await client.query(`INSERT INTO oncely.inbox SELECT 'stale-b', 'b-' || i, 't', 0, i, sha256(i::text::bytea), 'processed', 1, now(), now()
                            FROM generate_series(1, 20000) i`);
      const ids = Array.from({ length: 500 }, (_, i) => `b-${i * 37 + 1}`);
      const { rows } = await client.query<{ 'QUERY PLAN': { Plan: unknown }[] }>(
        `EXPLAIN (ANALYZE, FORMAT JSON) ${HOLDERS_SQL}`,
        ['stale-b', ids, null],
      );
      const nodes = planNodes(rows[0]?.['QUERY PLAN']);
      const inboxScans = nodes.filter((n) => n['Relation Name'] === 'inbox');
      expect(inboxScans.map((n) => n['Node Type'])).toEqual(['Index Scan']);
      expect(String(inboxScans[0]?.['Index Cond'])).toMatch(
        /consumer_group = .*\) AND \(message_id = wanted\.message_id/,
      );
      expect(inboxScans[0]?.['Actual Loops']).toBe(500); // one probe per id
      expect(nodes.some((n) => String(n['Node Type']).includes('Hash'))).toBe(false);
      expect(await findInboxEntries(client, 'stale-b', ids)).toHaveProperty('size', 500);
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
  });
});

/** A chunk of `ids` at offsets from `from`, each id's fingerprint 32 bytes of its index. */
const chunkRequest = (group: string, ids: readonly string[], from = 0): ChunkClaimRequest => ({
  groupId: group,
  inboxScope: group,
  topic: 't',
  partition: 0,
  messageIds: ids,
  offsets: ids.map((_, i) => String(from + i)),
  payloadHashes: Buffer.concat(ids.map((_, i) => Buffer.alloc(32, from + i))),
  last: { payloadHash: Buffer.alloc(32, from + ids.length - 1), timestamp: String(from + ids.length - 1) },
  attempts: 1,
  nextOffset: String(from + ids.length),
  firstSeenAt: new Date(),
});

describe('chunk claims on PostgreSQL', () => {
  it('stores each fingerprint byte for byte and answers with only the offsets it did not claim', async () => {
    const group = `chunk-${randomUUID()}`;
    // Quotes, backslashes, commas and braces must survive the array literal.
    const ids = ['a', 'b"q', 'c\\d', 'e,f', '{g}', 'a'];
    const client = await pool.connect();
    try {
      const first = await inTx(client, () => claimChunk(client, chunkRequest(group, ids)));
      // The repeated id conflicts with its first occurrence, claimed by the same statement.
      expect([...first.conflicts]).toEqual(['5']);
      const { rows } = await client.query<{ message_id: string; offset: string; payload_hash: Buffer }>(
        'SELECT message_id, "offset", payload_hash FROM oncely.inbox WHERE consumer_group = $1 ORDER BY "offset"',
        [group],
      );
      expect(rows.map((r) => [r.message_id, r.offset, r.payload_hash.toString('hex')])).toEqual(
        ids.slice(0, 5).map((id, i) => [id, String(i), Buffer.alloc(32, i).toString('hex')]),
      );
      const fresh = await inTx(client, () => claimChunk(client, chunkRequest(group, ['h', 'i'], 6)));
      expect(fresh.conflicts.size).toBe(0);
      const replay = await inTx(client, () => claimChunk(client, chunkRequest(group, ['b"q', 'new', 'i'], 8)));
      expect([...replay.conflicts].sort()).toEqual(['10', '8']);
      // Marked by the chunk's last record (offset 10), written by the claim itself.
      expect((await loadResumePoints(pool, group, 't')).get(0)).toEqual({
        nextOffset: 11n,
        previous: { payloadHash: Buffer.alloc(32, 10), timestamp: '10' },
      });
    } finally {
      client.release();
    }
  });

  it('reads a chunk’s holders as one row, tells the record’s own rows apart, and moves the resume point, lazily only for a pure replay', async () => {
    const group = `chunk-holders-${randomUUID()}`;
    const client = await pool.connect();
    const sync = async (): Promise<string | undefined> =>
      (await client.query<{ s: string }>("SELECT current_setting('synchronous_commit') AS s")).rows[0]?.s;
    try {
      const before = Date.now();
      await inTx(client, () => claimChunk(client, chunkRequest(group, ['a', 'b'], 0)));

      // The same records again: held by themselves, and the commit need not wait for the flush.
      await client.query('BEGIN');
      const replay = await findChunkHolders(client, chunkRequest(group, ['a', 'b'], 0), { everyRecordHasId: true });
      expect(await sync()).toBe('off');
      await client.query('COMMIT');
      expect([...replay.itself]).toEqual([1, 1]);
      expect(replay.anyHeld).toBe(true);
      expect(replay.holders[0]).toMatchObject({ topic: 't', partition: 0, offset: '0', status: 'processed' });
      expect(replay.holders[1]?.payloadHash.equals(Buffer.alloc(32, 1))).toBe(true);
      const processedAt = replay.holders[0]?.processedAt?.getTime() ?? 0;
      expect(processedAt).toBeGreaterThanOrEqual(before - 1000);
      expect(processedAt).toBeLessThanOrEqual(Date.now() + 1000);
      expect((await loadResumePoints(pool, group, 't')).get(0)?.nextOffset).toBe(2n);

      // A record without an id in the chunk: its dead letter is recorded, so the commit is durable.
      await client.query('BEGIN');
      await findChunkHolders(client, chunkRequest(group, ['a'], 0), { everyRecordHasId: false });
      expect(await sync()).toBe('on');
      await client.query('ROLLBACK');

      // `a` at another offset (a republish), `b` with other bytes (a key reuse), `c` free: each
      // holder elsewhere is read in full; the commit is durable.
      await client.query('BEGIN');
      const mixed = await findChunkHolders(
        client,
        {
          ...chunkRequest(group, ['a', 'b', 'c'], 5),
          payloadHashes: Buffer.concat([Buffer.alloc(32, 0), Buffer.alloc(32, 9), Buffer.alloc(32, 7)]),
        },
        { everyRecordHasId: true },
      );
      expect(await sync()).toBe('on');
      await client.query('COMMIT');
      expect([...mixed.itself]).toEqual([0, 0, 0]);
      expect(mixed.holders[0]).toMatchObject({ offset: '0', status: 'processed' });
      expect(mixed.holders[1]?.payloadHash.equals(Buffer.alloc(32, 1))).toBe(true);
      expect(mixed.holders[2]).toBeUndefined();
      expect((await loadResumePoints(pool, group, 't')).get(0)?.nextOffset).toBe(8n);
    } finally {
      await client.query('RESET synchronous_commit');
      client.release();
    }
  });

  it('reads holders with their times and fingerprints: the caller’s bytes where the stored ones match, the stored ones where not', async () => {
    const group = `holders-${randomUUID()}`;
    const client = await pool.connect();
    try {
      const before = Date.now();
      await inTx(client, () => claimChunk(client, chunkRequest(group, ['p', 'q'])));
      // p with its own fingerprint (byte 0), q with another than the one stored (byte 1).
      const asked = Buffer.concat([Buffer.alloc(32, 0), Buffer.alloc(32, 9)]);
      const holders = await findInboxEntries(client, group, ['p', 'q', 'absent'], asked);
      expect([...holders.keys()].sort()).toEqual(['p', 'q']);
      expect(holders.get('p')?.payloadHash.equals(Buffer.alloc(32, 0))).toBe(true);
      expect(holders.get('q')?.payloadHash.equals(Buffer.alloc(32, 1))).toBe(true);
      expect(holders.get('q')).toMatchObject({ topic: 't', partition: 0, offset: '1', status: 'processed' });
      const processedAt = holders.get('p')?.processedAt?.getTime() ?? 0;
      expect(processedAt).toBeGreaterThanOrEqual(before - 1000);
      expect(processedAt).toBeLessThanOrEqual(Date.now() + 1000);
      // Without fingerprints to compare, every holder's own.
      const plain = await findInboxEntries(client, group, ['q']);
      expect(plain.get('q')?.payloadHash.equals(Buffer.alloc(32, 1))).toBe(true);
    } finally {
      client.release();
    }
  });

  it('claims a commit group in one statement (an id twice: the first claims it) and releases the claims of members not reached', async () => {
    const group = `group-${randomUUID()}`;
    const ids = ['g1', 'g2', 'g1', 'g3'];
    const client = await pool.connect();
    try {
      await inTx(client, async () => {
        const conflicts = await claimGroup(client, {
          inboxScope: group,
          topic: 't',
          partition: 0,
          messageIds: ids,
          offsets: ids.map((_, i) => String(i)),
          payloadHashes: Buffer.concat(ids.map((_, i) => Buffer.alloc(32, i))),
          attempts: [1, 0, 1, 1],
          firstSeenAt: new Date(),
        });
        expect([...conflicts]).toEqual(['2']);
        // The group stopped after g1 and g2: g3's claim goes, the others stay.
        await releaseGroupClaims(client, group, ['g3']);
      });
      const { rows } = await client.query<{ message_id: string; offset: string; attempts: number }>(
        'SELECT message_id, "offset", attempts FROM oncely.inbox WHERE consumer_group = $1 ORDER BY "offset"',
        [group],
      );
      expect(rows.map((r) => [r.message_id, r.offset, r.attempts])).toEqual([
        ['g1', '0', 1],
        ['g2', '1', 0],
      ]);
      // A group claim writes no resume point: the group records it once, after its last message.
      expect((await loadResumePoints(pool, group, 't')).size).toBe(0);
    } finally {
      client.release();
    }
  });

  it('inserts free ids plainly, and fails with a unique violation on a taken one (the transaction must roll back)', async () => {
    const group = `plain-${randomUUID()}`;
    const client = await pool.connect();
    try {
      await inTx(client, () => insertChunkClaims(client, chunkRequest(group, ['x', 'y'])));
      expect((await findInboxEntries(client, group, ['x', 'y'])).size).toBe(2);
      expect((await loadResumePoints(pool, group, 't')).get(0)?.nextOffset).toBe(2n);
      const raced = await inTx(client, () => insertChunkClaims(client, chunkRequest(group, ['z', 'y'], 2))).catch(
        (error: unknown) => error,
      );
      expect(isClaimRace(raced)).toBe(true);
      // Rolled back whole: neither the free id nor the next offset was recorded.
      expect((await findInboxEntries(client, group, ['z'])).size).toBe(0);
      expect((await loadResumePoints(pool, group, 't')).get(0)?.nextOffset).toBe(2n);
      expect(isClaimRace(new Error('other'))).toBe(false);
    } finally {
      client.release();
    }
  });

  it('reclassifies claimed rows by id: invalid ones dead-lettered, skipped tombstones with no attempts', async () => {
    const group = `reclassify-${randomUUID()}`;
    const other = `${group}-other`;
    const client = await pool.connect();
    try {
      await inTx(client, () => claimChunk(client, chunkRequest(other, ['bad'])));
      await inTx(client, async () => {
        await claimChunk(client, { ...chunkRequest(group, ['ok', 'bad', 'tomb']), attempts: 3 });
        await reclassifyChunkClaims(client, group, { deadLettered: ['bad'], skipped: ['tomb'] });
      });
      const status = async (scope: string) =>
        (
          await client.query<{ message_id: string; status: string; attempts: number }>(
            'SELECT message_id, status, attempts FROM oncely.inbox WHERE consumer_group = $1 ORDER BY "offset"',
            [scope],
          )
        ).rows.map((r) => `${r.message_id}:${r.status}:${r.attempts}`);
      expect(await status(group)).toEqual(['ok:processed:3', 'bad:dead_lettered:0', 'tomb:processed:0']);
      expect(await status(other)).toEqual(['bad:processed:1']); // another inbox's row with the same id is untouched
    } finally {
      client.release();
    }
  });
});
