import type { StoredError } from '../inbox/dead-letters.js';
import { isOncelyError } from '../errors.js';
import { isValidationError } from './retry.js';

const MAX_STACK_BYTES = 8 * 1024;
const MAX_CAUSES = 5;

/**
 * Turns anything thrown into the JSON stored with a dead letter: name, message, code, the stack cut
 * to 8 KB, validation issues, database error fields and the chain of causes. NUL characters are
 * dropped because PostgreSQL's jsonb cannot hold them.
 */
export function describeError(error: unknown): StoredError {
  if (!(error instanceof Error)) {
    return { name: 'NonError', message: clean(safeString(error)) };
  }
  const record: Record<string, unknown> = { name: clean(error.name), message: clean(error.message) };
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') record.code = String(code);
  if (error.stack !== undefined) record.stack = cutBytes(clean(error.stack), MAX_STACK_BYTES);
  if (isValidationError(error)) record.issues = cleanJson(error.issues);
  if (isOncelyError(error) && Object.keys(error.context).length > 0) {
    record.context = cleanJson(error.context);
  }
  for (const field of ['detail', 'hint', 'constraint', 'table', 'column'] as const) {
    const value = (error as unknown as Record<string, unknown>)[field];
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

/** A string cut to at most `maxBytes` of UTF-8, never in the middle of a character. */
export function cutBytes(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  // Back up over continuation bytes (10xxxxxx) so the cut lands on a character boundary.
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}

function clean(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '') : text;
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
