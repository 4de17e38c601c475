/**
 * A real HTTP "payment provider" for step tests: it records charges and refunds per
 * Idempotency-Key (a second call with a key returns the first result, as Stripe does) and can be
 * told what to do with the next requests: answer, fail before doing anything, do the work and then
 * hang (the client times out, but the charge happened), or do the work slowly.
 *
 * POST /charges  { amountCents }  → 200 { id, amountCents }
 * POST /refunds  { chargeId }     → 200 { id, chargeId }
 * No vitest imports: child processes load the client half of this module.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type ProviderBehaviour = 'ok' | 'fail' | 'process-then-hang' | 'slow';

export interface ProviderCall {
  readonly path: string;
  readonly idempotencyKey: string | undefined;
  readonly body: unknown;
}

export interface PaymentProvider {
  readonly url: string;
  /** Every request received, in order. */
  readonly calls: ProviderCall[];
  /** Charges made, by idempotency key (a repeated key does not make a second one). */
  readonly charges: Map<string, { id: string; amountCents: number }>;
  readonly refunds: Map<string, { id: string; chargeId: string }>;
  /** What the next requests to `path` get, in order; afterwards 'ok'. */
  plan(path: '/charges' | '/refunds', ...behaviours: ProviderBehaviour[]): void;
  /** Resolves when a charge (or refund) has been made `count` times in total. */
  whenProcessed(path: '/charges' | '/refunds', count?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startPaymentProvider(): Promise<PaymentProvider> {
  const calls: ProviderCall[] = [];
  const charges = new Map<string, { id: string; amountCents: number }>();
  const refunds = new Map<string, { id: string; chargeId: string }>();
  const plans = new Map<string, ProviderBehaviour[]>();
  const waiters: { path: string; count: number; resolve: () => void }[] = [];
  const hanging = new Set<ServerResponse>();
  let sequence = 0;

  const notify = (): void => {
    for (const waiter of [...waiters]) {
      const made = waiter.path === '/charges' ? charges.size : refunds.size;
      if (made >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body =
      chunks.length === 0 ? {} : (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>);
    const path = req.url ?? '/';
    const header = req.headers['idempotency-key'];
    const idempotencyKey = Array.isArray(header) ? header[0] : header;
    calls.push({ path, idempotencyKey, body });
    const behaviour = plans.get(path)?.shift() ?? 'ok';
    if (behaviour === 'fail') {
      res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"unavailable"}');
      return;
    }
    const key = idempotencyKey ?? `no-key-${++sequence}`;
    let result: object;
    if (path === '/charges') {
      const existing = charges.get(key);
      result = existing ?? { id: `ch_${++sequence}`, amountCents: Number(body.amountCents ?? 0) };
      if (existing === undefined) charges.set(key, result as { id: string; amountCents: number });
    } else if (path === '/refunds') {
      const existing = refunds.get(key);
      result = existing ?? { id: `re_${++sequence}`, chargeId: String(body.chargeId) };
      if (existing === undefined) refunds.set(key, result as { id: string; chargeId: string });
    } else {
      res.writeHead(404).end();
      return;
    }
    notify();
    if (behaviour === 'process-then-hang') {
      // The work is done; the answer never comes (until close): the client's timeout fires.
      hanging.add(res);
      return;
    }
    if (behaviour === 'slow') await new Promise((resolve) => setTimeout(resolve, 500));
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(result));
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => res.writeHead(500).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    charges,
    refunds,
    plan(path, ...behaviours) {
      plans.set(path, [...(plans.get(path) ?? []), ...behaviours]);
    },
    whenProcessed(path, count = 1) {
      return new Promise((resolve) => {
        waiters.push({ path, count, resolve });
        notify();
      });
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The client a handler uses: POSTs JSON with the step's idempotency key, throws on a non-2xx answer. */
export async function callProvider<T>(
  baseUrl: string,
  path: '/charges' | '/refunds',
  body: object,
  { idempotencyKey, signal }: { idempotencyKey: string; signal?: AbortSignal },
): Promise<T> {
  const response = await fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
    body: JSON.stringify(body),
    ...(signal === undefined ? {} : { signal }),
  });
  if (!response.ok) throw new Error(`provider answered ${response.status} to ${path}`);
  return (await response.json()) as T;
}
