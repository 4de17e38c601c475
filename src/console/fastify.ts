/**
 * The console as a Fastify plugin:
 *
 * ```ts
 * await app.register(consolePlugin, { prefix: '/ops/oncely', db, kafka, identify: (request) => request.user?.email });
 * ```
 * The plugin is encapsulated: its form parser and routes stay inside its prefix.
 */
import type { FastifyInstance, FastifyPluginOptions, FastifyReply, FastifyRequest } from 'fastify';

import { createConsole } from './app.js';
import { formFrom, MAX_FORM_BYTES } from './form.js';
import type { ConsoleOptions } from './options.js';

export type ConsolePluginOptions = ConsoleOptions<FastifyRequest> & FastifyPluginOptions;

export function consolePlugin(instance: FastifyInstance, options: ConsolePluginOptions): Promise<void> {
  const core = createConsole<FastifyRequest>(options);
  instance.addHook('onClose', async () => core.close());
  const form = 'application/x-www-form-urlencoded';
  // The host app may parse forms already (@fastify/formbody): its parser is used then.
  if (!instance.hasContentTypeParser(form)) {
    instance.addContentTypeParser(form, { parseAs: 'string', bodyLimit: MAX_FORM_BYTES }, (_request, body, done) => {
      done(null, new URLSearchParams(String(body)));
    });
  }
  const base = instance.prefix;
  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const url = new URL(request.url, 'http://console.invalid');
    const path = url.pathname.startsWith(base) ? url.pathname.slice(base.length) : url.pathname;
    const response = await core.handle({
      method: request.method.toUpperCase(),
      path: path === '' ? '/' : path,
      query: url.searchParams,
      headers: request.headers,
      body: request.method === 'POST' ? formFrom(request.body) : undefined,
      base,
      remoteAddress: request.ip,
      secure: request.protocol === 'https',
      native: request,
    });
    return reply.code(response.status).headers(response.headers).send(response.body);
  };
  instance.route({ method: ['GET', 'POST'], url: '/', handler });
  instance.route({ method: ['GET', 'POST'], url: '/*', handler });
  return Promise.resolve();
}
