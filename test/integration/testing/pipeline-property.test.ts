/**
 * A property-based test of the pipeline: generated sequences of records go
 * through generated handlers, in both modes, against the real database, driven by the
 * `oncely/testing` delivery (no broker). The property — G2 and G5 — is:
 *
 * - every record ends in exactly one recorded outcome: an inbox row at its coordinates
 *   (`processed`, or `dead_lettered` with its `dead_letters` row), a `dead_letters` row alone
 *   (unclaimable id, key reuse), or a classified duplicate;
 * - no partition stalls: every record reaches its outcome within a bound (the delivery's
 *   `stallTimeoutMs`), and every partition's resume point ends past its last record;
 * - no effect is applied twice: the `effects` rows are unique per message id, and only messages
 *   recorded as `processed` have one;
 * - delivering everything again at the same coordinates (a crash before the offset commit)
 *   changes nothing in the database.
 *
 * Seeded and replayable: the seed is printed; replay with `FC_SEED=<seed>` (and `FC_PATH=<path>`
 * from a failure report to replay only the shrunk counterexample). `FC_NUM_RUNS` changes the
 * number of runs (default 30, about a minute on a loaded CI machine).
 *
 * Generators that found bugs when this test was written (all fixed since, kept as guards; each was
 * also run alone, in both modes — the counterexamples as the test reported them then):
 * - a zod `transform` that throws a non-zod error (`amount: z.string().transform(BigInt)` on "abc")
 *   or a `superRefine` that throws: the parse runs inside the claim's transaction and its error is
 *   classed transient, retried forever — "record …/1/0 reached no recorded outcome within 8000 ms";
 * - the same transform on a handler with `messageId(event)` (the event is decoded before any
 *   transaction): the SyntaxError escapes the pipeline ("Cannot convert abc to a BigInt");
 * - a header key with NUL (`trace\u0000id`) or a lone surrogate (`trace\ud800`) on a record that
 *   is dead-lettered: the dead letter's headers are not storable as jsonb and `untilCommitted`
 *   retries forever — a stall (the first shrunk counterexample of seed 20261201 was exactly this:
 *   id "a\u0000b" with a NUL header key);
 * - an `Idempotency-Key` header written with capitals: ignored, so the event is keyed by its
 *   coordinates ("a valid event with a fresh id ended processed, not processed under …").
 * Kept because the issue names them, though they passed alone here: a custom `decode` that
 * throws, a `messageId()` that throws, lone surrogates and NUL in ids, notes and JSON values.
 * `PROPERTY_WITHOUT_KNOWN_BUGS=1` leaves all the generators above out, to check everything else
 * while a regression among them is being fixed; never set it in CI.
 */
import { AssertionError } from 'node:assert';

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';

import {
  type AnyHandlerDefinition,
  defineBatchHandler,
  defineHandler,
  NonRetriableError,
  type OncelyTransaction,
} from '../../../src/index.js';
import { Delivery, type DeliveryReport, type TestMessage } from '../../../src/testing/delivery.js';
import { effects, useTestEnvironment } from '../../support/integration.js';

const env = useTestEnvironment();

const SEED = Number(process.env.FC_SEED ?? 20_261_201);
const NUM_RUNS = Number(process.env.FC_NUM_RUNS ?? 30);
const PATH = process.env.FC_PATH;
/** A record that takes longer than this to reach its outcome would stall its partition. */
const STALL_TIMEOUT_MS = 8_000;
const MAX_PAYLOAD_BYTES = 2_048;
/** Leaves out the generators listed at the top of this file (for working on the rest while they are fixed). */
const WITHOUT_KNOWN_BUGS = process.env.PROPERTY_WITHOUT_KNOWN_BUGS === '1';

/** What a valid event asks its handler (and its schema, decoder, id function) to do. */
const BEHAVIOURS = [
  'ok',
  'fail-once', // throws a plain Error on its first attempt only
  'fail-always', // throws a plain Error on every attempt: handler_failed
  'non-retriable', // throws NonRetriableError with the event's note in its message
  'transform-throws', // the schema's transform throws a SyntaxError (BigInt("abc"))
  'refine-throws', // the schema's superRefine throws a TypeError
  'decode-throws', // a custom decoder throws a RangeError
  'id-throws', // messageId(event) throws
] as const;
type Behaviour = (typeof BEHAVIOURS)[number];
const KNOWN_BUG_BEHAVIOURS: readonly Behaviour[] = ['transform-throws', 'refine-throws', 'decode-throws', 'id-throws'];
const behaviours = BEHAVIOURS.filter((b) => !WITHOUT_KNOWN_BUGS || !KNOWN_BUG_BEHAVIOURS.includes(b));

