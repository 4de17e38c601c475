/**
 * The operator console's core: framework-neutral. An adapter (`./express.ts`, `./fastify.ts`) turns
 * its framework's request into a {@link ConsoleRequest} and writes the {@link ConsoleResponse} back.
 *
 * Every screen reads through the operations the CLI uses (status, dead-letter admin, replay,
 * outbox, HTTP key store); every write is checked in this order: signed in → write access → same
 * origin → CSRF token, then recorded in `oncely.console_audit` before it runs.
 */
import { drizzle } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import { pino, type Logger } from 'pino';

import { isOncelyError } from '../errors.js';
import { findKey } from '../http/store.js';
import { type OncelyDatabase, resolvePool } from '../inbox/database.js';
import { DEAD_LETTER_REASONS, type DeadLetterReason } from '../inbox/dead-letters.js';
import { selectDeadLetter, type DeadLetter, type DeadLetterStatus } from '../inbox/dead-letter-store.js';
import { discardParked, listOutbox, outboxCounts, readOutboxBacklog, retryParked } from '../outbox/store.js';
import { discardDeadLetter, listDeadLetters, type ResolveResult, retryDeadLetter } from '../replay/dead-letters.js';
import type { KafkaAdmin } from '../kafka/client.js';
import { failureLine } from '../operator/failure.js';
import { parseDuration, parsePartitions } from '../operator/input.js';
import { planReplay, type PlanReplayOptions } from '../replay/plan.js';
import { runReplay } from '../replay/run.js';
import { replayStatus } from '../replay/status.js';
import { CONSOLE_CSS, CONSOLE_JS } from './assets.js';
import { type Html, html } from './html.js';
import { checkConsoleOptions, type ConsoleOptions } from './options.js';
import { readStatusReport } from './status.js';
import type { AnyHandlerDefinition } from '../pipeline/handler.js';
import {
  constantTimeEqual,
  cookie,
  CSRF_COOKIE,
  csrfToken,
  parseCookies,
  randomToken,
  SESSION_COOKIE,
  SESSION_MS,
  signingKey,
  signSession,
  verifySession,
} from './security.js';
import { type Actor, finishAudit, knownGroups, processedPerMinute, readAudit, startAudit } from './store.js';
import * as views from './views.js';

/** A request as the core sees it; adapters build it from their framework's request. */
export interface ConsoleRequest<Req = unknown> {
  readonly method: string;
  /** The path below the console's mount point, starting with `/`. */
  readonly path: string;
  readonly query: URLSearchParams;
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** A POST's url-encoded form. */
  readonly body: URLSearchParams | undefined;
  /** Where the console is mounted: '' at the root, e.g. '/ops/oncely'. */
  readonly base: string;
  readonly remoteAddress: string | undefined;
  /** Whether the request came over HTTPS (the session cookie is then Secure). */
  readonly secure: boolean;
  /** The framework's own request, for `identify`. */
  readonly native: Req;
}

export interface ConsoleResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: string;
}

export interface OperatorConsole<Req = unknown> {
  handle(request: ConsoleRequest<Req>): Promise<ConsoleResponse>;
  /** Closes the console's Kafka admin and the pool it opened (not a pool or client it was given). */
  close(): Promise<void>;
}

/** The most form fields (ids) one write may name: a bounded amount of work per request. */
const MAX_IDS = 500;
const MAX_TEXT = 255;
const CHART_MINUTES = 30;
const LAG_SAMPLES = 60;

/** A refusal with its HTTP status and one line for the operator. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface Page {
  readonly title: string;
  readonly main: Html;
  readonly status?: number;
  readonly live?: boolean;
  /** The URL a reload should show (after a POST: the list the result belongs to). */
  readonly url?: string;
  readonly flashes?: readonly views.Flash[];
}

interface Caller {
  readonly actor: Actor;
  /** The nonce CSRF tokens are bound to; undefined for bearer-token requests (not forgeable cross-site). */
  readonly nonce: string | undefined;
  readonly setCookies: string[];
}

const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-store',
};

/**
 * Builds the console. Read-only unless `write`; payload values hidden unless `payloads`; locked by
 * `token` or by the host app's `identify`.
 */
export function createConsole<Req = unknown>(options: ConsoleOptions<Req>): OperatorConsole<Req> {
  return new ConsoleCore(options);
}

/**
 * One console: its pool, its Kafka admin (connected on first use), its signing key and the lag
 * samples its chart draws. Each request is authenticated, routed and rendered by the methods below.
 */
class ConsoleCore<Req> implements OperatorConsole<Req> {
  private readonly options: ConsoleOptions<Req>;
  private readonly pool: pg.Pool;
  private readonly owned: boolean;
  private readonly logger: Logger;
  private readonly key: Buffer;
  private readonly write: boolean;
  private readonly payloads: boolean;
  private readonly handlers: readonly AnyHandlerDefinition[];
  private readonly refreshSeconds: number;
  /** The consumer's drizzle database (with its schema) when given: a retried handler gets the ctx.tx it expects. */
  private readonly retryDb: OncelyDatabase;
  private readonly lagSamples = new Map<string, { at: number; values: number[] }>();
  private admin: Promise<KafkaAdmin> | undefined;

