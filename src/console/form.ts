/** A parsed form as URLSearchParams, whoever parsed it: the console's own parser or the host app's. */
export function formFrom(body: unknown): URLSearchParams | undefined {
  if (body instanceof URLSearchParams) return body;
  if (typeof body === 'string') return new URLSearchParams(body);
  if (typeof body !== 'object' || body === null || Buffer.isBuffer(body)) return undefined;
  // A body parser's object (express.urlencoded, @fastify/formbody): repeated fields are arrays.
  const form = new URLSearchParams();
  for (const [name, value] of Object.entries(body as Record<string, unknown>)) {
    for (const v of Array.isArray(value) ? (value as unknown[]) : [value]) {
      if (typeof v === 'string') form.append(name, v);
    }
  }
  return form;
}

/** The largest form the console reads: ids of a bulk action, a reason. */
export const MAX_FORM_BYTES = 64 * 1024;
