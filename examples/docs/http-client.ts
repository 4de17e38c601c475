import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

const api = process.env.API_URL ?? 'https://api.example.com';
const apiKey = process.env.API_KEY ?? 'sk_test_123';

export async function pay(body: { accountId: string; amountCents: number }): Promise<Response> {
  const key = randomUUID(); // one operation, one key: reused by every retry below
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      const response = await fetch(`${api}/v1/payments`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-api-key': apiKey },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(5_000),
      });
      if (response.status !== 409 && response.status < 500) return response; // first answer or its replay
      await sleep(Number(response.headers.get('retry-after') ?? 1) * 1000);
    } catch (error) {
      // Timed out or connection lost: the server may have run it. Retrying with the key is safe.
      if (attempt === 5) throw error;
      await sleep(2 ** attempt * 100);
    }
  }
  throw new Error('no answer after 5 attempts: retry later with the same key');
}