  constructor(options: ConsoleOptions<Req>) {
    checkConsoleOptions(options);
    this.options = options;
    ({ pool: this.pool, owned: this.owned } = resolvePool(options.db));
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.key = signingKey(options.token ?? options.secret ?? randomToken());
    this.write = options.write === true;
    this.payloads = options.payloads === true;
    this.handlers = options.handlers ?? [];
    this.refreshSeconds = options.refreshSeconds ?? 5;
    this.retryDb =
      typeof options.db === 'object' && '$client' in options.db ? options.db : (drizzle(this.pool) as OncelyDatabase);
  }

  async close(): Promise<void> {
    await this.dropAdmin();
    if (this.owned) await this.pool.end();
  }

  private kafkaAdmin(): Promise<KafkaAdmin> | undefined {
    if (this.options.kafka === undefined) return undefined;
    if (this.admin === undefined) {
      const created = this.options.kafka.admin();
      const connecting = created.connect().then(() => created);
      this.admin = connecting;
      // A failed connect is tried again on the next read, not remembered.
      connecting.catch(() => {
        if (this.admin === connecting) this.admin = undefined;
      });
    }
    return this.admin;
  }

  private async dropAdmin(): Promise<void> {
    const current = this.admin;
    this.admin = undefined;
    await current?.then((a) => a.disconnect()).catch(() => undefined);
  }

  // ------------------------------------------------------------ authentication

  private async authenticate(request: ConsoleRequest<Req>): Promise<Caller | ConsoleResponse> {
    const cookies = parseCookies(header(request, 'cookie'));
    const remoteAddress = request.remoteAddress;
    if (this.options.identify !== undefined) {
      const name = await this.options.identify(request.native);
      if (name === undefined || name === null || name === '') {
        return this.refusal(request, 401, "Not signed in: the application's sign-in refused this request.");
      }
      // The host signs people in; the console still needs a nonce of its own to bind CSRF tokens to.
      let nonce = cookies.get(CSRF_COOKIE);
      const setCookies: string[] = [];
      if (nonce === undefined || !/^[\w-]{20,100}$/.test(nonce)) {
        nonce = randomToken();
        setCookies.push(cookie(CSRF_COOKIE, nonce, { path: cookiePath(request), secure: request.secure }));
      }
      return { actor: { name, auth: 'host', remoteAddress }, nonce, setCookies };
    }
    const token = this.options.token ?? '';
    const authorization = header(request, 'authorization');
    if (authorization !== undefined) {
      const given = /^Bearer\s+(.+)$/i.exec(authorization)?.[1]?.trim() ?? '';
      if (!constantTimeEqual(given, token))
        return this.refusal(request, 401, "The bearer token is not this console's.");
      return { actor: { name: 'bearer token', auth: 'token', remoteAddress }, nonce: undefined, setCookies: [] };
    }
    if (request.method === 'POST' && request.path === '/login') {
      const given = request.body?.get('token') ?? '';
      if (!constantTimeEqual(given, token)) {
        this.logger.warn({ remoteAddress }, 'console sign-in refused: wrong token');
        return this.signIn(request, 401, "That token is not this console's.");
      }
      const name = (request.body?.get('name') ?? '').trim().slice(0, 100) || 'token holder';
      return this.signedIn(request, name, '/');
    }
    const fromQuery = request.query.get('token');
    if (fromQuery !== null && request.method === 'GET') {
      if (!constantTimeEqual(fromQuery, token)) return this.signIn(request, 401, "That token is not this console's.");
      // Out of the address bar (and the history) at once: the same page without the token.
      const rest = new URLSearchParams(request.query);
      rest.delete('token');
      const search = rest.toString();
      return this.signedIn(request, 'token holder', `${request.path}${search === '' ? '' : `?${search}`}`);
    }
    const session = verifySession(this.key, cookies.get(SESSION_COOKIE));
    if (session === undefined) {
      if (request.method === 'GET' && !isFragment(request)) return this.signIn(request, 401, undefined);
      return this.refusal(request, 401, 'Not signed in, or the session expired: sign in with the console token.');
    }
    return { actor: { name: session.name, auth: 'token', remoteAddress }, nonce: session.nonce, setCookies: [] };
  }

  private signedIn(request: ConsoleRequest<Req>, name: string, to: string): ConsoleResponse {
    const value = signSession(this.key, { nonce: randomToken(), name, issuedAt: Date.now() });
    return {
      status: 303,
      headers: {
        ...SECURITY_HEADERS,
        location: `${request.base}${to}`,
        'set-cookie': [
          cookie(SESSION_COOKIE, value, {
            path: cookiePath(request),
            secure: request.secure,
            maxAgeS: SESSION_MS / 1000,
          }),
        ],
      },
      body: '',
    };
  }

