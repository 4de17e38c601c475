/**
 * G7 and request bodies (issue 20 case 5): every refusal of a body on an idempotent route — by
 * oncely, by Express's body-parser, by Fastify's content-type parser, by Node's HTTP parser — is an
 * RFC 9457 problem; the fingerprint is of the bytes received, never of a parser's stand-in; an
 * oversized body is refused with 413 before its upload finishes. Real servers, real PostgreSQL.
 */
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';

import { sql } from 'drizzle-orm';
import express from 'express';
import Fastify from 'fastify';
import { captureRawBody, idempotent as expressIdempotent, problemErrors } from 'oncely/express';
import { idempotent as fastifyIdempotent } from 'oncely/fastify';
import { afterEach, describe, expect, it } from 'vitest';

import { type IdempotentContext, writeClientErrorProblem } from '../../../src/index.js';
import { useHttpDatabase } from './support.js';

const database = useHttpDatabase();

let executions = 0;
const seen: string[] = [];

/** Records the body it got and stores a payment when the body is the JSON it expects. */
async function handler(request: Request, ctx: IdempotentContext): Promise<Response> {
  executions++;
  const text = await request.text();
  seen.push(text);
  const body = (request.headers.get('content-type') ?? '').includes('json')
    ? (JSON.parse(text) as { amountCents?: unknown })
    : { amountCents: text.length };
  if (typeof body.amountCents !== 'number') throw new Error('amountCents is required');
  await ctx.tx.execute(
    sql`INSERT INTO http_payments (idem_key, account_id, amount_cents, status)
        VALUES (${ctx.key ?? null}, 'acct-bodies', ${body.amountCents}, 'captured')`,
  );
  return Response.json({ amountCents: body.amountCents, got: text }, { status: 201 });
}

interface Running {
  readonly url: string;
  close(): Promise<void>;
}

const servers: Running[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  executions = 0;
  seen.length = 0;
});

const options = { scope: 'bodies', maxBodyBytes: 1024 } as const;

/** Express as many apps run it: express.json() in front of every route, oncely's problems after. */
async function startExpress(setup: (app: express.Express) => void): Promise<Running> {
  const app = express();
  setup(app);
  app.post('/v1/payments', expressIdempotent({ ...options, db: database.db }, handler));
  app.use(problemErrors());
  const server = app.listen(0, '127.0.0.1');
  server.on('clientError', (error, socket) => writeClientErrorProblem(error, socket as Socket));
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const running = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  servers.push(running);
  return running;
}

async function startFastify(): Promise<Running> {
  const app = Fastify({
    logger: false,
    clientErrorHandler: (error, socket) => writeClientErrorProblem(error, socket),
  });
  app.post('/v1/payments', fastifyIdempotent({ ...options, db: database.db }, handler));
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const running = { url, close: () => app.close() };
  servers.push(running);
  return running;
}

async function post(
  server: Running,
  key: string,
  body: string,
  contentType: string,
): Promise<{ status: number; type: string | null; json: Record<string, unknown> | undefined; text: string }> {
  const response = await fetch(`${server.url}/v1/payments`, {
    method: 'POST',
    headers: { 'content-type': contentType, 'idempotency-key': key },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  const type = response.headers.get('content-type');
  const json = type?.includes('json') === true ? (JSON.parse(text) as Record<string, unknown>) : undefined;
  return { status: response.status, type, json, text };
}

function expectProblem(answer: Awaited<ReturnType<typeof post>>, status: number, name: string): void {
  expect(answer.type, answer.text).toBe('application/problem+json');
  expect(answer.status).toBe(status);
  expect(answer.json).toMatchObject({ type: `urn:oncely:problem:${name}`, status });
}

async function storedKeys(key: string): Promise<number> {
  const { rows } = await database.pool.query<{ n: number }>(
    // A completed key is a stored response; a first use leaves an in-progress row before its handler runs.
    "SELECT count(*)::int AS n FROM oncely.idempotency_keys WHERE key = $1 AND status = 'completed'",
    [key],
  );
  return rows[0]?.n ?? 0;
}

/**
 * Sends headers declaring `declared` bytes and only a first chunk of them; resolves with the
 * answer's status, content type and whether the upload was still unfinished when it came.
 */
function partialUpload(url: string, declared: number): Promise<{ status: number; type: string; unfinished: boolean }> {
  return new Promise((resolve, reject) => {
    let finished = false;
    const req = httpRequest(
      `${url}/v1/payments`,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': String(declared),
          'idempotency-key': `k-partial-${declared}`,
        },
      },
      (res) => {
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), unfinished: !finished });
        res.resume();
        req.destroy();
      },
    );
    req.on('error', (error) => {
      if (!finished) reject(error);
    });
    req.write(Buffer.alloc(512, 1));
    // The rest would follow in 10 s; the answer must come long before.
    setTimeout(() => {
      finished = true;
      req.destroy();
      reject(new Error('no answer before the upload would have finished'));
    }, 10_000).unref();
  });
}

