/**
 * The refusals a framework makes before an idempotent handler runs — a body that does not parse, is
 * too large, or has a type nobody parses — answered as RFC 9457 problems like oncely's own (issue
 * 20 case 5), so a client of an idempotent route reads every refusal the same way. Shared by
 * `oncely/express` (body-parser's errors) and `oncely/fastify` (its content-type parser's).
 *
 * Only refusals of the request are mapped: an error a handler throws is the application's and
 * keeps going to the framework's own error handling.
 */
import type { Socket } from 'node:net';

import { type IdempotencyProblem, problemResponse } from './problem.js';

/** What a refusal becomes: the problem and its detail. */
export interface FrameworkRefusal {
  readonly problem: IdempotencyProblem;
  readonly detail: string;
}

/** body-parser's (Express) error types that refuse the request, not the handler's work. */
const BODY_PARSER_TYPES = new Set([
  'entity.parse.failed',
  'entity.too.large',
  'entity.verify.failed',
  'charset.unsupported',
  'encoding.unsupported',
  'request.size.invalid',
  'request.aborted',
  'parameters.too.many',
]);

function messageOf(error: object, fallback: string): string {
  const { message } = error as { message?: unknown };
  return typeof message === 'string' && message.length > 0 ? message : fallback;
}

function statusOf(error: object): number | undefined {
  const { status, statusCode } = error as { status?: unknown; statusCode?: unknown };
  const value = typeof statusCode === 'number' ? statusCode : typeof status === 'number' ? status : undefined;
  return value !== undefined && value >= 400 && value < 500 ? value : undefined;
}

function refusal(status: number, json: boolean, message: string): FrameworkRefusal {
  if (status === 413) {
    return {
      problem: 'request_body_too_large',
      detail: `The request body is larger than this route accepts (${message}).`,
    };
  }
  if (status === 415) {
    return { problem: 'request_body_unsupported', detail: `The request body cannot be read: ${message}.` };
  }
  if (json) {
    return {
      problem: 'request_body_invalid_json',
      detail: 'The request declares a JSON content type but its body is not valid JSON (an empty body is not JSON).',
    };
  }
  return { problem: 'request_invalid', detail: `The request was refused before it ran: ${message}.` };
}

/** A body-parser error (Express) as a problem; undefined for any other error. */
export function bodyParserRefusal(error: unknown): FrameworkRefusal | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const type = (error as { type?: unknown }).type;
  if (typeof type !== 'string' || !BODY_PARSER_TYPES.has(type)) return undefined;
  const status = statusOf(error) ?? 400;
  return refusal(status, type === 'entity.parse.failed', messageOf(error, type));
}

/** An error of Fastify's content-type parsing as a problem; undefined for any other error. */
export function fastifyRefusal(error: unknown): FrameworkRefusal | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const code = (error as { code?: unknown }).code;
  const status = statusOf(error);
  const message = messageOf(error, typeof code === 'string' ? code : 'refused');
  if (typeof code === 'string' && code.startsWith('FST_ERR_CTP_')) {
    const json = code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || code === 'FST_ERR_CTP_INVALID_JSON_BODY';
    return refusal(status ?? 400, json, message);
  }
  // Fastify's JSON parser rejects malformed text with the SyntaxError of JSON.parse, status 400.
  if (error instanceof SyntaxError && status === 400) return refusal(400, true, message);
  return undefined;
}

/**
 * For a Node `clientError` (a request line, header or chunk encoding that does not parse, before any
 * route is known): writes a 400 problem and closes the socket. `server.on('clientError', …)`, or
 * Fastify's `clientErrorHandler` option.
 */
export function writeClientErrorProblem(error: Error, socket: Socket, typeBase = 'urn:oncely:problem:'): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const code = (error as { code?: unknown }).code;
  const timedOut = code === 'ERR_HTTP_REQUEST_TIMEOUT';
  const body = JSON.stringify({
    type: `${typeBase}request_invalid`,
    title: 'Request refused',
    status: timedOut ? 408 : 400,
    detail: timedOut ? 'The request did not arrive in time.' : 'The request is not valid HTTP.',
  });
  socket.end(
    `HTTP/1.1 ${timedOut ? '408 Request Timeout' : '400 Bad Request'}\r\n` +
      'content-type: application/problem+json\r\ncache-control: no-store\r\nconnection: close\r\n' +
      `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** The problem response of a refusal. */
export function refusalResponse(refused: FrameworkRefusal, typeBase: string): Response {
  return problemResponse(refused.problem, refused.detail, typeBase);
}