  private signIn(request: ConsoleRequest<Req>, status: number, problem: string | undefined): ConsoleResponse {
    return this.respond(request, undefined, {
      title: 'Sign in',
      main: views.signInScreen(request.base, problem),
      status,
    });
  }

  private refusal(request: ConsoleRequest<Req>, status: number, message: string): ConsoleResponse {
    return this.respond(request, undefined, {
      title: status === 401 ? 'Not signed in' : 'Refused',
      main: html`<h1>${status === 401 ? 'Not signed in' : 'Refused'}</h1>`,
      flashes: [{ kind: 'error', text: message }],
      status,
    });
  }

  // ------------------------------------------------------------ rendering

  private viewContext(request: ConsoleRequest<Req>, caller: Caller | undefined): views.ViewContext {
    return {
      base: request.base,
      write: this.write,
      payloads: this.payloads,
      csrf: caller?.nonce === undefined ? '' : csrfToken(this.key, caller.nonce),
      canRetry: this.handlers.length > 0,
      hasKafka: this.options.kafka !== undefined,
    };
  }

  private respond(request: ConsoleRequest<Req>, caller: Caller | undefined, page: Page): ConsoleResponse {
    const v = this.viewContext(request, caller);
    const url = page.url ?? `${request.base}${request.path}${searchWithoutToken(request.query)}`;
    const main = html`<main data-url="${url}" ${page.live === true ? html` data-live` : ''}>
      ${views.flashes(page.flashes ?? [])}${page.main}
    </main>`;
    const title = html`<title>${page.title} · oncely console</title>`;
    const headers: Record<string, string | string[]> = {
      ...SECURITY_HEADERS,
      'content-type': 'text/html; charset=utf-8',
      ...(caller !== undefined && caller.setCookies.length > 0 ? { 'set-cookie': caller.setCookies } : {}),
    };
    if (isFragment(request)) return { status: page.status ?? 200, headers, body: title.text + main.text };
    const nav: [string, string][] = [
      ['/', 'Groups'],
      ['/dead-letters', 'Dead letters'],
      ['/replay', 'Replay'],
      ['/outbox', 'Outbox'],
      ['/keys', 'HTTP keys'],
      ['/audit', 'Audit'],
    ];
    const body = html`<!doctype html>
      <html lang="en">
        <head>
          <meta charset="utf-8" />
          <meta name="viewport" content="width=device-width, initial-scale=1" />
          ${title}
          <link rel="stylesheet" href="${request.base}/assets/console.css" />
          <script src="${request.base}/assets/console.js" defer></script>
        </head>
        <body data-base="${request.base}" data-refresh="${this.refreshSeconds}">
          <header>
            <a class="brand" href="${request.base}/">oncely console</a>
            ${caller === undefined ? '' : html`<nav>${nav.map(([path, label]) => html`<a href="${request.base}${path}">${label}</a>`)}</nav>`}
            <span class="mode" data-mode
              >${this.write ? 'write access' : 'read-only'} · payloads
              ${this.payloads ? 'shown' : 'hidden'}${caller === undefined ? '' : ` · ${caller.actor.name}`}</span
            >
            <span id="live" aria-live="polite"></span>
            ${caller !== undefined && caller.actor.auth === 'token' && caller.nonce !== undefined ? html`<form method="post" action="${request.base}/logout" data-full><input type="hidden" name="_csrf" value="${v.csrf}" /><button type="submit">Sign out</button></form>` : ''}
          </header>
          ${main}
        </body>
      </html>`;
    return { status: page.status ?? 200, headers, body: body.text };
  }

  // ------------------------------------------------------------ writes

  /** The checks every write passes, in order: write access, same origin, CSRF token. */
  private checkWrite(request: ConsoleRequest<Req>, caller: Caller): void {
    if (!this.write) {
      throw new Refusal(
        403,
        'This console is read-only: start it with write access (--write, or write: true) to change anything.',
      );
    }
    this.checkSameOrigin(request);
    this.checkCsrf(request, caller);
  }

  private checkSameOrigin(request: ConsoleRequest<Req>): void {
    const site = header(request, 'sec-fetch-site');
    const origin = header(request, 'origin');
    const host = header(request, 'host');
    const crossOrigin =
      (site !== undefined && site !== 'same-origin' && site !== 'none') ||
      (origin !== undefined && origin !== 'null' && host !== undefined && safeHost(origin) !== host);
    if (crossOrigin) throw new Refusal(403, 'Refused: the request came from another site.');
  }

  private checkCsrf(request: ConsoleRequest<Req>, caller: Caller): void {
    // A bearer token travels in a header no other site can make a browser send: nothing to forge.
    if (caller.nonce === undefined) return;
    const given = request.body?.get('_csrf') ?? header(request, 'x-oncely-csrf') ?? '';
    if (!constantTimeEqual(given, csrfToken(this.key, caller.nonce))) {
      throw new Refusal(403, "The form's CSRF token is missing or stale: reload the page and try again.");
    }
  }

