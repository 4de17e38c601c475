/**
 * What every command shares about its output: a closed pipe ends the command quietly
 * (`oncely migrate --dry-run | head`), when to colour, stored errors printed readably, and a failure
 * as one line that says what to do.
 */
import Table from 'cli-table3';

import type { StoredError } from '../inbox/dead-letters.js';

/**
 * A reader that went away (`| head`, `| less` quit) is not an error: exit quietly, with success,
 * as Unix tools do. Any other write error is reported as usual.
 */
export function exitQuietlyOnClosedPipe(stream: NodeJS.WriteStream = process.stdout): void {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
}

/**
 * Whether a command colours what it writes to `stream`: the one place that decides, for every
 * command. `NO_COLOR` (non-empty) turns colour off whatever else is set; `FORCE_COLOR` turns it
 * on, even into a pipe or a file, unless it is `0` or `false`; otherwise only a terminal (not
 * `TERM=dumb`) gets colour. See no-color.org and force-color.org.
 */
export function colourEnabled(
  stream: Pick<NodeJS.WriteStream, 'isTTY'> = process.stdout,
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  const force = env.FORCE_COLOR;
  if (force !== undefined && force !== '') return !['0', 'false'].includes(force.toLowerCase());
  return stream.isTTY === true && env.TERM !== 'dumb';
}

/** ANSI colour when {@link colourEnabled} says so; plain text otherwise. */
export function colours(
  stream: Pick<NodeJS.WriteStream, 'isTTY'> = process.stdout,
  env: NodeJS.ProcessEnv = process.env,
) {
  const on = colourEnabled(stream, env);
  const paint =
    (code: number) =>
    (text: string): string =>
      on ? `\u001b[${code}m${text}\u001b[0m` : text;
  return { green: paint(32), yellow: paint(33), red: paint(31), bold: paint(1), dim: paint(2) };
}

/**
 * A cli-table3 table for stdout. Its colour library decides by itself (and colours a pipe), so the
 * style is set from {@link colourEnabled}: plain borders and headings unless colour is on.
 */
export function table(head: string[], stream: Pick<NodeJS.WriteStream, 'isTTY'> = process.stdout) {
  return new Table({
    head,
    style: colourEnabled(stream) ? { head: ['cyan'], border: ['grey'] } : { head: [], border: [] },
  });
}

/** Dead-letter ids are PostgreSQL bigints: positive whole numbers. */
export function parseDeadLetterId(id: string): string {
  if (!/^[1-9]\d{0,18}$/.test(id) || BigInt(id) > 9_223_372_036_854_775_807n) {
    throw new Error(
      `"${id}" is not a dead-letter id: ids are positive whole numbers, as \`oncely dead-letters list\` shows them.`,
    );
  }
  return id;
}

interface Issue {
  readonly path?: readonly (string | number)[];
  readonly message?: string;
}

/** `path: message`, one per validation issue (the top level is `(value)`). */
export function formatIssues(issues: readonly unknown[]): string[] {
  return issues.map((raw) => {
    const issue = (typeof raw === 'object' && raw !== null ? raw : {}) as Issue;
    const path = issue.path === undefined || issue.path.length === 0 ? '(value)' : issue.path.join('.');
    return `${path}: ${issue.message ?? JSON.stringify(raw)}`;
  });
}

/**
 * A zod error's message is the JSON of its issues: read it back as `path: message; …` so a table
 * cell or a one-line report says what is wrong. Other messages are returned as they are.
 */
export function readableMessage(message: string): string {
  const trimmed = message.trim();
  if (!trimmed.startsWith('[')) return message;
  try {
    const parsed = JSON.parse(trimmed) as unknown;
    if (Array.isArray(parsed) && parsed.every((i) => typeof i === 'object' && i !== null && 'message' in i)) {
      return formatIssues(parsed).join('; ');
    }
  } catch {
    // not JSON after all
  }
  return message;
}

/**
 * A stored error for people: validation issues as `path: message` (their JSON message and the
 * stack that repeats it are left out), otherwise the message, database fields, causes and stack.
 */
