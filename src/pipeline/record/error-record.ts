import type { StoredError } from '../../inbox/dead-letters.js';
import { isOncelyError } from '../../errors.js';
import { isValidationError } from '../retry.js';

const MAX_STACK_BYTES = 8 * 1024;
const MAX_CAUSES = 5;

/**
 * Turns anything thrown into the JSON stored with a dead letter: name, message, code, the stack cut
 * to 8 KB, validation issues, database error fields and the chain of causes. NUL characters are
 * dropped because PostgreSQL's jsonb cannot hold them.
 */
export function describeError(raw: unknown): StoredError {
  const error = redactError(raw);
  if (!(error instanceof Error)) {
    return { name: 'NonError', message: clean(safeString(error)) };
  }
  const record: Record<string, unknown> = { name: clean(error.name), message: clean(error.message) };
  // A wrapped database error (drizzle's DrizzleQueryError around pg's) lends its SQLSTATE and names.
  const source = databaseErrorIn(error) ?? error;
  const code = (error as { code?: unknown }).code ?? (source as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') record.code = String(code);
  if (error.stack !== undefined) record.stack = cutBytes(clean(error.stack), MAX_STACK_BYTES);
  if (isValidationError(error)) record.issues = cleanJson(error.issues);
  if (isOncelyError(error) && Object.keys(error.context).length > 0) {
    record.context = cleanJson(error.context);
  }
  // Not `detail`: PostgreSQL puts the offending values there ("Key (card)=(4111…) already exists").
  for (const field of ['hint', 'constraint', 'table', 'column'] as const) {
    const value = (source as unknown as Record<string, unknown>)[field];
    if (typeof value === 'string') record[field] = clean(value);
  }
  const causes: string[] = [];
  let cause: unknown = error.cause;
  while (cause !== undefined && causes.length < MAX_CAUSES) {
    causes.push(clean(cause instanceof Error ? `${cause.name}: ${cause.message}` : safeString(cause)));
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  if (causes.length > 0) record.causes = causes;
  return record as StoredError;
}

/** The first PostgreSQL server error in the cause chain (it has a SQLSTATE `code` and a `severity`). */
function databaseErrorIn(error: Error): Error | undefined {
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth <= MAX_CAUSES; depth++, current = current.cause) {
    if ('severity' in current && 'code' in current) return current;
  }
  return undefined;
}

/** A string cut to at most `maxBytes` of UTF-8, never in the middle of a character. */
export function cutBytes(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  // Back up over continuation bytes (10xxxxxx) so the cut lands on a character boundary.
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}

/** Text jsonb can hold: lone surrogates become U+FFFD, NUL characters are dropped. */
export function clean(text: string): string {
  const wellFormed = text.isWellFormed() ? text : text.toWellFormed();
  return wellFormed.includes('\u0000') ? wellFormed.replaceAll('\u0000', '') : wellFormed;
}

/** Fields of driver errors that carry the query's values: payment data that must not be logged or stored. */
const VALUE_FIELDS = new Set(['params', 'parameters', 'values', 'detail', 'where']);
/** drizzle's DrizzleQueryError message (and so its stack) ends its first lines with `params: <values>`. */
const PARAMS_TEXT = /\nparams: [\s\S]*?(?=\n\s+at |$)/;

/**
 * The error without the values of the query that failed: drizzle's `DrizzleQueryError` lists the
 * parameters in its message and stack, pg's errors in `detail`. Everything oncely logs or stores
 * goes through here. Returns the error itself when there is nothing to remove.
 */
export function redactError(error: unknown, depth = 0): unknown {
  if (!(error instanceof Error) || depth > MAX_CAUSES || !needsRedaction(error, depth)) return error;
  const copy = new Error(error.message.replace(PARAMS_TEXT, ''));
  copy.name = error.name;
  if (error.stack !== undefined) copy.stack = error.stack.replace(PARAMS_TEXT, '');
  for (const [key, value] of Object.entries(error)) {
    if (!VALUE_FIELDS.has(key) && key !== 'cause') (copy as unknown as Record<string, unknown>)[key] = value;
  }
  if (error.cause !== undefined) copy.cause = redactError(error.cause, depth + 1);
  return copy;
}

function needsRedaction(error: unknown, depth: number): boolean {
  for (let current = error; current instanceof Error && depth <= MAX_CAUSES; current = current.cause, depth++) {
    if (Object.keys(current).some((key) => VALUE_FIELDS.has(key)) || PARAMS_TEXT.test(current.message)) return true;
  }
  return false;
}

/** A JSON-safe deep copy with NUL characters removed from every string. */
function cleanJson(value: unknown): unknown {
  const text = JSON.stringify(value, (_key, item: unknown) =>
    typeof item === 'string' ? clean(item) : typeof item === 'bigint' ? item.toString() : item,
  );
  return text === undefined ? null : (JSON.parse(text) as unknown);
}

function safeString(value: unknown): string {
  try {
    return typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
  } catch {
    return String(value);
  }
}
