/**
 * `oncely/console`: the operator console, to mount in an existing Express or Fastify app (or to run
 * with `oncely console`). See docs/console.md.
 *
 * Neither framework is loaded by this module: each adapter only speaks its framework's types.
 */
export { createConsole, type ConsoleRequest, type ConsoleResponse, type OperatorConsole } from './app.js';
export { consoleMiddleware, type ConsoleMiddleware } from './express.js';
export { consolePlugin, type ConsolePluginOptions } from './fastify.js';
export type { ConsoleOptions } from './options.js';
