/**
 * Setup file of the integration project: a test file that leaves a connection to the test broker
 * or the test PostgreSQL open (a consumer not stopped, a pool not ended, a client or producer not
 * disconnected) fails, naming where the connection was opened. useTestEnvironment() checks as
 * well, before it drops the file's database (which would close leaked connections silently).
 */
import { afterAll } from 'vitest';

import { assertNoLeakedConnections, trackConnections } from './connection-leaks.js';

trackConnections();

// Registered before the test file's own hooks, so it runs after them: after hooks run in reverse
// order (vitest's default `sequence.hooks: 'stack'`), and the file's afterAll closes what it opened.
afterAll(() => assertNoLeakedConnections());
