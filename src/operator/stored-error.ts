/**
 * A stored error as people read it, the same in `oncely dead-letters show` and the console:
 * validation issues as `path: message`, otherwise the message, database fields, causes and stack.
 */
import type { StoredError } from '../inbox/dead-letters.js';

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