  /**
   * Runs a write with its audit row: written before the action (no row, no action), finished with
   * the outcome after it, also when the action throws.
   */
  private async audited(
    caller: Caller,
    action: string,
    target: Record<string, unknown>,
    run: () => Promise<{ outcome: 'done' | 'refused' | 'failed'; result: string; page: Page }>,
  ): Promise<Page> {
    const id = await startAudit(this.pool, caller.actor, action, target);
    try {
      const done = await run();
      await finishAudit(this.pool, id, done.outcome, done.result);
      return done.page;
    } catch (error) {
      const refused = error instanceof Refusal || (isOncelyError(error) && REFUSALS.has(error.code));
      await finishAudit(this.pool, id, refused ? 'refused' : 'failed', oneLine(error)).catch((e: unknown) => {
        this.logger.error({ err: e }, 'console audit row could not be finished');
      });
      throw error;
    }
  }

  // ------------------------------------------------------------ screens

  private async groupsPage(v: views.ViewContext): Promise<Page> {
    const flashes: views.Flash[] = [];
    let report;
    const connecting = this.kafkaAdmin();
    try {
      report = await readStatusReport(this.pool, connecting === undefined ? undefined : await connecting);
    } catch (error) {
      if (connecting === undefined) throw error;
      // Kafka is down or refuses: still show what the database knows, and say why lag is missing.
      this.logger.warn({ err: error }, 'console: reading group state from Kafka failed');
      flashes.push({ kind: 'error', text: `Kafka: ${oneLine(error)}` });
      await this.dropAdmin();
      report = await readStatusReport(this.pool, undefined);
    }
    const paused = Object.entries(this.options.consumers ?? {}).flatMap(([groupId, consumer]) =>
      consumer.paused().map((p) => ({ ...p, groupId })),
    );
    const now = Date.now();
    const nowMinute = Math.floor(now / 60_000);
    const perMinute = await processedPerMinute(this.pool, CHART_MINUTES);
    const charts = new Map<string, { perMinute: number[]; lag: number[] }>();
    for (const group of report.groups) {
      const series = Array.from({ length: CHART_MINUTES }, () => 0);
      for (const row of perMinute) {
        const at = CHART_MINUTES - 1 - (nowMinute - row.minute);
        if (row.groupId === group.groupId && at >= 0 && at < CHART_MINUTES) series[at] = row.count;
      }
      const samples = this.lagSamples.get(group.groupId) ?? { at: 0, values: [] };
      if (group.lag !== undefined && now - samples.at >= 1000 * this.refreshSeconds * 0.8) {
        samples.values.push(group.lag.reduce((sum, p) => sum + p.lag, 0));
        if (samples.values.length > LAG_SAMPLES) samples.values.shift();
        samples.at = now;
        this.lagSamples.set(group.groupId, samples);
      }
      charts.set(group.groupId, { perMinute: series, lag: samples.values });
    }
    return { title: 'Groups', main: views.groupsScreen(v, { report, paused, charts }), live: true, flashes };
  }

  private deadLetterQuery(request: ConsoleRequest<Req>): views.DeadLetterQuery {
    const q = request.query;
    const reason = text(q, 'reason');
    if (reason !== '' && !DEAD_LETTER_REASONS.includes(reason as DeadLetterReason)) {
      throw new Refusal(400, `"${reason}" is not a dead-letter reason: one of ${DEAD_LETTER_REASONS.join(', ')}.`);
    }
    const status = text(q, 'status') || 'open';
    if (!['open', 'retried', 'discarded', 'all'].includes(status)) {
      throw new Refusal(400, `"${status}" is not a dead-letter status: one of open, retried, discarded, all.`);
    }
    const payload = text(q, 'payload');
    if (payload !== '' && !this.payloads) {
      throw new Refusal(403, 'Searching payloads needs the payload permission: start the console with --payloads.');
    }
    const limit = Number(text(q, 'limit') || '100');
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw new Refusal(400, 'limit is a whole number from 1 to 1000.');
    return {
      group: text(q, 'group'),
      topic: text(q, 'topic'),
      reason,
      status,
      since: text(q, 'since'),
      until: text(q, 'until'),
      messageId: text(q, 'messageId'),
      payload,
      limit,
    };
  }

  private async deadLettersPage(request: ConsoleRequest<Req>, v: views.ViewContext): Promise<Page> {
    const q = this.deadLetterQuery(request);
    const letters = await listDeadLetters(this.pool, {
      ...(q.group === '' ? {} : { groupId: q.group }),
      ...(q.topic === '' ? {} : { topic: q.topic }),
      ...(q.reason === '' ? {} : { reason: q.reason as DeadLetterReason }),
      status: q.status as DeadLetterStatus | 'all',
      ...(q.messageId === '' ? {} : { messageId: q.messageId }),
      ...(q.since === '' ? {} : { since: parseTime('since', q.since) }),
      ...(q.until === '' ? {} : { until: parseTime('until', q.until) }),
      ...(q.payload === '' ? {} : { valueContains: q.payload }),
      limit: q.limit,
    });
    return { title: 'Dead letters', main: views.deadLettersScreen(v, q, letters), live: true };
  }

