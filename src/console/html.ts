/**
 * HTML built by one tagged template that escapes every interpolated value: text from the database,
 * Kafka or the request never reaches the page as markup. Only {@link Html} values (made by `html`
 * itself) are inserted as they are.
 */

export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replaceAll(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

function part(value: unknown): string {
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(part).join('');
  if (value === undefined || value === null || value === false) return '';
  if (typeof value === 'string') return escapeHtml(value);
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  // Anything else is a mistake that shows as such on the page (escaped, like everything).
  return escapeHtml(JSON.stringify(value) ?? '');
}

/** `html\`<td>${name}</td>\``: values escaped, nested `html` and arrays of it inserted as markup. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let text = strings[0] ?? '';
  values.forEach((value, i) => {
    text += part(value) + (strings[i + 1] ?? '');
  });
  return new Html(text);
}

/** A query string from pairs, leaving out empty values: `?group=a&topic=b`. */
export function query(params: Record<string, string | readonly string[] | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === '') continue;
    for (const v of Array.isArray(value) ? (value as readonly string[]) : [String(value)]) {
      search.append(key, v);
    }
  }
  const text = search.toString();
  return text === '' ? '' : `?${text}`;
}

/** A time as operators read it in a table: `2024-05-01 10:00:00Z`. */
export function time(date: Date | null | undefined): string {
  return date === null || date === undefined ? '—' : `${date.toISOString().replace('T', ' ').slice(0, 19)}Z`;
}