describe('request bodies on Express', () => {
  it('G7: express.json() with an empty JSON body answers 400 request_body_invalid_json as a problem', async () => {
    const server = await startExpress((app) => app.use(express.json()));
    const answer = await post(server, 'k-empty-express', '', 'application/json');
    expectProblem(answer, 400, 'request_body_invalid_json');
    expect(executions).toBe(0);
    expect(await storedKeys('k-empty-express')).toBe(0);
  });

  it('G7: express.json() with malformed JSON or a body over its limit answers a problem (400, 413)', async () => {
    const server = await startExpress((app) => app.use(express.json({ limit: '64b' })));
    expectProblem(
      await post(server, 'k-bad-express', '{"amountCents":', 'application/json'),
      400,
      'request_body_invalid_json',
    );
    expectProblem(
      await post(server, 'k-big-express', JSON.stringify({ amountCents: 1, pad: 'x'.repeat(200) }), 'application/json'),
      413,
      'request_body_too_large',
    );
    expect(executions).toBe(0);
  });

  it('G7: the fingerprint is of the bytes received, never of a parser’s stand-in {}', async () => {
    // body-parser 1.x (Express 4) sets req.body = {} on every request, also when it skips the type.
    const server = await startExpress((app) => {
      app.use(express.json());
      app.use((req, _res, next) => {
        (req as { body?: unknown }).body ??= {};
        next();
      });
    });
    const first = await post(server, 'k-text', 'first text body', 'text/plain');
    expect(first.status).toBe(201);
    expect(first.json).toMatchObject({ got: 'first text body' });
    // Another body with the key is another request (422), not a replay of "{}".
    expectProblem(await post(server, 'k-text', 'another text body', 'text/plain'), 422, 'idempotency_key_reused');
    expect(seen).toEqual(['first text body']);
  });

  it('G7: with captureRawBody the bytes express.json() read are fingerprinted', async () => {
    const server = await startExpress((app) => app.use(express.json({ verify: captureRawBody })));
    expect((await post(server, 'k-raw', '{"amountCents":5}', 'application/json')).status).toBe(201);
    const replay = await post(server, 'k-raw', '{ "amountCents": 5 }', 'application/json');
    expect(replay.status).toBe(201);
    expectProblem(await post(server, 'k-raw', '{"amountCents":6}', 'application/json'), 422, 'idempotency_key_reused');
    expect(executions).toBe(1);
  });

  it('G7: without a body parser, a declared body over maxBodyBytes is refused 413 before the upload finishes', async () => {
    const server = await startExpress(() => undefined);
    const answer = await partialUpload(server.url, 10 * 1024 * 1024);
    expect(answer).toEqual({ status: 413, type: 'application/problem+json', unfinished: true });
    expect(executions).toBe(0);
  });

  it('G7: a request Node cannot parse is answered with a 400 problem', async () => {
    const server = await startExpress(() => undefined);
    const raw = await rawExchange(server.url, 'POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n');
    expect(raw).toMatch(/^HTTP\/1\.1 400/);
    expect(raw).toContain('application/problem+json');
    expect(raw).toContain('urn:oncely:problem:request_invalid');
  });
});

describe('request bodies on Fastify', () => {
  it('G7: Fastify’s own refusals are problems: empty and malformed JSON 400, an unparsed type 415', async () => {
    const server = await startFastify();
    expectProblem(await post(server, 'k-empty-fastify', '', 'application/json'), 400, 'request_body_invalid_json');
    expectProblem(
      await post(server, 'k-bad-fastify', '{"amountCents":', 'application/json'),
      400,
      'request_body_invalid_json',
    );
    expectProblem(await post(server, 'k-type-fastify', 'a,b', 'text/csv'), 415, 'request_body_unsupported');
    expect(executions).toBe(0);
  });

  it('G7: on Fastify a body over maxBodyBytes is refused 413 as a problem before the upload finishes', async () => {
    const server = await startFastify();
    expectProblem(
      await post(
        server,
        'k-big-fastify',
        JSON.stringify({ amountCents: 1, pad: 'x'.repeat(2000) }),
        'application/json',
      ),
      413,
      'request_body_too_large',
    );
    const answer = await partialUpload(server.url, 10 * 1024 * 1024);
    expect(answer).toEqual({ status: 413, type: 'application/problem+json', unfinished: true });
    expect(executions).toBe(0);
  });

  it('G7: a handler’s own error on Fastify still reaches the app’s error handler', async () => {
    const server = await startFastify();
    const answer = await post(server, 'k-throw-fastify', '{"other":1}', 'application/json');
    expect(answer.status).toBe(500);
    expect(executions).toBe(1);
    expect(await storedKeys('k-throw-fastify')).toBe(0);
  });
});

/** Writes raw bytes to the server and returns what comes back until it closes. */
function rawExchange(url: string, text: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(text));
    let received = '';
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('utf8');
    });
    socket.on('end', () => resolve(received));
    socket.on('close', () => resolve(received));
    socket.on('error', reject);
    socket.setTimeout(5_000, () => {
      socket.destroy();
      resolve(received);
    });
  });
}