  private async lettersById(ids: readonly string[]): Promise<DeadLetter[]> {
    const found: DeadLetter[] = [];
    for (const id of ids) {
      const letter = await selectDeadLetter(this.pool, id);
      if (letter !== undefined) found.push(letter);
    }
    return found;
  }

  private async confirmDeadLettersPage(request: ConsoleRequest<Req>, v: views.ViewContext): Promise<Page> {
    const action = request.query.get('action');
    if (action !== 'retry' && action !== 'discard') throw new Refusal(400, 'Choose retry or discard.');
    const ids = idList(request.query.getAll('id'), 'dead letter');
    if (ids.length === 0) throw new Refusal(400, 'Select at least one dead letter first.');
    return { title: 'Confirm', main: views.confirmDeadLetters(v, action, await this.lettersById(ids)) };
  }

  private async retryDeadLettersAction(request: ConsoleRequest<Req>, caller: Caller): Promise<Page> {
    const ids = idList(request.body?.getAll('id') ?? [], 'dead letter');
    if (ids.length === 0) throw new Refusal(400, 'Select at least one dead letter first.');
    if (this.handlers.length === 0) {
      throw new Refusal(
        409,
        "This console was started without the consumer's handlers, so it cannot retry: start it with --handlers <module>.",
      );
    }
    return this.audited(caller, 'dead-letters.retry', { ids }, async () => {
      const results: ResolveResult[] = [];
      // One by one, oldest first, each in its own transaction (see retryDeadLetter).
      for (const id of ids)
        results.push(await retryDeadLetter({ db: this.retryDb, handlers: this.handlers, logger: this.logger }, id));
      return this.resolution('retried', results, request.base);
    });
  }

  private async discardDeadLettersAction(request: ConsoleRequest<Req>, caller: Caller): Promise<Page> {
    const ids = idList(request.body?.getAll('id') ?? [], 'dead letter');
    const reason = (request.body?.get('reason') ?? '').trim();
    if (ids.length === 0) throw new Refusal(400, 'Select at least one dead letter first.');
    if (reason === '' || reason.length > 500)
      throw new Refusal(400, 'Say why they are discarded (1 to 500 characters).');
    return this.audited(caller, 'dead-letters.discard', { ids, reason }, async () => {
      const results: ResolveResult[] = [];
      for (const id of ids) results.push(await discardDeadLetter(this.pool, id, `${reason} (by ${caller.actor.name})`));
      return this.resolution('discarded', results, request.base);
    });
  }

  private resolution(verb: string, results: readonly ResolveResult[], base: string) {
    const good = results.filter((r) => r.outcome === 'processed' || r.outcome === 'discarded').length;
    const failed = results.filter((r) => r.outcome === 'failed').length;
    const summary = `${good} of ${results.length} dead letter(s) ${verb}${failed > 0 ? `; ${failed} failed again` : ''}.`;
    return {
      outcome: good === results.length ? ('done' as const) : failed > 0 ? ('failed' as const) : ('refused' as const),
      result: `${summary} ${results.map((r) => `${r.id}: ${r.outcome}`).join(', ')}`,
      page: {
        title: 'Dead letters',
        main: views.resultsScreen(summary, results, html`<a href="${base}/dead-letters">Back to the dead letters</a>`),
        url: `${base}/dead-letters`,
        flashes: [{ kind: good === results.length ? 'ok' : 'error', text: summary }] as views.Flash[],
      },
    };
  }

  private replayQuery(source: URLSearchParams): views.ReplayQuery {
    return {
      group: text(source, 'group'),
      topic: text(source, 'topic'),
      from: text(source, 'from'),
      to: text(source, 'to'),
      partitions: text(source, 'partitions'),
    };
  }

  private planOptions(q: views.ReplayQuery): PlanReplayOptions {
    if (this.options.kafka === undefined)
      throw new Refusal(409, 'Replays need Kafka: start the console with --brokers.');
    if (q.group === '' || q.topic === '' || q.from === '')
      throw new Refusal(400, 'Give a group, a topic and where the range starts (from).');
    return {
      pool: this.pool,
      kafka: this.options.kafka,
      groupId: q.group,
      topic: q.topic,
      from: q.from,
      to: q.to === '' ? 'latest' : q.to,
      ...(q.partitions === '' ? {} : { partitions: partitionList(q.partitions) }),
      ...(this.handlers.length === 0 ? {} : { handlers: this.handlers }),
    };
  }

  private async replayPage(
    v: views.ViewContext,
    q: views.ReplayQuery,
    plan: Html,
    flashes: views.Flash[] = [],
    url?: string,
  ): Promise<Page> {
    const [groups, history] = await Promise.all([knownGroups(this.pool), replayStatus(this.pool, { limit: 20 })]);
    return {
      title: 'Replay',
      main: views.replayScreen(v, q, groups, history, plan),
      flashes,
      ...(url === undefined ? {} : { url }),
    };
  }

