import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { pino } from 'pino';

import { configError } from '../errors.js';
import type { DeadLetterReason } from '../inbox/dead-letters.js';
import type { DeadLetterStatus } from '../inbox/dead-letter-store.js';
import {
  discardDeadLetter,
  getDeadLetter,
  listDeadLetters,
  type ResolveResult,
  retryDeadLetter,
  retryDeadLetters,
} from '../replay/dead-letters.js';
import { type AnyHandlerDefinition, isHandlerDefinition } from '../pipeline/handler.js';
import { importUserModule } from './load-module.js';
import { formatIssues, formatStoredError, readableMessage } from '../operator/stored-error.js';
import { parseDeadLetterId, table as outputTable } from './output.js';

interface Common {
  readonly databaseUrl: string;
  readonly json?: boolean;
}

interface Filters {
  readonly group?: string;
  readonly topic?: string;
  readonly reason?: DeadLetterReason;
}

const print = (text: string): boolean => process.stdout.write(`${text}\n`);
const printJson = (value: unknown): boolean => print(JSON.stringify(value, jsonBytes, 2));

/** Buffers as base64 strings in --json output. */
function jsonBytes(this: unknown, key: string, value: unknown): unknown {
  const raw = (this as Record<string, unknown>)[key];
  return Buffer.isBuffer(raw) ? raw.toString('base64') : value;
}

export async function runList(
  options: Common & Filters & { status: DeadLetterStatus | 'all'; limit: number },
): Promise<void> {
  const letters = await listDeadLetters(options.databaseUrl, {
    ...(options.group === undefined ? {} : { groupId: options.group }),
    ...(options.topic === undefined ? {} : { topic: options.topic }),
    ...(options.reason === undefined ? {} : { reason: options.reason }),
    status: options.status,
    limit: options.limit,
  });
  if (options.json === true) {
    printJson(letters);
    return;
  }
  if (letters.length === 0) {
    print(`No ${options.status === 'all' ? '' : `${options.status} `}dead letters.`);
    return;
  }
  const table = outputTable([
    'id',
    'group',
    'topic/partition/offset',
    'message id',
    'reason',
    'attempts',
    'status',
    'created',
    'error',
  ]);
  for (const l of letters) {
    table.push([
      l.id,
      l.groupId,
      `${l.topic}/${l.partition}/${l.offset}`,
      shorten(l.messageId ?? '(invalid)', 36),
      l.reason,
      String(l.attempts),
      l.status,
      l.createdAt.toISOString().replace('T', ' ').slice(0, 19),
      shorten(readableMessage(l.errorMessage), 60),
    ]);
  }
  print(table.toString());
}

export async function runShow(id: string, options: Common): Promise<void> {
  const letter = await getDeadLetter(options.databaseUrl, parseDeadLetterId(id));
  if (letter === undefined) {
    process.exitCode = 1;
    print(`Dead letter ${id} does not exist.`);
    return;
  }
  if (options.json === true) {
    printJson(letter);
    return;
  }
  const value = letter.value === null ? '(none: a tombstone)' : printable(letter.value);
  const lines = [
    `Dead letter ${letter.id} · ${letter.status}${letter.resolvedAt === null ? '' : ` at ${letter.resolvedAt.toISOString()}`}`,
    `  group       ${letter.groupId}`,
    `  record      ${letter.topic}/${letter.partition}/${letter.offset}${letter.recordTimestamp === null ? '' : ` (${letter.recordTimestamp.toISOString()})`}`,
    `  message id  ${letter.messageId ?? '(invalid)'}`,
    `  reason      ${letter.reason}`,
    `  attempts    ${letter.attempts}`,
    `  created     ${letter.createdAt.toISOString()}`,
    ...(letter.resolution === null ? [] : [`  resolution  ${letter.resolution}`]),
    `  key         ${letter.key === null ? '(none)' : printable(letter.key)}`,
    '  headers',
    ...letter.headers.map((h) => `    ${h.key}: ${h.encoding === 'base64' ? `base64:${h.value}` : h.value}`),
    '  value',
    `    ${value}`,
    '  error',
    ...formatStoredError(letter.error).map((line) => `    ${line}`),
  ];
  print(lines.join('\n'));
}

export async function runDiscard(id: string, options: Common & { reason: string }): Promise<void> {
  report(await discardDeadLetter(options.databaseUrl, parseDeadLetterId(id), options.reason), options);
}

export async function runRetry(
  id: string | undefined,
  options: Common & Filters & { all?: boolean; handlers: string },
): Promise<void> {
  if ((id === undefined) === (options.all !== true)) {
    throw configError('retry', 'give one dead letter id, or --all (with optional --group, --topic, --reason)');
  }
  if (id !== undefined) parseDeadLetterId(id);
  const loaded = await loadHandlers(options.handlers);
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 2 });
  pool.on('error', () => undefined);
  try {
    const db = drizzle(pool, loaded.schema === undefined ? {} : { schema: loaded.schema });
    const retry = { db, handlers: loaded.handlers, logger: pino({ level: process.env.ONCELY_LOG_LEVEL ?? 'warn' }) };
    if (id !== undefined) {
      report(await retryDeadLetter(retry, id), options);
      return;
    }
    const results = await retryDeadLetters(retry, {
      ...(options.group === undefined ? {} : { groupId: options.group }),
      ...(options.topic === undefined ? {} : { topic: options.topic }),
      ...(options.reason === undefined ? {} : { reason: options.reason }),
    });
    if (options.json === true) {
      printJson(results);
    } else {
      for (const result of results) print(readableResult(result));
      const processed = results.filter((r) => r.outcome === 'processed').length;
      print(`${processed} of ${results.length} open dead letters retried successfully.`);
    }
    if (results.some((r) => r.outcome === 'failed')) process.exitCode = 1;
  } finally {
    await pool.end();
  }
}

/** A retry that failed on validation says which fields are wrong, one `path: message` per line. */
function readableResult(result: ResolveResult): string {
  const issues = result.error?.issues;
  if (issues === undefined || issues.length === 0) return readableMessage(result.message);
  return [
    `Retrying dead letter ${result.id} failed: the payload does not match the handler's schema`,
    ...formatIssues(issues).map((line) => `  ${line}`),
  ].join('\n');
}

function report(result: ResolveResult, options: Common): void {
  if (options.json === true) printJson(result);
  else print(readableResult(result));
  if (result.outcome === 'failed' || result.outcome === 'not_found' || result.outcome === 'not_retriable') {
    process.exitCode = 1;
  }
}

/**
 * The module given with --handlers: its exported handler definitions (a `handlers` array, a default
 * array, or individual exports) and, optionally, its drizzle `schema`.
 */
export async function loadHandlers(
  modulePath: string,
): Promise<{ handlers: AnyHandlerDefinition[]; schema?: Record<string, unknown> }> {
  const exports = await importUserModule(modulePath);
  const candidates = Object.values(exports).flatMap((value) => (Array.isArray(value) ? (value as unknown[]) : [value]));
  const handlers = candidates.filter(isHandlerDefinition);
  if (handlers.length === 0) {
    throw configError(
      'handlers',
      `${modulePath} exports no handler made with defineHandler(); export your consumer's handlers`,
    );
  }
  const schema = exports.schema;
  return typeof schema === 'object' && schema !== null
    ? { handlers, schema: schema as Record<string, unknown> }
    : { handlers };
}

function printable(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : `base64:${bytes.toString('base64')}`;
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