/** Texts that must survive into stored errors, payloads and ids. */
const NASTY_TEXTS = WITHOUT_KNOWN_BUGS
  ? ['plain', '', 'card 💳 €']
  : ['plain', '', 'nul \u0000 inside', 'lone \ud800AB', 'low \udc00', 'card 💳 €'];
const NASTY_IDS = WITHOUT_KNOWN_BUGS
  ? ['', 'y'.repeat(300), '💳-id']
  : ['a\u0000b', '\ud800x', 'x\udfff', '', 'y'.repeat(300), '💳-id'];

type IdSpec =
  | { readonly kind: 'fresh' } // a unique, valid id
  | { readonly kind: 'none' } // no id: Kafka coordinates
  | { readonly kind: 'text'; readonly text: string } // a nasty text (NUL, lone surrogate, empty, too long)
  | { readonly kind: 'bytes' }; // invalid UTF-8 bytes in the header

type Generated =
  | {
      readonly kind: 'event';
      readonly id: IdSpec;
      /** Header the id travels in (ignored for `none`); `event` puts it in the body for messageId(event). */
      readonly idIn: 'message-id' | 'Idempotency-Key' | 'idempotency-key' | 'event';
      readonly behaviour: Behaviour;
      readonly note: string;
      readonly n: number;
      readonly key: string | null;
      readonly extraHeaders: 'none' | 'nul-key' | 'surrogate-key' | 'binary-value';
      readonly oversized: boolean;
    }
  | { readonly kind: 'duplicate'; readonly of: number }
  | { readonly kind: 'key-reuse'; readonly of: number }
  | {
      readonly kind: 'raw';
      readonly value: 'invalid-utf8' | 'invalid-json' | 'tombstone' | 'json-array' | 'nul-json';
      readonly id: IdSpec;
      readonly key: string | null;
    };

interface HandlerShape {
  readonly mode: 'message' | 'batch';
  readonly messageIdFromEvent: boolean;
  readonly customDecode: boolean;
  readonly tombstone: 'dead-letter' | 'skip' | 'function';
  readonly redeliverAll: boolean;
  /** Message mode: maxMessagesPerTransaction (1: no grouping; 3: small groups; 100: the default). */
  readonly group: number;
}

const idSpec: fc.Arbitrary<IdSpec> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({ kind: 'fresh' } as const) },
  { weight: 1, arbitrary: fc.constant({ kind: 'none' } as const) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(...NASTY_IDS).map((text) => ({ kind: 'text', text }) as const),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'bytes' } as const) },
);

const generated: fc.Arbitrary<Generated> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant('event' as const),
      id: idSpec,
      idIn: WITHOUT_KNOWN_BUGS
        ? fc.constantFrom('message-id' as const, 'idempotency-key' as const, 'event' as const)
        : fc.constantFrom(
            'message-id' as const,
            'Idempotency-Key' as const,
            'idempotency-key' as const,
            'event' as const,
          ),
      behaviour: fc.oneof({ weight: 6, arbitrary: fc.constant('ok' as const) }, fc.constantFrom(...behaviours)),
      note: fc.oneof({ weight: 4, arbitrary: fc.constant('plain') }, fc.constantFrom(...NASTY_TEXTS)),
      n: fc.integer({ min: 0, max: 1_000_000 }),
      key: fc.constantFrom('acct-a', 'acct-b', 'acct-c', null),
      extraHeaders: fc.oneof(
        { weight: 6, arbitrary: fc.constant('none' as const) },
        WITHOUT_KNOWN_BUGS
          ? fc.constant('binary-value' as const)
          : fc.constantFrom('nul-key' as const, 'surrogate-key' as const, 'binary-value' as const),
      ),
      oversized: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, fc.constant(true)),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), of: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('key-reuse' as const), of: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('raw' as const),
      value: WITHOUT_KNOWN_BUGS
        ? fc.constantFrom('invalid-utf8' as const, 'invalid-json' as const, 'tombstone' as const, 'json-array' as const)
        : fc.constantFrom(
            'invalid-utf8' as const,
            'invalid-json' as const,
            'tombstone' as const,
            'json-array' as const,
            'nul-json' as const,
          ),
      id: idSpec,
      key: fc.constantFrom('acct-a', 'acct-b', null),
    }),
  },
);

