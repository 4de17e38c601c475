/**
 * The burst load of G7 under load (issue 20 case 1): autocannon sends first requests, each with a
 * key of its own, from `connections` clients at once for `seconds`, and tallies what came back —
 * answered (executed 2xx, or refused 503 with `Retry-After`) or not (errors, timeouts, anything
 * else). `npm run bench:http` runs it for 30 s at 4× the pool; an integration test for a few
 * seconds. No vitest imports: the bench loads it too.
 */
import { randomUUID } from 'node:crypto';

import autocannon from 'autocannon';

export interface BurstOptions {
  /** The route's full URL. */
  readonly url: string;
  readonly connections: number;
  readonly seconds: number;
  /** Extra request headers (the API key). */
  readonly headers?: Record<string, string>;
  /** Per-request timeout in seconds (autocannon's). Default 10. */
  readonly timeoutSeconds?: number;
}

export interface BurstTally {
  readonly sent: number;
  /** 2xx: the handler ran and its answer was stored. */
  readonly executed: number;
  /** 503 with a `Retry-After` header: refused within the bound. */
  readonly refusedWithRetryAfter: number;
  /** Anything else that came back (a 503 without Retry-After, a 500, …): must be 0. */
  readonly otherAnswers: number;
  readonly statuses: Readonly<Record<string, number>>;
  /** Connection errors and timeouts (autocannon counts a timeout among its errors too). */
  readonly errors: number;
  readonly timeouts: number;
  /** Every request got an answer in time (executed or refused with Retry-After). */
  readonly everyRequestAnswered: boolean;
  readonly requestsPerSecond: number;
  readonly p99Ms: number;
}

export async function runBurst(options: BurstOptions): Promise<BurstTally> {
  const statuses: Record<string, number> = {};
  let executed = 0;
  let refusedWithRetryAfter = 0;
  let otherAnswers = 0;
  const result = await autocannon({
    url: options.url,
    method: 'POST',
    connections: options.connections,
    duration: options.seconds,
    timeout: options.timeoutSeconds ?? 10,
    headers: { 'content-type': 'application/json', ...options.headers },
    requests: [
      {
        // A fresh key and amount per request: every request is a first use.
        setupRequest: (request) => ({
          ...request,
          headers: { ...request.headers, 'idempotency-key': randomUUID() },
          body: JSON.stringify({ accountId: 'acct-burst', amountCents: 100 + Math.floor(Math.random() * 9_900) }),
        }),
        onResponse: (status, _body, _context, headers) => {
          statuses[String(status)] = (statuses[String(status)] ?? 0) + 1;
          if (status >= 200 && status < 300) executed++;
          else if (status === 503 && headers?.['retry-after'] !== undefined) refusedWithRetryAfter++;
          else otherAnswers++;
        },
      },
    ],
  });
  // autocannon counts a timeout as an error too.
  const sent = executed + refusedWithRetryAfter + otherAnswers + result.errors;
  return {
    sent,
    executed,
    refusedWithRetryAfter,
    otherAnswers,
    statuses,
    errors: result.errors,
    timeouts: result.timeouts,
    everyRequestAnswered: otherAnswers === 0 && result.errors === 0 && result.timeouts === 0,
    requestsPerSecond: result.requests.average,
    p99Ms: result.latency.p99,
  };
}
