/**
 * Finds connections to the test broker and the test PostgreSQL that a test file left open: a
 * consumer never stopped, a pool never ended, a client or producer never disconnected. Such a
 * leak is a bug in the test (or in oncely's stop()), and on a shared broker it slows or breaks the
 * files that run after it, far from its cause.
 *
 * Every TCP connection pg and kafkajs make goes through `net.Socket.prototype.connect`, so that
 * one method is wrapped (in the test process only) to remember each socket with the port it
 * dials until the socket closes. This needs nothing from oncely's own code, sees sockets that
 * were `unref()`ed (which `process.getActiveResourcesInfo()` would not), and costs one Set
 * insertion per connection.
 */
import net from 'node:net';

import { expect, inject } from 'vitest';

export interface OpenConnection {
  readonly host: string;
  readonly port: number;
  /** The local port, to tell connections apart in the report. */
  readonly localPort: number | undefined;
  /** Where the connection was opened: the stack names the pool, client or consumer that owns it. */
  readonly openedAt: string;
  /** The test that was running then (kafkajs connects from timers, whose stacks name no test). */
  readonly test: string | undefined;
}

interface Tracked {
  readonly socket: net.Socket;
  readonly host: string;
  readonly port: number;
  readonly openedAt: string;
  readonly test: string | undefined;
  /** Reported once: the file's teardown and the setup file's final check may both see it. */
  reported: boolean;
}

const REGISTRY = Symbol.for('oncely.test.openConnections');
type WithRegistry = typeof globalThis & { [REGISTRY]?: Set<Tracked> };

/** The host and port a `socket.connect(...)` call dials, in each of its call forms. */
function targetOf(args: readonly unknown[]): { host: string; port: number } | undefined {
  // net.connect() passes its already-normalized arguments as one array: [options, callback].
  const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
  if (typeof first === 'object' && first !== null) {
    const { port, host } = first as { port?: unknown; host?: unknown };
    if (port === undefined) return undefined; // a Unix socket path
    return { port: Number(port), host: typeof host === 'string' ? host : 'localhost' };
  }
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    return { port: Number(first), host: typeof args[1] === 'string' ? args[1] : 'localhost' };
  }
  return undefined;
}

/**
 * Starts remembering every TCP connection this process opens. Idempotent: a second call (a setup
 * file evaluated again in the same process) reuses the first wrapper and its registry.
 */
export function trackConnections(): void {
  const global = globalThis as WithRegistry;
  if (global[REGISTRY] !== undefined) return;
  const open = new Set<Tracked>();
  global[REGISTRY] = open;
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called below with the socket as `this`
  const connect = net.Socket.prototype.connect;
  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]): net.Socket {
    const target = targetOf(args);
    if (target !== undefined && !this.destroyed) {
      // Deep enough to reach the test's own frame through pg's or kafkajs' connection code.
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 40;
      const openedAt = new Error().stack ?? '';
      Error.stackTraceLimit = limit;
      const test = expect.getState().currentTestName;
      const entry: Tracked = { socket: this, ...target, openedAt, test, reported: false };
      open.add(entry);
      this.once('close', () => open.delete(entry));
    }
    return (connect as (...a: unknown[]) => net.Socket).apply(this, args);
  };
}

/** Connections still open to one of `ports` (sockets that are destroyed but not yet closed count as closed). */
export function openConnections(ports: ReadonlySet<number>): OpenConnection[] {
  return openEntries(ports).map((e) => ({
    host: e.host,
    port: e.port,
    localPort: e.socket.localPort,
    openedAt: whoseConnection(e.openedAt),
    test: e.test,
  }));
}

/**
 * The frames of a connect stack that say whose connection it is: the project's own (a test, a
 * fixture, oncely's source) first; the library's (pg, kafkajs) only when there are none, as when
 * kafkajs connects from a timer.
 */
function whoseConnection(stack: string): string {
  const frames = stack
    .split('\n')
    .slice(1)
    .map((line) => line.trim())
    .filter((line) => !line.includes('node:') && !line.includes('connection-leaks.ts'));
  const own = frames.filter((line) => !line.includes('node_modules'));
  return (own.length > 0 ? own.slice(0, 4) : frames.slice(0, 6)).join('\n      ');
}

function openEntries(ports: ReadonlySet<number>): Tracked[] {
  const open = (globalThis as WithRegistry)[REGISTRY];
  if (open === undefined) throw new Error('trackConnections() was not called in this process');
  return [...open].filter((e) => ports.has(e.port) && !e.socket.destroyed && !e.reported);
}

/**
 * Waits up to `graceMs` for the connections to `ports` to close (a kafkajs disconnect or a pg
 * end may resolve a moment before its socket's close event), then returns those still open.
 */
export async function leakedConnections(ports: ReadonlySet<number>, graceMs = 3_000): Promise<OpenConnection[]> {
  const deadline = Date.now() + graceMs;
  for (;;) {
    const open = openConnections(ports);
    if (open.length === 0 || Date.now() >= deadline) return open;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A report that says what leaked and where it was opened. */
export function describeLeaks(leaks: readonly OpenConnection[], names: ReadonlyMap<number, string>): string {
  const lines = leaks.map(
    (l) =>
      `  ${names.get(l.port) ?? 'port'} ${l.host}:${l.port} (local port ${l.localPort ?? '?'}), opened ` +
      `${l.test === undefined ? 'outside any test' : `in "${l.test}"`} at\n      ${l.openedAt}`,
  );
  return (
    `${leaks.length} connection(s) to the test services still open after this file: stop every consumer, ` +
    `end every pg Pool and Client, and disconnect every kafkajs producer, admin and consumer it started.\n` +
    lines.join('\n')
  );
}

/** The ports of this run's broker(s) and PostgreSQL server, named for the report. */
export function testServicePorts(): Map<number, string> {
  const names = new Map<number, string>();
  for (const broker of inject('kafkaBrokers')) names.set(Number(broker.slice(broker.lastIndexOf(':') + 1)), 'Kafka');
  names.set(Number(new URL(inject('databaseUrl')).port || 5432), 'PostgreSQL');
  return names;
}

/**
 * Fails when connections to the test services are still open (after a grace period). Run it once
 * everything the file opened should be closed, and before its database is dropped: `DROP DATABASE
 * … WITH (FORCE)` would close a leaked pool's connections from the server side and hide the leak.
 */
export async function assertNoLeakedConnections(graceMs?: number): Promise<void> {
  const names = testServicePorts();
  const ports = new Set(names.keys());
  const leaks = await leakedConnections(ports, graceMs);
  if (leaks.length === 0) return;
  for (const entry of openEntries(ports)) entry.reported = true;
  throw new Error(describeLeaks(leaks, names));
}