const shape: fc.Arbitrary<HandlerShape> = fc.record({
  mode: fc.constantFrom('message', 'batch'),
  messageIdFromEvent: fc.boolean(),
  customDecode: fc.boolean(),
  tombstone: fc.constantFrom('dead-letter', 'skip', 'function'),
  redeliverAll: fc.boolean(),
  group: fc.constantFrom(1, 3, 100),
});

const workload = fc.record({ shape, records: fc.array(generated, { minLength: 1, maxLength: 14 }) });

/** A message built from a generated record, and whether the model says it must be applied. */
interface Built {
  readonly message: TestMessage;
  /** A valid, well-behaved event with a unique id: it must end `processed` with one effect. */
  readonly mustApply: boolean;
  /** The id it must be applied under, when `mustApply`. */
  readonly id?: string;
}

function build(topic: string, shapeOf: HandlerShape, records: readonly Generated[]): Built[] {
  const built: Built[] = [];
  records.forEach((record, index) => {
    switch (record.kind) {
      case 'duplicate':
      case 'key-reuse': {
        const original = built.length === 0 ? undefined : built[record.of % built.length];
        if (original === undefined) return;
        const message =
          record.kind === 'duplicate'
            ? original.message // same id, same bytes: a producer retry
            : { ...original.message, value: mutated(original.message.value) }; // same id, other bytes
        built.push({ message, mustApply: false });
        return;
      }
      case 'raw': {
        const headers = idHeaders(record.id, 'message-id', `${topic}-raw-${index}`);
        const value = {
          'invalid-utf8': Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
          'invalid-json': '{"n": 1,',
          tombstone: null,
          'json-array': [1, 2, 3],
          'nul-json': '{"n":1,"behaviour":"ok","note":"\\u0000","amount":"1"}',
        }[record.value];
        built.push({ message: { topic, key: record.key, value, headers }, mustApply: false });
        return;
      }
      case 'event': {
        const fresh = `${topic}-m-${index}`;
        const idText = idTextOf(record.id, fresh);
        const inEvent = record.idIn === 'event' && shapeOf.messageIdFromEvent && typeof idText === 'string';
        const headers: Record<string, string | Buffer> = {
          ...(inEvent ? {} : idHeaders(record.id, record.idIn === 'event' ? 'message-id' : record.idIn, fresh)),
          ...extraHeaders(record.extraHeaders),
        };
        const event = {
          n: record.n,
          behaviour: record.behaviour,
          note: record.oversized ? 'z'.repeat(MAX_PAYLOAD_BYTES) : record.note,
          amount: record.behaviour === 'transform-throws' ? 'abc' : String(record.n),
          ...(inEvent ? { id: idText } : {}),
        };
        const idUsed = inEvent || record.idIn !== 'event' || !shapeOf.messageIdFromEvent;
        const mustApply =
          record.id.kind === 'fresh' &&
          idUsed &&
          !record.oversized &&
          record.note === 'plain' &&
          record.extraHeaders === 'none' &&
          (record.behaviour === 'ok' ||
            record.behaviour === 'fail-once' ||
            (record.behaviour === 'decode-throws' && !shapeOf.customDecode) ||
            (record.behaviour === 'id-throws' && !shapeOf.messageIdFromEvent));
        built.push({
          message: { topic, key: record.key, value: event, headers },
          mustApply,
          ...(mustApply ? { id: fresh } : {}),
        });
        return;
      }
    }
  });
  return built;
}

