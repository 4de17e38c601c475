import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

export async function pay(body: { accountId: string; amountCents: number }): Promise<Response> {
  const key = randomUUID(); // one operation, one key: reused by every retry below
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      const response = await fetch('https://api.example.com/v1/payments', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-api-key': 'sk_live_…' },
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
