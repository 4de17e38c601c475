import { randomUUID } from 'node:crypto';

import { beforeAll, describe, expect, it } from 'vitest';

import { outputOf, spawnOncely } from '../../support/cli.js';
import { useTestEnvironment } from '../../support/integration.js';

/*
 * The CLI as a user meets it with bad input: each case exits non-zero with one line on stderr
 * naming the problem and the fix, no usage dump, nothing on stdout, and nothing written (the
 * database and Kafka are compared before and after).
 */

const env = useTestEnvironment();
const known = `bad-input-${randomUUID().slice(0, 8)}`;
const unknown = `no-such-group-${randomUUID().slice(0, 8)}`;
let topic = '';

beforeAll(async () => {
  // A group that consumed 60 messages (offsets in both stores), with 10 inbox rows a month old
  // that any purge with a short window would delete, and one parked outbox event to list.
  topic = await env.createTopic('bad-input');
  await env.produce(
    topic,
    Array.from({ length: 60 }, (_, i) => ({ value: JSON.stringify({ i }) })),
  );
  await env.admin.setOffsets({ groupId: known, topic, partitions: [{ partition: 0, offset: '60' }] });
  await env.pool.query(
    'INSERT INTO oncely.offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 0, 60)',
    [known, topic],
  );
  await env.pool.query(
    `INSERT INTO oncely.inbox (consumer_group, message_id, topic, partition, "offset", payload_hash, status, attempts,
                               first_seen_at, processed_at)
     SELECT $1, 'm-' || i, $2, 0, i, sha256(i::text::bytea), 'processed', 1, now() - interval '30 days', now() - interval '30 days'
       FROM generate_series(0, 9) AS i`,
    [known, topic],
  );
  await env.pool.query("INSERT INTO oncely.outbox (message_id, topic, status) VALUES ('parked-1', $1, 'parked')", [
    topic,
  ]);
});

function oncely(args: readonly string[], extra: Record<string, string | undefined> = {}) {
  return outputOf(
    spawnOncely(args, {
      DATABASE_URL: env.databaseUrl,
      KAFKA_BROKERS: env.brokers.join(','),
      NO_COLOR: undefined,
      FORCE_COLOR: undefined,
      ...extra,
    }),
  );
}

/** What a bad input must not change: offsets in both stores, replays, inbox rows, horizons. */
async function written(): Promise<unknown> {
  const { rows } = await env.pool.query(
    `SELECT (SELECT json_agg(o ORDER BY consumer_group, topic, partition)
               FROM (SELECT consumer_group, topic, partition, next_offset FROM oncely.offsets) o) AS offsets,
            (SELECT count(*) FROM oncely.replays) AS replays,
            (SELECT count(*) FROM oncely.inbox) AS inbox,
            (SELECT count(*) FROM oncely.inbox_horizons) AS horizons,
            (SELECT json_agg(status ORDER BY id) FROM oncely.outbox) AS outbox`,
  );
  const kafka = await Promise.all([known, unknown].map((g) => env.committedOffsetsOf(g, topic)));
  return { database: rows[0] as unknown, kafka: kafka.map((m) => [...m.entries()].map(String)) };
}

interface BadInput {
  readonly name: string;
  readonly args: () => string[];
  /** The one line on stderr, naming the problem (and the fix). */
  readonly says: RegExp;
  readonly env?: Record<string, string | undefined>;
  readonly exitCode?: number;
}

const group = (): string[] => ['--group', known, '--topic', topic];