  private async replayPlanPage(request: ConsoleRequest<Req>, v: views.ViewContext): Promise<Page> {
    const q = this.replayQuery(request.query);
    try {
      const plan = await planReplay(this.planOptions(q));
      return await this.replayPage(v, q, views.replayPlanSection(v, q, plan));
    } catch (error) {
      // Shown on the replay screen with the form kept: a typo in the topic is fixed where it was made.
      if (statusOf(error) >= 500) this.logger.warn({ err: error }, 'console: replay plan failed');
      return {
        ...(await this.replayPage(v, q, html``, [{ kind: 'error', text: oneLine(error) }])),
        status: statusOf(error),
      };
    }
  }

  private async replayRunAction(request: ConsoleRequest<Req>, caller: Caller, v: views.ViewContext): Promise<Page> {
    const q = this.replayQuery(request.body ?? new URLSearchParams());
    const force = request.body?.get('force') === 'on';
    // Forcing applies messages that may have been applied before: the operator types the group's
    // name, so a stray click cannot do it.
    if (force && (request.body?.get('confirm') ?? '') !== q.group) {
      throw new Refusal(
        400,
        `To force the replay, type the group name (${q.group}) exactly in the confirmation field.`,
      );
    }
    const planned = this.planOptions(q);
    try {
      return await this.audited(caller, 'replay.run', { ...q, force }, async () => {
        const result = await runReplay({ ...planned, force, requestedBy: `${caller.actor.name} (console)` });
        const moved = result.offsets.partitions
          .map((p) => `partition ${p.partition}: ${p.from ?? '(none)'} → ${p.to}`)
          .join(', ');
        const text = `Replay ${result.replayId} recorded${result.forced ? ' (forced)' : ''}: ${moved || 'nothing to move'}. Start the group's consumers to re-consume.`;
        return {
          outcome: 'done',
          result: text,
          page: await this.replayPage(
            v,
            q,
            views.replayPlanSection({ ...v, write: false }, q, result.plan),
            [{ kind: 'ok', text }],
            `${request.base}/replay`,
          ),
        };
      });
    } catch (error) {
      if (!expected(error)) throw error;
      // Refused as the CLI refuses (at risk, live members, a bad range): the same one line.
      return {
        ...(await this.replayPage(v, q, html``, [{ kind: 'error', text: oneLine(error) }], `${request.base}/replay`)),
        status: statusOf(error),
      };
    }
  }

  private async outboxPage(v: views.ViewContext): Promise<Page> {
    const [counts, backlog, parked] = await Promise.all([
      outboxCounts(this.pool),
      readOutboxBacklog(this.pool),
      listOutbox(this.pool, { status: 'parked', limit: 200 }),
    ]);
    return { title: 'Outbox', main: views.outboxScreen(v, counts, backlog, parked), live: true };
  }

  private async confirmOutboxPage(request: ConsoleRequest<Req>, v: views.ViewContext): Promise<Page> {
    const asked = request.query.get('action');
    const all = asked === 'retry-all';
    const action = all ? 'retry' : asked;
    if (action !== 'retry' && action !== 'discard') throw new Refusal(400, 'Choose retry or discard.');
    const parked = await listOutbox(this.pool, { status: 'parked', limit: 10_000 });
    const ids = new Set(idList(request.query.getAll('id'), 'outbox event'));
    const entries = all ? parked : parked.filter((e) => ids.has(e.id));
    if (!all && ids.size === 0) throw new Refusal(400, 'Select at least one parked event first.');
    return { title: 'Confirm', main: views.confirmOutbox(v, action, entries, all) };
  }

  private async outboxAction(
    request: ConsoleRequest<Req>,
    caller: Caller,
    action: 'retry' | 'discard',
    v: views.ViewContext,
  ): Promise<Page> {
    const all = action === 'retry' && request.body?.get('all') === '1';
    const ids = idList(request.body?.getAll('id') ?? [], 'outbox event');
    if (!all && ids.length === 0) throw new Refusal(400, 'Select at least one parked event first.');
    const reason = (request.body?.get('reason') ?? '').trim();
    if (action === 'discard' && (reason === '' || reason.length > 500)) {
      throw new Refusal(400, 'Say why they are discarded (1 to 500 characters).');
    }
    return this.audited(
      caller,
      `outbox.${action}`,
      all ? { all: true } : { ids, ...(action === 'discard' ? { reason } : {}) },
      async () => {
        const changed =
          action === 'retry'
            ? await retryParked(this.pool, all ? [] : ids)
            : await discardParked(this.pool, ids, `${reason} (by ${caller.actor.name})`);
        const text =
          changed === 0
            ? 'No parked event matched; nothing changed.'
            : `${changed} parked event(s) ${action === 'retry' ? 'back to pending: the relay sends them again' : 'discarded'}.`;
        const page = await this.outboxPage(v);
        return {
          outcome: changed === 0 ? 'refused' : 'done',
          result: text,
          page: {
            ...page,
            live: false,
            url: `${request.base}/outbox`,
            flashes: [{ kind: changed === 0 ? 'warn' : 'ok', text }],
          },
        };
      },
    );
  }