export function formatStoredError(error: StoredError): string[] {
  const record = error as StoredError & Record<string, unknown>;
  const lines: string[] = [];
  const code = typeof record.code === 'string' ? ` (${record.code})` : '';
  if (Array.isArray(error.issues) && error.issues.length > 0) {
    lines.push(`${error.name}${code}: the payload does not match the handler's schema`);
    lines.push(...formatIssues(error.issues).map((l) => `  ${l}`));
  } else {
    lines.push(`${error.name}${code}: ${error.message}`);
  }
  for (const field of ['detail', 'hint', 'constraint', 'table', 'column'] as const) {
    if (typeof record[field] === 'string') lines.push(`  ${field}: ${record[field]}`);
  }
  if (Array.isArray(record.causes)) lines.push(...record.causes.map((c) => `  caused by ${String(c)}`));
  if (!Array.isArray(error.issues) && typeof record.stack === 'string') {
    lines.push(
      ...record.stack
        .split('\n')
        .slice(1)
        .map((l) => `  ${l.trim()}`),
    );
  }
  return lines;
}

/** kafkajs errors that mean no broker answered (any copy of kafkajs: recognised by name). */
const KAFKA_UNREACHABLE = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound',
]);

/** Socket errors of a connection that never got a server's answer. */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ECONNRESET',
]);

const DATABASE_FIX = 'check --database-url / DATABASE_URL and that PostgreSQL accepts connections from here';

/** How to fix what PostgreSQL refused, by SQLSTATE. */
function databaseFix(sqlState: string): string {
  if (sqlState === '3D000') return 'check the database name in --database-url / DATABASE_URL';
  if (sqlState.startsWith('28')) return 'check the user name and password in --database-url / DATABASE_URL';
  if (sqlState === '42P01' || sqlState === '3F000') return 'run `oncely migrate` against this database first';
  if (sqlState === '42501') return 'grant the database user usage of schema oncely and its tables';
  return 'see the PostgreSQL error above';
}

/**
 * A failed command as one line for stderr: what happened and how to fix it. oncely's own errors
 * already say both; a kafkajs or pg error that reached the command gets the fix here (recognised by
 * shape, as everywhere: any copy of those libraries).
 */
export function failureLine(error: unknown): string {
  const chain: unknown[] = [];
  for (let e = error; typeof e === 'object' && e !== null && chain.length < 6; e = (e as { cause?: unknown }).cause) {
    chain.push(e);
  }
  const fields = (e: unknown) => e as { name?: unknown; message?: unknown; code?: unknown; type?: unknown };
  const text = (e: unknown): string => {
    const { message } = fields(e);
    return (typeof message === 'string' ? message : String(e)).replaceAll(/\s*\n\s*/g, ' ').trim();
  };
  const outer = fields(error);
  if (typeof outer.code === 'string' && outer.code.startsWith('ONCELY_')) {
    return `oncely: ${text(error)} (${outer.code})`;
  }
  const kafka = chain.filter((e) => typeof fields(e).name === 'string' && String(fields(e).name).startsWith('KafkaJS'));
  if (kafka.length > 0) {
    const innermost = kafka.at(-1);
    if (kafka.some((e) => KAFKA_UNREACHABLE.has(String(fields(e).name)))) {
      return `oncely: cannot reach Kafka (${text(innermost)}): check --brokers / KAFKA_BROKERS and that the brokers are reachable from here`;
    }
    if (kafka.some((e) => fields(e).type === 'UNKNOWN_TOPIC_OR_PARTITION')) {
      return `oncely: ${text(innermost)}: check --topic (the topic does not exist) and that --brokers / KAFKA_BROKERS name the right cluster`;
    }
    return `oncely: Kafka refused the request (${text(innermost)}): check the brokers' ACLs for this group and topic`;
  }
  const server = chain.find((e) => 'severity' in (e as object) && typeof fields(e).code === 'string');
  if (server !== undefined) {
    return `oncely: PostgreSQL: ${text(server)} (SQLSTATE ${String(fields(server).code)}): ${databaseFix(String(fields(server).code))}`;
  }
  const socket = chain.find((e) => typeof fields(e).code === 'string' && UNREACHABLE_CODES.has(String(fields(e).code)));
  if (socket !== undefined) return `oncely: cannot reach PostgreSQL (${text(socket)}): ${DATABASE_FIX}`;
  return `oncely: ${text(error)}`;
}