const badInputs: readonly BadInput[] = [
  {
    name: 'G6: replay run for an unknown group is refused and writes nothing',
    args: () => ['replay', 'run', '--group', unknown, '--topic', topic, '--from', '0'],
    says: /group "no-such-group-[^"]+" has no offsets for topic .*Check the group and topic names/,
  },
  {
    name: 'G6: replay run with --from after --to is refused and writes nothing',
    args: () => ['replay', 'run', ...group(), '--from', '50', '--to', '10'],
    says: /range is backwards.*Give a from that comes before to/,
  },
  {
    name: 'G6: replay run with a negative --from is refused, not read as offset 0',
    args: () => ['replay', 'run', ...group(), '--from', '-5'],
    says: /Offset -5 \(from\) is outside .*log \(0 to 60\)/,
  },
  {
    name: 'replay plan refuses a --from past the log end, as offsets reset does',
    args: () => ['replay', 'plan', ...group(), '--from', '99999999'],
    says: /Offset 99999999 \(from\) is outside .*log \(0 to 60\): give an offset in that range/,
  },
  {
    name: 'replay plan without --from names the option, without the usage',
    args: () => ['replay', 'plan', ...group()],
    says: /required option '--from .*' not specified; see `oncely replay plan --help`/,
  },
  {
    name: 'replay plan of a topic that does not exist names --topic',
    args: () => ['replay', 'plan', '--group', known, '--topic', `no-such-topic-${randomUUID()}`, '--from', '0'],
    says: /check --topic/,
  },
  {
    name: 'offsets show for an unknown group exits 2, as the README says',
    args: () => ['offsets', 'show', '--group', unknown, '--topic', topic],
    says: /group "no-such-group-[^"]+" has no offsets for topic .*check the group name/,
    exitCode: 2,
  },
  {
    name: 'offsets show on unreachable Kafka names --brokers',
    args: () => ['offsets', 'show', '--group', known, '--brokers', '127.0.0.1:1'],
    says: /cannot reach Kafka .*check --brokers \/ KAFKA_BROKERS/,
  },
  {
    name: 'G6: purge --inbox-for 0s is refused without --force and deletes nothing',
    args: () => ['purge', '--group', known, '--inbox-for', '0s'],
    says: /--inbox-for 0ms is below the 1h floor.*or add --force/,
  },
  {
    name: 'purge of an unknown group is refused instead of reporting 0 rows purged',
    args: () => ['purge', '--group', unknown],
    says: /group "no-such-group-[^"]+" has no offsets in oncely.offsets.*check the group name/,
  },
  {
    name: 'purge --inbox-for 7days names --inbox-for and how to write a duration',
    args: () => ['purge', '--group', known, '--inbox-for', '7days'],
    says: /option '--inbox-for <duration>' argument '7days' is invalid. Give a duration such as 7d/,
  },
  {
    name: 'a missing DATABASE_URL names the option and the variable, without the usage',
    args: () => ['status'],
    env: { DATABASE_URL: undefined },
    says: /required option '--database-url <url>' not specified \(or set DATABASE_URL\)/,
  },
  {
    name: 'an empty DATABASE_URL is named as empty, not sent to PostgreSQL',
    args: () => ['status'],
    env: { DATABASE_URL: '' },
    says: /value '' from env 'DATABASE_URL' is invalid. It is empty: give a PostgreSQL URL/,
  },
  {
    name: 'status on an unreachable database says how to fix it',
    args: () => ['status', '--database-url', 'postgres://nobody@127.0.0.1:1/none'],
    says: /cannot reach PostgreSQL \(connect ECONNREFUSED .*\): check --database-url \/ DATABASE_URL/,
  },
  {
    name: 'an unknown option is one line',
    args: () => ['status', '--colour'],
    says: /unknown option '--colour'; see `oncely status --help`/,
  },
  {
    name: 'an unknown command is one line, with the suggestion',
    args: () => ['stauts'],
    says: /unknown command 'stauts' \(did you mean status\?\); see `oncely --help`/,
  },
  {
    name: 'an unknown subcommand is one line naming the ones there are',
    args: () => ['offsets', 'rewind'],
    says: /unknown command 'rewind': one of show, reset; see `oncely offsets --help`/,
  },
  {
    name: 'a group command without its subcommand is one line, not its help',
    args: () => ['outbox'],
    says: /missing command: one of list, retry, discard/,
  },
  {
    name: 'a count that is not a whole number names the option',
    args: () => ['dead-letters', 'list', '--limit', 'ten'],
    says: /option '--limit <n>' argument 'ten' is invalid. Give a whole number of 1 or more/,
  },
  {
    name: 'doctor refuses a --max-lag that is not a number instead of comparing with NaN',
    args: () => ['doctor', '--max-lag', 'lots'],
    says: /option '--max-lag <n>' argument 'lots' is invalid/,
  },
];

describe('oncely CLI on bad input', () => {
  let before: unknown;
  beforeAll(async () => {
    before = await written();
  });

  it.concurrent.each(badInputs)('$name', async (input) => {
    const result = await oncely(input.args(), input.env);
    expect(result.stderr).toMatch(input.says);
    expect(result.stderr.trimEnd().split('\n'), result.stderr).toHaveLength(1);
    expect(result.stderr).toMatch(/^oncely: /);
    expect(result.stderr).not.toMatch(/Usage:|Options:/);
    expect(result.stdout).toBe('');
    expect(result.code).toBe(input.exitCode ?? 1);
  });

  it('G6: no bad input wrote anything: offsets in both stores, replays, inbox rows, horizons, outbox', async () => {
    expect(await written()).toEqual(before);
  });

  it('purge --help shows its windows as durations, not milliseconds', async () => {
    const help = await oncely(['purge', '--help']);
    expect(help.stdout).toMatch(/--inbox-for <duration>[^]*\(default: 7d\)/);
    expect(help.stdout).toMatch(/\(default:\s+30d\)/);
    expect(help.stdout).not.toMatch(/604800000|2592000000/);
  });

  it('colours only a terminal, unless FORCE_COLOR says so and NO_COLOR does not', async () => {
    const list = ['outbox', 'list'];
    const [piped, forced, noColour] = await Promise.all([
      oncely(list),
      oncely(list, { FORCE_COLOR: '1' }),
      oncely(list, { FORCE_COLOR: '1', NO_COLOR: '1' }),
    ]);
    expect(piped.stdout).toContain('parked-1');
    expect(piped.stdout).not.toContain('\u001b[');
    expect(forced.stdout).toContain('\u001b[');
    expect(noColour.stdout).not.toContain('\u001b[');
  });

  it('G6: purge --inbox-for below the floor runs with --force', async () => {
    const forced = await oncely(['purge', '--group', known, '--inbox-for', '0s', '--force']);
    expect(forced).toMatchObject({ code: 0, stderr: '' });
    expect(forced.stdout).toContain('Purged 10 inbox rows');
  });
});
