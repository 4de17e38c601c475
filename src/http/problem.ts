/**
 * RFC 9457 problem details for the answers oncely gives on its own, before or instead of the
 * route's handler. None of them is stored: a client can fix the request and retry with the key.
 */

/** Every problem oncely's HTTP layer answers with, and its status. Part of the public contract. */
export const IDEMPOTENCY_PROBLEMS = {
  /** The route requires an `Idempotency-Key` header and the request had none. */
  idempotency_key_missing: 400,
  /** The key is empty, longer than 255 characters, or not printable ASCII. */
  idempotency_key_invalid: 400,
  /** The request declares a JSON body (`Content-Type: …json`) that does not parse (an empty one included). */
  request_body_invalid_json: 400,
  /** The request body is larger than `maxBodyBytes` (or the framework's body limit). */
  request_body_too_large: 413,
  /** The framework could not read the body: a content type or charset nobody parses (adapters). */
  request_body_unsupported: 415,
  /** The framework refused the request before it ran for another reason (adapters, Node's parser). */
  request_invalid: 400,
  /** Another request with this key is running now (or did not finish within `waitTimeoutMs`). */
  idempotency_key_in_use: 409,
  /** The key was used before with another request (method, path or body). */
  idempotency_key_reused: 422,
  /** The handler's response is larger than `maxResponseBytes`; its transaction was rolled back. */
  response_too_large: 500,
  /**
   * No turn within `admission.queueTimeoutMs` (or the wait queue is full), or no connection for a
   * step record within its bound: nothing ran or everything rolled back; retry after `Retry-After`.
   */
  server_busy: 503,
} as const;

export type IdempotencyProblem = keyof typeof IDEMPOTENCY_PROBLEMS;

const TITLES: Record<IdempotencyProblem, string> = {
  idempotency_key_missing: 'Idempotency-Key header required',
  idempotency_key_invalid: 'Invalid Idempotency-Key header',
  request_body_invalid_json: 'Request body is not valid JSON',
  request_body_too_large: 'Request body too large',
  request_body_unsupported: 'Request body cannot be read',
  request_invalid: 'Request refused',
  idempotency_key_in_use: 'Idempotency-Key in use',
  idempotency_key_reused: 'Idempotency-Key reused with another request',
  response_too_large: 'Response too large to store',
  server_busy: 'Server busy',
};

/** A `application/problem+json` response; `type` is `typeBase` followed by the problem's name. */
export function problemResponse(
  problem: IdempotencyProblem,
  detail: string,
  typeBase: string,
  headers: Record<string, string> = {},
): Response {
  const status = IDEMPOTENCY_PROBLEMS[problem];
  const body = { type: `${typeBase}${problem}`, title: TITLES[problem], status, detail };
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/problem+json', 'cache-control': 'no-store', ...headers },
  });
}
