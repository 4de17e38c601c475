import { createServer } from 'node:http';

// A stand-in for your payment provider, so the service runs on a laptop. Like Stripe, it makes
// one charge per Idempotency-Key, however often the key is sent.
const charges = new Map<string, { id: string; amountCents: number }>();

createServer((request, response) => {
  let body = '';
  request.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
  request.on('end', () => {
    const key = request.headers['idempotency-key'];
    if (request.method === 'GET') return void response.end(JSON.stringify([...charges.values()]));
    if (request.url !== '/charges' || typeof key !== 'string') return void response.writeHead(400).end();
    const { amountCents } = JSON.parse(body) as { amountCents: number };
    const charge = charges.get(key) ?? { id: `ch_${charges.size + 1}`, amountCents };
    charges.set(key, charge);
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(charge));
  });
}).listen(Number(process.env.PROVIDER_PORT ?? 4000), '127.0.0.1');
