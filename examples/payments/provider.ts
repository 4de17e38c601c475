/**
 * A small but real HTTP "payment provider" for the demo (node:http): `POST /charges` and
 * `POST /refunds`, each deduplicated by its `Idempotency-Key` header the way Stripe or Adyen do —
 * a repeated key gets the first answer back and nothing is charged (or refunded) again.
 *
 * It keeps its records in memory so the demo can check them: one charge per key, and (the
 * stronger check) at most one charge per payment, whatever keys the caller used.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ProviderCharge {
  readonly id: string;
  readonly paymentId: string;
  readonly accountId: string;
  readonly amountCents: number;
  /** The provider holds the charge for review: the ledger refuses it after the charge was made. */
  readonly review: boolean;
  /** Requests that carried this charge's key (1 = never retried). */
  calls: number;
}

export interface ProviderRefund {
  readonly id: string;
  readonly chargeId: string;
  calls: number;
}

export interface PaymentProvider {
  readonly url: string;
  /** Charges by idempotency key. */
  readonly charges: Map<string, ProviderCharge>;
  /** Refunds by idempotency key. */
  readonly refunds: Map<string, ProviderRefund>;
  close(): Promise<void>;
}

/** Payments whose account id ends with this suffix are held for review by the provider. */
export const REVIEW_SUFFIX = '-review';

async function readJson(request: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
}

export async function startPaymentProvider(): Promise<PaymentProvider> {
  const charges = new Map<string, ProviderCharge>();
  const refunds = new Map<string, ProviderRefund>();
  let sequence = 0;
  const server = createServer((request, response) => {
    const reply = (status: number, body: object): void => {
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    const key = request.headers['idempotency-key'];
    if (request.method !== 'POST' || typeof key !== 'string' || key === '') {
      reply(400, { error: 'POST with an Idempotency-Key header' });
      return;
    }
    readJson(request).then(
      (body) => {
        if (request.url === '/charges') {
          const known = charges.get(key);
          if (known !== undefined) {
            // A retry of a charge already made: the first answer again, no second charge.
            known.calls++;
            reply(200, known);
            return;
          }
          const accountId = String(body.accountId);
          const charge: ProviderCharge = {
            id: `ch_${++sequence}`,
            paymentId: String(body.paymentId),
            accountId,
            amountCents: Number(body.amountCents),
            review: accountId.endsWith(REVIEW_SUFFIX),
            calls: 1,
          };
          charges.set(key, charge);
          reply(201, charge);
        } else if (request.url === '/refunds') {
          const known = refunds.get(key);
          if (known !== undefined) {
            known.calls++;
            reply(200, known);
            return;
          }
          const refund: ProviderRefund = { id: `re_${++sequence}`, chargeId: String(body.chargeId), calls: 1 };
          refunds.set(key, refund);
          reply(201, refund);
        } else {
          reply(404, { error: 'not found' });
        }
      },
      () => reply(400, { error: 'invalid JSON' }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    charges,
    refunds,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
