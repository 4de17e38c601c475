import { describe, expect, it } from 'vitest';

import { hasErrorCode, listDeadLetters, planReplay, purge, runReplay } from '../../../src/index.js';
import { countOpenDeadLetters } from '../../../src/inbox/status.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

async function inboxOffsets(scope: string, topic: string): Promise<number[]> {
  const { rows } = await env.pool.query<{ offset: string }>(
    'SELECT "offset" FROM oncely.inbox WHERE consumer_group = $1 AND topic = $2 ORDER BY 1',
    [scope, topic],
  );
  return rows.map((r) => Number(r.offset));
}

describe('G6: one keyspace: everything that decides "was this applied" is keyed by the inbox scope', () => {
  it('G6: a group renamed with inboxScope plans, purges and retains in its scope', async () => {
    const topic = await env.createTopic('g6-scope');
    const oldGroup = env.groupId('ledger');
    const renamed = `${oldGroup}-v2`;
    const first = Array.from({ length: 10 }, (_, i) => jsonMessage(`s-${i}`, { i }));
    await env.produce(topic, first);
    const old = env.consumer({ groupId: oldGroup, handlers: [effectHandler(topic)] });
    const oldOutcomes = recordOutcomes(old);
    await old.start();
    await waitFor('10 processed by the old group', () => oldOutcomes.processed.length === 10);
    await old.stop();

    // The README's recipe: the renamed group claims in the old group's scope.
    const v2 = env.consumer({ groupId: renamed, inboxScope: oldGroup, handlers: [effectHandler(topic)] });
    const v2Outcomes = recordOutcomes(v2);
    await v2.start();
    await waitFor('10 redeliveries', () => v2Outcomes.duplicates.length === 10);
    await env.produce(
      topic,
      Array.from({ length: 5 }, (_, i) => jsonMessage(`s-${10 + i}`, { i: 10 + i })),
    );
    await waitFor('5 processed by the renamed group', () => v2Outcomes.processed.length === 5);
    await v2.stop();

    // Retention run by the renamed group's consumer purges the scope, bounded by the offsets of
    // every group that reads it: the old group stopped at 10, so offsets 10–14 keep their rows.
    const retaining = env.consumer({
      groupId: renamed,
      inboxScope: oldGroup,
      handlers: [effectHandler(topic)],
      retention: { inboxFor: 0, every: 1_000 },
    });
    await retaining.start();
    await waitFor('a purge of the scope', async () => (await inboxOffsets(oldGroup, topic)).length < 15);
    await retaining.stop();
    expect(await inboxOffsets(oldGroup, topic)).toEqual([10, 11, 12, 13, 14]);

    // The plan, named by the group, looks in the scope: offsets 0–9 are at risk.
    const plan = await planReplay({ pool: env.pool, kafka: env.kafka, groupId: renamed, topic, from: 'earliest' });
    expect(plan.inboxScope).toBe(oldGroup);
    expect(plan.totals).toEqual({ messages: 15, skipped: 5, applied: 0, atRisk: 10, deadLettered: 0, gone: 0 });
    const refused = await runReplay({
      pool: env.pool,
      kafka: env.kafka,
      groupId: renamed,
      topic,
      from: 'earliest',
    }).catch((error: unknown) => error);
    expect(hasErrorCode(refused, 'ONCELY_REPLAY_AT_RISK')).toBe(true);
    // An explicit scope that contradicts the one the group recorded is refused.
    const contradicted = await planReplay({
      pool: env.pool,
      kafka: env.kafka,
      groupId: renamed,
      inboxScope: renamed,
      topic,
      from: 'earliest',
    }).catch((error: unknown) => error);
    expect(hasErrorCode(contradicted, 'ONCELY_CONFIG')).toBe(true);

    // Retiring the old group (its recorded scope and resume points deleted) lifts its bound: the
    // purge named by the renamed group takes the rest of the scope.
    await env.pool.query('DELETE FROM oncely.group_scopes WHERE consumer_group = $1', [oldGroup]);
    await env.pool.query('DELETE FROM oncely.offsets WHERE consumer_group = $1', [oldGroup]);
    const rest = await purge({ pool: env.pool, kafka: env.kafka, groupId: renamed, inboxFor: 0, pauseMs: 0 });
    expect(rest.inboxDeleted).toBe(5);
    expect(await inboxOffsets(oldGroup, topic)).toEqual([]);
    const after = await planReplay({ pool: env.pool, kafka: env.kafka, groupId: renamed, topic, from: 'earliest' });
    expect(after.totals).toMatchObject({ messages: 15, skipped: 0, applied: 0, atRisk: 15 });
  });

  it('counts and lists the open dead letters of a group renamed with inboxScope in its scope', async () => {
    const topic = await env.createTopic('g6-scope-dl');
    const oldGroup = env.groupId('ledger-dl');
    const renamed = `${oldGroup}-v2`;
    await env.produce(topic, [{ value: 'not json', headers: { 'message-id': 'bad-0' } }]);
    const v2 = env.consumer({ groupId: renamed, inboxScope: oldGroup, handlers: [effectHandler(topic)] });
    const outcomes = recordOutcomes(v2);
    await v2.start();
    await waitFor('the dead letter', () => outcomes.deadLettered.length === 1);
    expect(await countOpenDeadLetters(env.pool, renamed)).toEqual([{ topic, reason: 'invalid_payload', open: 1 }]);
    // Listed (and so retried or discarded with --all) by the renamed group's name too.
    expect((await listDeadLetters(env.db, { groupId: renamed })).map((l) => l.messageId)).toEqual(['bad-0']);
  });
});