function idTextOf(id: IdSpec, fresh: string): string | Buffer | undefined {
  switch (id.kind) {
    case 'fresh':
      return fresh;
    case 'none':
      return undefined;
    case 'text':
      return id.text;
    case 'bytes':
      return Buffer.from([0x69, 0x64, 0xed, 0xa0, 0x80]); // "id" + a UTF-8-encoded surrogate: invalid
  }
}

function idHeaders(id: IdSpec, header: string, fresh: string): Record<string, string | Buffer> {
  const text = idTextOf(id, fresh);
  return text === undefined ? {} : { [header]: text };
}

function extraHeaders(kind: Extract<Generated, { kind: 'event' }>['extraHeaders']): Record<string, string | Buffer> {
  switch (kind) {
    case 'none':
      return {};
    case 'nul-key':
      return { 'trace\u0000id': 'abc' };
    case 'surrogate-key':
      return { 'trace\ud800': 'abc' };
    case 'binary-value':
      return { trace: Buffer.from([0xc3, 0x28, 0x00, 0xff]) };
  }
}

function mutated(value: unknown): unknown {
  if (value === null) return '{}';
  if (Buffer.isBuffer(value)) return Buffer.concat([value, Buffer.from(' ')]);
  if (typeof value === 'string') return `${value} `;
  if (Array.isArray(value)) return [...(value as unknown[]), 0];
  return { ...(value as Record<string, unknown>), n: ((value as { n?: number }).n ?? 0) + 1 };
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The handler of one run: its schema, decoder, id function and failures are all generated. */
function handlerFor(topic: string, groupTag: string, shapeOf: HandlerShape): AnyHandlerDefinition {
  const schema = z
    .object({
      n: z.number().int(),
      behaviour: z.string(),
      note: z.string(),
      id: z.string().optional(),
      // A transform that throws a non-zod error: BigInt("abc") throws SyntaxError.
      amount: z.string().transform((s) => BigInt(s).toString()),
    })
    .superRefine((event) => {
      if (event.behaviour === 'refine-throws') throw new TypeError('a refinement that throws');
    });
  type Event = z.infer<typeof schema>;
  const decode = (value: Buffer | null): unknown => {
    if (value === null) throw new TypeError('no value to decode');
    const text = strictUtf8.decode(value); // throws TypeError on invalid UTF-8
    if (text.includes('"decode-throws"')) throw new RangeError('the custom decoder refused this value');
    return JSON.parse(text) as unknown;
  };
  const messageId = (event: Event): string | undefined => {
    if (event.behaviour === 'id-throws') throw new Error('messageId() could not find an id');
    return event.id;
  };
  const seen = new Map<string, number>();
  const fail = (event: Event, id: string): void => {
    const count = (seen.get(id) ?? 0) + 1;
    seen.set(id, count);
    if (event.behaviour === 'fail-once' && count === 1) throw new Error('the ledger timed out');
    if (event.behaviour === 'fail-always') throw new Error(`the ledger rejected "${event.note}"`);
    if (event.behaviour === 'non-retriable') throw new NonRetriableError(`rejected for good: "${event.note}"`);
  };
  const apply = (
    tx: OncelyTransaction,
    rows: { id: string; message: { partition: number; offset: string }; payload: unknown }[],
  ) =>
    tx.insert(effects).values(
      rows.map((r) => ({
        messageId: r.id,
        topic,
        partition: r.message.partition,
        offset: Number(r.message.offset),
        consumer: groupTag,
        payload: r.payload,
      })),
    );
  const common = {
    topic,
    schema,
    ...(shapeOf.customDecode ? { decode } : {}),
    ...(shapeOf.messageIdFromEvent ? { messageId } : {}),
  };
  if (shapeOf.mode === 'batch') {
    return defineBatchHandler({
      ...common,
      tombstone: shapeOf.tombstone === 'function' ? 'skip' : shapeOf.tombstone,
      async handleBatch(events, ctx) {
        await apply(
          ctx.tx,
          events.map((e) => ({ id: e.messageId, message: e.message, payload: { n: e.event.n, note: e.event.note } })),
        );
        for (const e of events) fail(e.event, e.messageId);
      },
    });
  }
  return defineHandler({
    ...common,
    tombstone:
      shapeOf.tombstone === 'function'
        ? async (ctx) => {
            await apply(ctx.tx, [{ id: ctx.messageId, message: ctx.message, payload: { tombstone: true } }]);
          }
        : shapeOf.tombstone,
    async handle(event, ctx) {
      await apply(ctx.tx, [{ id: ctx.messageId, message: ctx.message, payload: { n: event.n, note: event.note } }]);
      fail(event, ctx.messageId);
    },
  });
}

interface Coordinates {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
}
const at = (c: Coordinates): string => `${c.partition}/${c.offset}`;

/** Everything the run recorded in the database, for its group and topic. */
async function recorded(groupId: string, topic: string, groupTag: string) {
  const pool = env.pool;
  const [inbox, deadLetters, applied, offsets] = await Promise.all([
    pool.query<{ message_id: string; partition: number; offset: string; status: string }>(
      'SELECT message_id, partition, "offset"::text AS "offset", status FROM oncely.inbox WHERE consumer_group = $1 AND topic = $2',
      [groupId, topic],
    ),
    pool.query<{ message_id: string | null; partition: number; offset: string; reason: string }>(
      'SELECT message_id, partition, "offset"::text AS "offset", reason FROM oncely.dead_letters WHERE consumer_group = $1 AND topic = $2',
      [groupId, topic],
    ),
    pool.query<{ message_id: string; n: number }>(
      'SELECT message_id, count(*)::int AS n FROM effects WHERE consumer = $1 GROUP BY message_id',
      [groupTag],
    ),
    pool.query<{ partition: number; next_offset: string }>(
      'SELECT partition, next_offset::text AS next_offset FROM oncely.offsets WHERE consumer_group = $1 AND topic = $2',
      [groupId, topic],
    ),
  ]);
  return { inbox: inbox.rows, deadLetters: deadLetters.rows, effects: applied.rows, offsets: offsets.rows };
}

/** Fails with `message` (an AssertionError, so fast-check reports it with the counterexample). */
function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new AssertionError({ message });
}

