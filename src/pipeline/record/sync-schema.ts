/**
 * Whether a zod schema can be parsed synchronously with the same outcome as asynchronously.
 *
 * zod's synchronous parse differs from its asynchronous one only where a step of the schema hands
 * back a promise: a refine, a transform, a codec, `z.promise`, a lazy schema. Parsed synchronously,
 * zod throws "use parseAsync" there and drops that promise — whose rejection then goes unhandled
 * and ends the process. So every message is parsed asynchronously unless its schema is made only of
 * zod's own steps, none of which ever returns a promise: then the synchronous parse is the same
 * parse, and it is the one zod compiles (an object schema parsed asynchronously skips its compiled
 * parser: in the bench, 1.2 KB more garbage and about a microsecond more per message).
 *
 * The walk is conservative: a schema it does not recognise (another zod major, another library, a
 * node type or check added later) counts as possibly async.
 */

interface ZodNode {
  readonly _zod?: { readonly def?: ZodDef };
}

interface ZodDef {
  readonly type?: unknown;
  readonly checks?: readonly { readonly _zod?: { readonly def?: { readonly check?: unknown } } }[];
  readonly [key: string]: unknown;
}

/** Node types that run no user code, with no children or with children walked below. */
const LEAVES = new Set([
  'any',
  'unknown',
  'never',
  'void',
  'undefined',
  'null',
  'nan',
  'boolean',
  'bigint',
  'symbol',
  'date',
  'string',
  'number',
  'literal',
  'enum',
  'file',
  'template_literal',
]);

/** Wrappers whose only child is `innerType`. `default` and `catch` values are used as returned. */
const WRAPPERS = new Set([
  'optional',
  'nullable',
  'default',
  'prefault',
  'nonoptional',
  'readonly',
  'success',
  'catch',
]);

/**
 * zod's own checks. A custom string format's function is called by both parses alike (its result
 * is tested for truth, never awaited), so `string_format` is the same either way.
 */
const CHECKS = new Set([
  'string_format',
  'number_format',
  'bigint_format',
  'less_than',
  'greater_than',
  'multiple_of',
  'min_size',
  'max_size',
  'size_equals',
  'min_length',
  'max_length',
  'length_equals',
  'mime_type',
  'overwrite',
  'meta',
  'describe',
  'regex',
  'lowercase',
  'uppercase',
  'includes',
  'starts_with',
  'ends_with',
]);

const known = new WeakMap<object, boolean>();

/** True when parsing with `schema` synchronously is the same as parsing it asynchronously. */
export function parsesSynchronously(schema: unknown): boolean {
  if (typeof schema !== 'object' || schema === null) return false;
  let answer = known.get(schema);
  if (answer === undefined) {
    try {
      answer = walk(schema, new Set());
    } catch {
      // A getter of the schema's own (a recursive shape) threw: not something to bet on.
      answer = false;
    }
    known.set(schema, answer);
  }
  return answer;
}

function walk(schema: unknown, seen: Set<unknown>): boolean {
  if (typeof schema !== 'object' || schema === null) return false;
  // A recursive schema meets itself again: that occurrence adds nothing the first one does not.
  if (seen.has(schema)) return true;
  seen.add(schema);
  const def = (schema as ZodNode)._zod?.def;
  if (def === undefined || typeof def.type !== 'string') return false;
  for (const check of def.checks ?? []) {
    if (!CHECKS.has(check._zod?.def?.check as string)) return false;
  }
  const type = def.type;
  const children = (...keys: string[]): boolean =>
    keys.every((key) => def[key] === undefined || def[key] === null || walk(def[key], seen));
  if (LEAVES.has(type)) return true;
  if (WRAPPERS.has(type)) return walk(def.innerType, seen);
  switch (type) {
    case 'object': {
      const shape = def.shape;
      if (typeof shape !== 'object' || shape === null) return false;
      return Object.values(shape).every((field) => walk(field, seen)) && children('catchall');
    }
    case 'array':
      return walk(def.element, seen);
    case 'set':
      return walk(def.valueType, seen);
    case 'map':
    case 'record':
      return walk(def.keyType, seen) && walk(def.valueType, seen);
    case 'tuple':
      return Array.isArray(def.items) && def.items.every((item) => walk(item, seen)) && children('rest');
    case 'union':
      return Array.isArray(def.options) && def.options.every((option) => walk(option, seen));
    case 'intersection':
      return walk(def.left, seen) && walk(def.right, seen);
    case 'pipe':
      // A codec is a pipe with the user's functions between its ends.
      return (
        def.transform === undefined && def.reverseTransform === undefined && walk(def.in, seen) && walk(def.out, seen)
      );
    default:
      // transform, custom, lazy, promise, function, and whatever is added later.
      return false;
  }
}
