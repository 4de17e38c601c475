/**
 * The one way oncely validates an options object (the consumer's, the relay's, an idempotent
 * route's): each owner states its options as a zod schema beside its code, and parses them here.
 * Whatever is wrong comes back as one `ONCELY_CONFIG` error whose one line names every bad option
 * by its path and says what to give instead; an unknown option is named with the closest known one.
 */
import type { z } from 'zod';

import { OncelyError } from './errors.js';

/** One thing wrong with an options object: where (the option's path) and what to do about it. */
export interface OptionProblem {
  readonly path: readonly PropertyKey[];
  readonly message: string;
}

/**
 * Parses `input` with `schema` and returns the result (defaults applied), or throws the
 * `ONCELY_CONFIG` error of {@link invalidOptions}. `at` is where these options sit in the caller's
 * own options (`['relay']` for a consumer's relay settings), so paths read as the user wrote them.
 */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, at: readonly string[] = []): z.output<S> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  throw invalidOptions(
    parsed.error.issues.flatMap((issue) => explainIssue(schema, issue)),
    at,
  );
}

/**
 * The error for options that are wrong, on one line: ``Invalid option `retry.attempts`: must be at
 * least 1`` for one problem, ``Invalid options: `groupId`: must not be empty; `concurrency`: …``
 * for several. `context.option` is the first problem's path.
 */
export function invalidOptions(problems: readonly OptionProblem[], at: readonly string[] = []): OncelyError {
  const paths = problems.map((p) => [...at, ...p.path.map(String)].join('.'));
  const lines = problems.map((p, i) => `\`${paths[i] === '' ? '(options)' : paths[i]}\`: ${p.message}`);
  return new OncelyError(
    'ONCELY_CONFIG',
    lines.length === 1 ? `Invalid option ${lines[0]}` : `Invalid options: ${lines.join('; ')}`,
    { context: { option: paths[0] ?? '' } },
  );
}

/** zod's "Unrecognized key" becomes one problem per key, with the closest known option of its object. */
function explainIssue(schema: z.ZodType, issue: z.core.$ZodIssue): OptionProblem[] {
  if (issue.code !== 'unrecognized_keys') return [issue];
  const known = knownKeys(schema, issue.path);
  return issue.keys.map((key) => {
    const suggestion = closestWord(key, known);
    return {
      path: [...issue.path, key],
      message: `unknown option${suggestion === undefined ? '' : `; did you mean \`${suggestion}\`?`}`,
    };
  });
}

/** The parts of a zod schema's definition the walk below reads. */
interface SchemaDef {
  readonly type: string;
  readonly shape?: Readonly<Record<string, z.core.$ZodType>>;
  readonly innerType?: z.core.$ZodType;
  readonly in?: z.core.$ZodType;
  readonly out?: z.core.$ZodType;
}

const defOf = (schema: z.core.$ZodType): SchemaDef => schema._zod.def;

/** The option names of the object at `path` in `schema`, read from the schema itself. */
function knownKeys(schema: z.core.$ZodType, path: readonly PropertyKey[]): string[] {
  let shape = shapeOf(schema);
  for (const step of path) {
    const next = shape?.[String(step)];
    shape = next === undefined ? undefined : shapeOf(next);
  }
  return Object.keys(shape ?? {});
}

/** The shape of the object schema inside `schema`'s wrappers (optional, default, transform, preprocess …). */
function shapeOf(schema: z.core.$ZodType, depth = 0): Readonly<Record<string, z.core.$ZodType>> | undefined {
  if (depth > 16) return undefined;
  const def = defOf(schema);
  if (def.type === 'object') return def.shape;
  const inner = [def.innerType, def.in, def.out];
  for (const candidate of inner) {
    const shape = candidate === undefined ? undefined : shapeOf(candidate, depth + 1);
    if (shape !== undefined) return shape;
  }
  return undefined;
}

/** The candidate closest to `word` within three edits (case-insensitive), or undefined. */
export function closestWord(word: string, candidates: readonly string[]): string | undefined {
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance <= 3 && (best === undefined || distance < best.distance)) best = { candidate, distance };
  }
  return best?.candidate;
}

/** Levenshtein distance: how many single-letter edits turn `a` into `b` (`stauts` → `status`: 2). */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        (previous[j] ?? 0) + 1,
        (current[j - 1] ?? 0) + 1,
        (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