  private async keysPage(request: ConsoleRequest<Req>, v: views.ViewContext): Promise<Page> {
    const q = { scope: text(request.query, 'scope'), key: text(request.query, 'key') };
    let found = null;
    if (q.scope !== '' && q.key !== '') {
      const client = await this.pool.connect();
      try {
        found = await findKey(client, q.scope, q.key);
      } finally {
        client.release();
      }
    }
    return { title: 'HTTP keys', main: views.keysScreen(v, q, found) };
  }

  private async resumeAction(request: ConsoleRequest<Req>, caller: Caller, v: views.ViewContext): Promise<Page> {
    const group = text(request.body ?? new URLSearchParams(), 'group');
    const topic = text(request.body ?? new URLSearchParams(), 'topic');
    const partition = Number(request.body?.get('partition') ?? '');
    const consumer = this.options.consumers?.[group];
    if (consumer === undefined) throw new Refusal(404, `No consumer of group ${group} runs in this process.`);
    const paused = consumer.paused().find((p) => p.topic === topic && p.partition === partition);
    if (paused === undefined)
      throw new Refusal(409, `Partition ${topic}/${partition} of group ${group} is not paused.`);
    if (paused.reason === 'offsets-mismatch') {
      throw new Refusal(
        409,
        `Partition ${topic}/${partition} stopped on an offsets mismatch: fix the offsets with \`oncely offsets reset\` while the group is stopped, then start it again.`,
      );
    }
    return this.audited(caller, 'partition.resume', { group, topic, partition, offset: paused.offset }, async () => {
      // Safe: the message it stopped at is fetched again and retried from attempt 1; the inbox
      // makes a message that did commit meanwhile a duplicate.
      consumer.resume(topic, partition);
      const text = `Partition ${topic}/${partition} of group ${group} resumed at offset ${paused.offset}.`;
      return {
        outcome: 'done',
        result: text,
        page: { ...(await this.groupsPage(v)), live: false, url: `${request.base}/`, flashes: [{ kind: 'ok', text }] },
      };
    });
  }

  // ------------------------------------------------------------ routing

  private async route(request: ConsoleRequest<Req>, caller: Caller): Promise<Page | ConsoleResponse> {
    const v = this.viewContext(request, caller);
    const { method, path } = request;
    if (method === 'GET') {
      if (path === '/' || path === '') return this.groupsPage(v);
      if (path === '/dead-letters') return this.deadLettersPage(request, v);
      if (path === '/dead-letters/confirm') return this.confirmDeadLettersPage(request, v);
      const one = /^\/dead-letters\/(\d{1,19})$/.exec(path);
      if (one !== null) {
        const letter = await selectDeadLetter(this.pool, one[1] ?? '');
        if (letter === undefined) throw new Refusal(404, `Dead letter ${one[1] ?? ''} does not exist.`);
        return { title: `Dead letter ${letter.id}`, main: views.deadLetterScreen(v, letter) };
      }
      if (path === '/replay') return this.replayPage(v, this.replayQuery(request.query), html``);
      if (path === '/replay/plan') return this.replayPlanPage(request, v);
      if (path === '/outbox') return this.outboxPage(v);
      if (path === '/outbox/confirm') return this.confirmOutboxPage(request, v);
      if (path === '/keys') return this.keysPage(request, v);
      if (path === '/audit') return { title: 'Audit', main: views.auditScreen(await readAudit(this.pool)), live: true };
      if (path === '/login') return redirect(request, '/');
      throw new Refusal(404, `There is no page ${path} in this console.`);
    }
    if (method !== 'POST') throw new Refusal(405, `${method} is not answered here: use the console's pages.`);
    if (path === '/logout') {
      this.checkSameOrigin(request);
      this.checkCsrf(request, caller);
      return {
        status: 303,
        headers: {
          ...SECURITY_HEADERS,
          location: `${request.base}/login`,
          'set-cookie': [cookie(SESSION_COOKIE, '', { path: cookiePath(request), secure: request.secure, maxAgeS: 0 })],
        },
        body: '',
      };
    }
    this.checkWrite(request, caller);
    if (path === '/dead-letters/retry') return this.retryDeadLettersAction(request, caller);
    if (path === '/dead-letters/discard') return this.discardDeadLettersAction(request, caller);
    if (path === '/replay/run') return this.replayRunAction(request, caller, v);
    if (path === '/outbox/retry') return this.outboxAction(request, caller, 'retry', v);
    if (path === '/outbox/discard') return this.outboxAction(request, caller, 'discard', v);
    if (path === '/groups/resume') return this.resumeAction(request, caller, v);
    throw new Refusal(404, `There is no action ${path} in this console.`);
  }

