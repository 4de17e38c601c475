/**
 * The operator console in a real Chromium, against the real broker and database: one browser for
 * the whole file, two consoles (a writable one on Fastify, a read-only one with payloads shown,
 * mounted in Express behind the host app's own auth). Screenshots of every screen are written to
 * test-results/console/ (not committed).
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';

import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { consoleMiddleware, consolePlugin } from 'oncely/console';
import { type InboxConsumer, NonRetriableError, purge } from '../../../src/index.js';
import { insertOutboxRow } from '../../../src/outbox/store.js';
import { effectHandler, jsonMessage, recordOutcomes, useTestEnvironment, waitFor } from '../../support/integration.js';

const env = useTestEnvironment();

/** Debian's chromium (as .ci/run installs it), or the one ONCELY_CHROMIUM names. */
const CHROMIUM = [process.env.ONCELY_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find(
  (path): path is string => path !== undefined && path !== '' && existsSync(path),
);
if (CHROMIUM === undefined) {
  console.warn(
    'console browser tests skipped: no Chromium found (install it with `apt-get install chromium`, as .ci/run does, or set ONCELY_CHROMIUM)',
  );
}

const SHOTS = new URL('../../../test-results/console/', import.meta.url);
const TOKEN = `console-test-${randomUUID()}`;

describe.skipIf(CHROMIUM === undefined)('operator console in a browser', () => {
  let browser: Browser;
  let operator: BrowserContext;
  let page: Page;
  let writable: { app: FastifyInstance; url: string };
  let readOnly: { close(): Promise<void>; url: string };
  let topic: string;
  let groupId: string;
  /** The payment handler's bug: a card type it does not know yet. Fixed (false) before the retry. */
  let broken = true;
  let paymentHandler: ReturnType<typeof effectHandler>;
  /** Consumers of this process the console lists paused partitions of (read on every request). */
  const consumers: Record<string, InboxConsumer> = {};
  const shot = (name: string) => page.screenshot({ path: new URL(`${name}.png`, SHOTS).pathname, fullPage: true });
  /** Follows a link of the console's menu; resolves once the new screen is in (the address changes after the swap). */
  const menu = async (label: string, path: string) => {
    await page.click(`header nav a:text("${label}")`);
    await page.waitForURL((url) => url.pathname === path);
  };

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    topic = await env.createTopic('console-payments');
    groupId = env.groupId('console-ledger');
    // The consumer and the console share the handler, as a deployment shares its code.
    paymentHandler = effectHandler(topic, (_ctx, event) => {
      if (broken && (event as { card?: string }).card === 'amex') throw new NonRetriableError('unknown card type amex');
    });

    const app = Fastify();
    await app.register(consolePlugin, {
      db: env.db,
      kafka: env.kafka,
      token: TOKEN,
      write: true,
      handlers: [paymentHandler],
      consumers,
      refreshSeconds: 2,
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    writable = { app, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };

    // The host app's auth: a header its proxy sets; no header, no operator.
    const middleware = consoleMiddleware({
      db: env.pool,
      kafka: env.kafka,
      identify: (req) => req.get('x-operator'),
      payloads: true,
    });
    const host = express();
    host.use('/ops/oncely', middleware);
    const server = host.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    readOnly = {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/ops/oncely`,
      close: async () => {
        await new Promise((resolve) => server.close(resolve));
        await middleware.close();
      },
    };

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // Chromium's sandbox cannot start as root (CI runs as root).
      args: process.getuid?.() === 0 ? ['--no-sandbox'] : [],
    });
    operator = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await operator.newPage();
  });

  afterAll(async () => {
    await browser?.close();
    await writable?.app.close();
    await readOnly?.close();
  });

  it('finds a poison message by id, retries it once the handler is fixed, and sees it processed', async () => {
    const poisonId = `pay-${randomUUID()}`;
    const live = env.consumer({ groupId, handlers: [paymentHandler] });
    const outcomes = recordOutcomes(live);
    await live.start();
    await env.produce(topic, [
      jsonMessage(`pay-${randomUUID()}`, { amount: 1200, card: 'visa', holder: 'Ada Lovelace' }),
      jsonMessage(poisonId, { amount: 990, card: 'amex', holder: 'Grace Hopper' }),
    ]);
    await waitFor('both outcomes', () => outcomes.total === 2);
    expect(outcomes.deadLettered.map((d) => d.messageId)).toEqual([poisonId]);

    // Signing in with the token (once in the address; the console moves it into a cookie).
    await page.goto(`${writable.url}/?token=${TOKEN}`);
    expect(new URL(page.url()).search).toBe('');
    await expect(page.locator(`section[data-group="${groupId}"]`).textContent()).resolves.toContain(topic);
    await shot('groups');

    await menu('Dead letters', '/dead-letters');
    await page.fill('input[name=messageId]', poisonId);
    await page.click('form.filters button');
    await page.waitForURL((url) => url.searchParams.get('messageId') === poisonId);
    const row = page.locator('tr[data-dead-letter]');
    await expect(row.count()).resolves.toBe(1);
    await expect(row.textContent()).resolves.toContain('unknown card type amex');
    await shot('dead-letters');

    await row.locator('a').first().click();
    await page.waitForSelector('[data-field=message-id]');
    expect((await page.textContent('[data-field=message-id]'))?.trim()).toBe(poisonId);
    // Payment payloads are personal data: hidden without the payload permission.
    await expect(page.textContent('[data-field=value]')).resolves.toContain('hidden (');
    expect(await page.content()).not.toContain('Grace Hopper');
    await shot('dead-letter');

    broken = false;
    await page.click('a:text("Retry…")');
    await page.click('button:text("Confirm: retry 1")');
    await page.waitForSelector('tr[data-result]');
    await expect(page.textContent('tr[data-result]')).resolves.toContain('processed');

    const effects = await env.effectsOf(topic);
    expect(effects.filter((e) => e.messageId === poisonId)).toHaveLength(1);
    const { rows } = await env.pool.query<{ status: string; inbox: string }>(
      `SELECT d.status, i.status AS inbox FROM oncely.dead_letters d
         JOIN oncely.inbox i ON i.consumer_group = d.consumer_group AND i.message_id = d.message_id
        WHERE d.message_id = $1`,
      [poisonId],
    );
    expect(rows).toEqual([{ status: 'retried', inbox: 'processed' }]);
    const audit = await env.pool.query<{ actor: string; auth: string; action: string; outcome: string }>(
      'SELECT actor, auth, action, outcome FROM oncely.console_audit ORDER BY id',
    );
    expect(audit.rows).toEqual([
      { actor: 'token holder', auth: 'token', action: 'dead-letters.retry', outcome: 'done' },
    ]);
    await live.stop();
  });

  it('plans a replay past a purge, shows the at-risk count, and the run is refused', async () => {
    const replayTopic = await env.createTopic('console-replay');
    const replayGroup = env.groupId('console-replay');
    await env.produce(
      replayTopic,
      Array.from({ length: 6 }, (_, i) => jsonMessage(`r-${i}-${randomUUID()}`, { i })),
    );
    const consumer = env.consumer({ groupId: replayGroup, handlers: [effectHandler(replayTopic)] });
    const outcomes = recordOutcomes(consumer);
    await consumer.start();
    await waitFor('6 outcomes', () => outcomes.total === 6);
    await consumer.stop();
    expect(
      (await purge({ pool: env.pool, kafka: env.kafka, groupId: replayGroup, inboxFor: 0, pauseMs: 0 })).inboxDeleted,
    ).toBe(6);

    await menu('Replay', '/replay');
    await page.fill('input[name=group]', replayGroup);
    await page.fill('input[name=topic]', replayTopic);
    await page.fill('input[name=from]', '2');
    await page.click('button:text("Plan")');
    await page.waitForSelector('[data-plan]');
    await expect(page.getAttribute('[data-at-risk]', 'data-at-risk')).resolves.toBe('4');
    expect((await page.textContent('tr.total [data-class=at-risk]'))?.trim()).toBe('4');
    await shot('replay');

    // Forcing needs the group's name typed: a wrong one is refused before anything is read.
    await page.check('input[name=force]');
    await page.fill('input[name=confirm]', 'not-the-group');
    await page.click('button:text("Run replay")');
    await page.waitForSelector('.flash[role=alert]');
    await expect(page.textContent('.flash[role=alert]')).resolves.toContain('type the group name');

    await page.goBack();
    await page.waitForSelector('[data-plan]');
    await page.click('button:text("Run replay")');
    await page.waitForSelector('.flash[role=alert]');
    await expect(page.textContent('.flash[role=alert]')).resolves.toContain(
      'Refused: 4 messages are at risk of being applied twice',
    );
    // Refused means nothing moved and nothing but the refusal was recorded.
    expect(await env.offsetsOf(replayGroup, replayTopic)).toEqual(new Map([[0, 6n]]));
    const { rows } = await env.pool.query('SELECT 1 FROM oncely.replays WHERE consumer_group = $1', [replayGroup]);
    expect(rows).toEqual([]);
    const audit = await env.pool.query<{ action: string; outcome: string }>(
      "SELECT action, outcome FROM oncely.console_audit WHERE action = 'replay.run'",
    );
    expect(audit.rows).toEqual([{ action: 'replay.run', outcome: 'refused' }]);
  });

  it('shows the outbox and the HTTP keys; payload values hidden without the permission, shown with it', async () => {
    const id = await insertOutboxRow(env.pool, {
      messageId: `evt-${randomUUID()}`,
      topic: 'payments.captured',
      key: Buffer.from('acct-77'),
      value: Buffer.from('{"holder":"Ada Lovelace"}'),
      headers: [],
      causationId: null,
    });
    await env.pool.query(
      `UPDATE oncely.outbox SET status = 'parked', attempts = 3,
              last_error = '{"code":"INVALID_RECORD","message":"record too large"}' WHERE id = $1`,
      [id.toString()],
    );
    const key = `key-${randomUUID()}`;
    await env.pool.query(
      `INSERT INTO oncely.idempotency_keys (scope, key, status, request_fingerprint, method, path, response_status,
         response_headers, response_body, expires_at)
       VALUES ('merchant-7', $1, 'completed', sha256('POST /v1/payments'::bytea), 'POST', '/v1/payments', 201, '[["content-type","application/json"]]',
         convert_to('{"card":"4242 4242 4242 4242"}', 'UTF8'), now() + interval '1 day')`,
      [key],
    );

    await menu('Outbox', '/outbox');
    expect((await page.textContent('[data-mode]'))?.replaceAll(/\s+/g, ' ')).toContain('payloads hidden');
    expect((await page.textContent('[data-count=parked]'))?.trim()).toBe('1');
    await expect(page.textContent(`tr[data-outbox="${id}"]`)).resolves.toContain('record too large');
    expect(await page.content()).not.toContain('acct-77');
    await shot('outbox');

    await menu('HTTP keys', '/keys');
    await page.fill('input[name=scope]', 'merchant-7');
    await page.fill('input[name=key]', key);
    await page.click('button:text("Look up")');
    await page.waitForSelector('[data-key]');
    expect((await page.textContent('[data-field=status-code]'))?.trim()).toBe('201');
    expect(await page.content()).not.toContain('4242');
    await shot('keys');

    // Searching payloads is refused too: it would reveal them one guess at a time.
    const search = await operator.request.get(`${writable.url}/dead-letters?payload=Grace`);
    expect(search.status()).toBe(403);

    // The console started with the payload permission shows them.
    const permitted = await browser.newContext({ extraHTTPHeaders: { 'x-operator': 'alice@example.com' } });
    const other = await permitted.newPage();
    await other.goto(`${readOnly.url}/keys?scope=merchant-7&key=${key}`);
    await expect(other.textContent('[data-field=body]')).resolves.toContain('4242 4242 4242 4242');
    await other.goto(`${readOnly.url}/dead-letters?status=all&payload=Grace`);
    await expect(other.locator('tr[data-dead-letter]').count()).resolves.toBe(1);
    await permitted.close();
  });

  it('a read-only console refuses writes, and shows no write actions', async () => {
    const context = await browser.newContext({ extraHTTPHeaders: { 'x-operator': 'bob@example.com' } });
    const viewer = await context.newPage();
    await viewer.goto(`${readOnly.url}/dead-letters?status=all`);
    await expect(viewer.textContent('[data-mode]')).resolves.toContain('read-only');
    await expect(viewer.locator('button:text("Retry selected…")').count()).resolves.toBe(0);
    const [letter] = (await env.pool.query<{ id: string }>('SELECT id FROM oncely.dead_letters')).rows;
    const refused = await context.request.post(`${readOnly.url}/dead-letters/discard`, {
      form: { id: letter?.id ?? '', reason: 'should not happen' },
    });
    expect(refused.status()).toBe(403);
    expect(await refused.text()).toContain('This console is read-only');
    await context.close();
  });

  it('lists a paused partition with its reason, and resumes it: its message is retried and processed', async () => {
    const pausedTopic = await env.createTopic('console-paused');
    const pausedGroup = env.groupId('console-paused');
    let ledgerUp = false;
    const consumer = env.consumer({
      groupId: pausedGroup,
      handlers: [
        effectHandler(pausedTopic, () => {
          if (!ledgerUp) throw new Error('ledger service down');
        }),
      ],
      onExhausted: 'pause',
      retry: { attempts: 1 },
    });
    consumers[pausedGroup] = consumer;
    await consumer.start();
    await env.produce(pausedTopic, [jsonMessage(`held-${randomUUID()}`, { amount: 5 })]);
    await waitFor('the pause', () => consumer.paused().length === 1);

    await menu('Groups', '/');
    const row = page.locator(`tr[data-paused="${pausedGroup}"]`);
    await row.waitFor();
    await expect(row.textContent()).resolves.toContain('ledger service down');
    await expect(row.textContent()).resolves.toContain('exhausted');
    ledgerUp = true;
    await row.locator('button:text("Resume")').click();
    await page.waitForSelector('.flash.ok');
    await expect(page.textContent('.flash.ok')).resolves.toContain(
      `Partition ${pausedTopic}/0 of group ${pausedGroup} resumed`,
    );
    await waitFor('the held message to be processed', async () => (await env.effectsOf(pausedTopic)).length === 1);
    expect(consumer.paused()).toEqual([]);
    delete consumers[pausedGroup];
  });

  it('refuses a request without the token, a wrong token, a write without its CSRF token, and another site', async () => {
    const stranger = await browser.newContext();
    const anonymous = await stranger.newPage();
    const response = await anonymous.goto(`${writable.url}/dead-letters?status=all`);
    expect(response?.status()).toBe(401);
    await expect(anonymous.locator('input[name=token]').count()).resolves.toBe(1);
    expect(await anonymous.content()).not.toContain('unknown card type');
    await anonymous.fill('input[name=token]', 'not-the-token-at-all');
    await anonymous.click('button:text("Sign in")');
    await anonymous.waitForSelector('.flash[role=alert]');
    await expect(anonymous.textContent('.flash[role=alert]')).resolves.toContain("That token is not this console's");

    expect((await stranger.request.post(`${writable.url}/outbox/retry`, { form: { all: '1' } })).status()).toBe(401);
    const bearer = await stranger.request.get(`${writable.url}/`, { headers: { authorization: 'Bearer wrong' } });
    expect(bearer.status()).toBe(401);
    expect(
      (await stranger.request.get(`${writable.url}/`, { headers: { authorization: `Bearer ${TOKEN}` } })).status(),
    ).toBe(200);
    await stranger.close();

    // The host app's auth, mounted: no operator, no page.
    const unnamed = await browser.newContext();
    expect((await unnamed.request.get(`${readOnly.url}/`)).status()).toBe(401);
    await unnamed.close();

    // Signed in, but the form's CSRF token is missing, or the request comes from another site.
    const noCsrf = await operator.request.post(`${writable.url}/outbox/retry`, { form: { all: '1' } });
    expect(noCsrf.status()).toBe(403);
    expect(await noCsrf.text()).toContain('CSRF token is missing or stale');
    const crossSite = await operator.request.post(`${writable.url}/outbox/retry`, {
      form: { all: '1' },
      headers: { origin: 'https://evil.example' },
    });
    expect(crossSite.status()).toBe(403);
    const { rows } = await env.pool.query("SELECT 1 FROM oncely.outbox WHERE status = 'pending'");
    expect(rows).toEqual([]);

    // Where a write does pass every check, it is audited: the parked event goes back to pending.
    await menu('Outbox', '/outbox');
    await page.check('input[data-select-all]');
    await page.click('button:text("Retry selected…")');
    await page.click('button:text("Confirm: retry")');
    await page.waitForSelector('.flash.ok');
    await expect(page.textContent('.flash.ok')).resolves.toContain('1 parked event(s) back to pending');
    await menu('Audit', '/audit');
    await expect(page.locator('tr[data-audit]').count()).resolves.toBe(4);
    await shot('audit');
  });
});
