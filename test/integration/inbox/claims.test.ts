import { randomUUID } from 'node:crypto';

import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';

import {
  CLAIM,
  type ClaimRequest,
  claimMessage,
  findInboxEntries,
  HOLDERS_SQL,
  loadNextOffsets,
} from '../../../src/inbox/claims.js';
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

  it('records the next offset with the claim and never moves it backwards', async () => {
    const groupId = `g-${randomUUID()}`;
    const client = await pool.connect();
    try {
      await inTx(client, () => claimMessage(client, request({ groupId, offset: '41', nextOffset: '42' })));
      // A late duplicate of an older offset (another member during a rebalance).
      await inTx(client, () => claimMessage(client, request({ groupId, offset: '7', nextOffset: '8' })));
      expect(await loadNextOffsets(pool, groupId, 't')).toEqual(new Map([[0, 42n]]));
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
        `EXPLAIN (FORMAT JSON) EXECUTE explain_claim('g', 'x', 't', 0, 1, '\\x00'::bytea, 'processed', 1, now(), 2, 'g')`,
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
        ['stale-b', ids],
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