  async handle(request: ConsoleRequest<Req>): Promise<ConsoleResponse> {
    if (request.method === 'GET' && request.path.startsWith('/assets/')) return asset(request.path);
    let caller: Caller | undefined;
    try {
      const authenticated = await this.authenticate(request);
      if (!('actor' in authenticated)) return authenticated;
      caller = authenticated;
      const result = await this.route(request, caller);
      return 'main' in result ? this.respond(request, caller, result) : result;
    } catch (error) {
      const status = statusOf(error);
      if (status >= 500) this.logger.error({ err: error, path: request.path }, 'console request failed');
      return this.respond(request, caller, {
        title: status === 404 ? 'Not found' : 'Refused',
        main: html``,
        flashes: [{ kind: 'error', text: oneLine(error) }],
        status,
      });
    }
  }
}

/** Codes that are refusals (the operator can fix the request), not failures. */
const REFUSALS = new Set([
  'ONCELY_CONFIG',
  'ONCELY_REPLAY_AT_RISK',
  'ONCELY_GROUP_ACTIVE',
  'ONCELY_OFFSET_OUT_OF_RANGE',
  'ONCELY_TOPIC_NOT_FOUND',
]);

function expected(error: unknown): boolean {
  return (
    error instanceof Refusal ||
    (isOncelyError(error) && REFUSALS.has(error.code)) ||
    (error as { code?: unknown }).code === 'commander.invalidArgument'
  );
}

function statusOf(error: unknown): number {
  if (error instanceof Refusal) return error.status;
  if (isOncelyError(error)) {
    if (error.code === 'ONCELY_REPLAY_AT_RISK' || error.code === 'ONCELY_GROUP_ACTIVE') return 409;
    if (REFUSALS.has(error.code)) return 400;
  }
  if ((error as { code?: unknown }).code === 'commander.invalidArgument') return 400;
  return 500;
}

/** One line, as the CLI prints it, without the `oncely: ` prefix a page does not need. */
function oneLine(error: unknown): string {
  if (error instanceof Refusal) return error.message;
  return failureLine(error).replace(/^oncely: /, '');
}

function asset(path: string): ConsoleResponse {
  const assets: Record<string, [string, string]> = {
    '/assets/console.css': ['text/css; charset=utf-8', CONSOLE_CSS],
    '/assets/console.js': ['text/javascript; charset=utf-8', CONSOLE_JS],
  };
  const found = assets[path];
  if (found === undefined) {
    return { status: 404, headers: { ...SECURITY_HEADERS, 'content-type': 'text/plain' }, body: 'not found' };
  }
  return {
    status: 200,
    headers: { ...SECURITY_HEADERS, 'content-type': found[0], 'cache-control': 'no-cache' },
    body: found[1],
  };
}

function redirect(request: ConsoleRequest, to: string): ConsoleResponse {
  return { status: 303, headers: { ...SECURITY_HEADERS, location: `${request.base}${to}` }, body: '' };
}

function header(request: ConsoleRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? (value[0] as string | undefined) : (value as string | undefined);
}

function isFragment(request: ConsoleRequest): boolean {
  return header(request, 'x-oncely-fragment') === '1';
}

function cookiePath(request: ConsoleRequest): string {
  return request.base === '' ? '/' : request.base;
}

function searchWithoutToken(search: URLSearchParams): string {
  const rest = new URLSearchParams(search);
  rest.delete('token');
  const text = rest.toString();
  return text === '' ? '' : `?${text}`;
}

function safeHost(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}

/** A form or query value, trimmed and bounded: names of groups, topics, ids. */
function text(source: URLSearchParams, name: string): string {
  const value = (source.get(name) ?? '').trim();
  if (value.length > MAX_TEXT) throw new Refusal(400, `${name} is longer than ${MAX_TEXT} characters.`);
  return value;
}

/** Ids (PostgreSQL bigints) from a form: positive whole numbers, at most MAX_IDS, without repeats. */
function idList(values: readonly string[], what: string): string[] {
  if (values.length > MAX_IDS) throw new Refusal(400, `At most ${MAX_IDS} ${what}s at once.`);
  const ids = new Set<string>();
  for (const raw of values) {
    const id = raw.trim();
    if (!/^[1-9]\d{0,18}$/.test(id) || BigInt(id) > 9_223_372_036_854_775_807n) {
      throw new Refusal(400, `"${shortText(id)}" is not a ${what} id: ids are positive whole numbers.`);
    }
    ids.add(id);
  }
  return [...ids];
}

function partitionList(value: string): number[] {
  return parsePartitions(value);
}

/** `2h` (that long ago) or an ISO 8601 time. */
function parseTime(name: string, value: string): Date {
  if (/^\d+(\.\d+)?(ms|s|m|h|d)$/.test(value)) return new Date(Date.now() - parseDuration(value));
  const at = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(at.getTime())) {
    throw new Refusal(
      400,
      `${name} "${shortText(value)}" is not a time: give an ISO time (2024-05-01T10:00Z) or a duration ago (2h, 30m).`,
    );
  }
  return at;
}

function shortText(value: string): string {
  return value.length <= 40 ? value : `${value.slice(0, 39)}…`;
}