const sameBytes = (a: Buffer | null, b: Buffer | null): boolean =>
  a === null || b === null ? a === b : Buffer.compare(a, b) === 0;

let runNumber = 0;

async function runOnce({ shape: shapeOf, records }: { shape: HandlerShape; records: Generated[] }): Promise<void> {
  runNumber += 1;
  const topic = `prop-${SEED}-${runNumber}-${Date.now().toString(36)}`;
  const groupTag = topic;
  const built = build(topic, shapeOf, records);
  const delivery = new Delivery({
    db: env.db,
    handlers: [handlerFor(topic, groupTag, shapeOf)],
    messages: built.map((b) => b.message),
    seed: SEED,
    retry: { attempts: 3, initialDelayMs: 1, maxDelayMs: 5 },
    batchSize: 5,
    maxMessagesPerTransaction: shapeOf.group,
    maxPayloadBytes: MAX_PAYLOAD_BYTES,
    stallTimeoutMs: STALL_TIMEOUT_MS,
  });
  const groupId = delivery.groupId;
  const delivered = await delivery.deliver(delivery.plan(built.map((b) => b.message)));
  const report: DeliveryReport = delivery.report();
  const state = await recorded(groupId, topic, groupTag);

  // Every record: exactly one recorded outcome.
  const inboxAt = new Map(state.inbox.map((r) => [at({ topic, ...r }), r]));
  const lettersAt = new Map<string, (typeof state.deadLetters)[number][]>();
  for (const letter of state.deadLetters) {
    const key = at({ topic, ...letter });
    lettersAt.set(key, [...(lettersAt.get(key) ?? []), letter]);
  }
  const announcedAt = new Map<string, (typeof report.outcomes)[number][]>();
  for (const outcome of report.outcomes) {
    const key = at(outcome);
    announcedAt.set(key, [...(announcedAt.get(key) ?? []), outcome]);
  }
  const inboxIds = new Set(state.inbox.map((r) => r.message_id));
  delivered.forEach((record, i) => {
    const where = `record ${i} at ${at(record)}`;
    const row = inboxAt.get(at(record));
    const letters = lettersAt.get(at(record)) ?? [];
    const announced = announcedAt.get(at(record)) ?? [];
    check(announced.length === 1, `${where}: ${announced.length} outcomes announced, expected exactly 1`);
    const outcome = announced[0];
    check(letters.length <= 1, `${where}: ${letters.length} dead letters`);
    const outcomes = [
      row?.status === 'processed' && letters.length === 0,
      row?.status === 'dead_lettered' && letters.length === 1,
      row === undefined && letters.length === 1,
      row === undefined &&
        letters.length === 0 &&
        outcome?.outcome === 'duplicate' &&
        inboxIds.has(outcome.messageId ?? ''),
    ].filter(Boolean).length;
    check(
      outcomes === 1,
      `${where}: no single recorded outcome (inbox ${row?.status ?? 'none'}, dead letters ${letters.length}, announced ${outcome?.outcome ?? 'none'})`,
    );
    if (outcome?.outcome === 'duplicate') {
      // Skipped silently only with the original's very bytes: other bytes under a recorded id are
      // key reuse, which must be dead-lettered (DESIGN §3), never skipped.
      const holder = state.inbox.find((r) => r.message_id === outcome.messageId);
      const original = delivered.find((r) => holder !== undefined && at(r) === at({ topic, ...holder }));
      check(
        original !== undefined && sameBytes(original.value, record.value),
        `${where}: skipped as a duplicate of ${holder === undefined ? 'nothing' : at({ topic, ...holder })} with other bytes (key reuse skipped silently)`,
      );
    }
    if (row !== undefined) {
      const expected = row.status === 'processed' ? ['processed', 'skipped'] : ['dead_lettered'];
      check(
        expected.includes(outcome?.outcome ?? ''),
        `${where}: inbox says ${row.status}, announced ${outcome?.outcome}`,
      );
    }
    const model = built[i];
    if (model?.mustApply === true) {
      check(
        row?.status === 'processed' && outcome?.outcome === 'processed' && row.message_id === model.id,
        `${where}: a valid event with a fresh id ended ${outcome?.outcome ?? 'with nothing'}, not processed under ${model.id}`,
      );
    }
  });

  // No partition stalled short of its end: each resume point is past its last record.
  const lastOffset = new Map<number, bigint>();
  for (const r of delivered) lastOffset.set(r.partition, BigInt(r.offset));
  for (const [partition, last] of lastOffset) {
    const next = state.offsets.find((o) => o.partition === partition)?.next_offset;
    check(next === String(last + 1n), `partition ${partition}: resume point ${next ?? 'none'}, expected ${last + 1n}`);
  }

  // No effect applied twice, and none for a message not recorded as processed.
  const processed = new Set(state.inbox.filter((r) => r.status === 'processed').map((r) => r.message_id));
  for (const effect of state.effects) {
    check(effect.n === 1, `message ${JSON.stringify(effect.message_id)} applied ${effect.n} times`);
    check(
      processed.has(effect.message_id),
      `message ${JSON.stringify(effect.message_id)} applied but not recorded as processed`,
    );
  }

  // Everything again at the same coordinates (a crash before the offset commit): nothing changes.
  if (shapeOf.redeliverAll) {
    await delivery.redeliver(delivered);
    const again = await recorded(groupId, topic, groupTag);
    const sorted = (s: typeof state) =>
      JSON.stringify(Object.values(s).map((rows) => rows.map((r) => JSON.stringify(r)).sort()));
    check(sorted(again) === sorted(state), 'delivering every record again changed the recorded state');
  }
  expect(report.delivered).toBe(delivered.length);
}

describe('G2 G5: the pipeline under generated records and generated failures', () => {
  it('G2 G5: every generated record ends in exactly one recorded outcome, no partition stalls and no effect is applied twice, in both modes', async () => {
    // Printed so that any failure, in CI too, can be replayed exactly.
    console.info(
      `pipeline property: seed ${SEED}, ${NUM_RUNS} runs (replay with FC_SEED=${SEED}; FC_PATH from the failure replays its counterexample)`,
    );
    await fc.assert(fc.asyncProperty(workload, runOnce), {
      seed: SEED,
      numRuns: NUM_RUNS,
      ...(PATH === undefined ? {} : { path: PATH }),
      // Shrinking a stalled run costs a stall bound per try: cap the whole search, keep what was found.
      plugins: [fc.interruptAfterTimeLimit(150_000)],
    });
  }, 240_000);
});
