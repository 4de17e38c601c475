/**
 * The console's screens as server-rendered HTML. Every value goes through the escaping `html`
 * template; payload values are rendered only when the payload permission is on.
 */
import type { StoredKey } from '../http/store.js';
import { DEAD_LETTER_REASONS } from '../inbox/dead-letters.js';
import type { DeadLetter, DeadLetterSummary } from '../inbox/dead-letter-store.js';
import type { OutboxEntry, OutboxStatus } from '../outbox/store.js';
import { formatStoredError, readableMessage } from '../operator/stored-error.js';
import type { PausedPartition } from '../pipeline/lifecycle/pauses.js';
import type { ReplayPlan } from '../replay/plan.js';
import type { ReplayProgress } from '../replay/status.js';
import { lagChart } from './chart.js';
import { type Html, html, query, time } from './html.js';
import type { StatusReport } from './status.js';
import type { AuditEntry } from './store.js';

/** What every screen needs to know about the request and the console. */
export interface ViewContext {
  readonly base: string;
  readonly write: boolean;
  readonly payloads: boolean;
  readonly csrf: string;
  readonly canRetry: boolean;
  readonly hasKafka: boolean;
}

export interface Flash {
  readonly kind: 'ok' | 'error' | 'warn';
  readonly text: string;
}

export function flashes(list: readonly Flash[]): Html {
  return html`${list.map((f) => html`<p class="flash ${f.kind}" role="${f.kind === 'error' ? 'alert' : 'status'}">${f.text}</p>`)}`;
}

const csrfField = (v: ViewContext): Html => html`<input type="hidden" name="_csrf" value="${v.csrf}" />`;

function readOnlyNote(): Html {
  return html`<p class="muted">
    This console is read-only: start it with write access (<code>--write</code>, or <code>write: true</code>) to change
    anything.
  </p>`;
}

function hidden(bytes: number, what = 'payload values'): Html {
  return html`<span class="hidden-value"
    >hidden (${bytes} bytes; ${what} are shown only with the payload permission: <code>--payloads</code>)</span
  >`;
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** Bytes as text when they are valid UTF-8, else base64. */
function printable(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : `base64:${bytes.toString('base64')}`;
}

// ---------------------------------------------------------------- groups

export interface GroupsData {
  readonly report: StatusReport;
  readonly paused: readonly (PausedPartition & { readonly groupId: string })[];
  /** Per group: processed per minute, oldest first, and lag samples. */
  readonly charts: ReadonlyMap<string, { readonly perMinute: readonly number[]; readonly lag: readonly number[] }>;
}

export function groupsScreen(v: ViewContext, data: GroupsData): Html {
  const { report } = data;
  const pending = report.migrations.pending;
  return html`<h1>Consumer groups</h1>
    ${pending.length > 0 ? html`<p class="flash warn">${pending.length} migration(s) pending (${pending.map((m) => m.name).join(', ')}): run <code>oncely migrate</code>.</p>` : ''}
    ${v.hasKafka ? '' : html`<p class="flash warn">Lag and group state unknown: the console has no Kafka brokers (start it with <code>--brokers</code>).</p>`}
    ${pausedSection(v, data.paused)}
    ${report.groups.length === 0 ? html`<p class="muted">No consumer group has recorded anything yet.</p>` : ''}
    ${report.groups.map((group) => {
      const totalLag = group.lag?.reduce((sum, p) => sum + p.lag, 0);
      const open = group.deadLettersOpen.reduce((sum, r) => sum + r.open, 0);
      const chart = data.charts.get(group.groupId);
      return html`<section class="card" data-group="${group.groupId}">
        <div class="grid2">
          <div>
            <h2>${group.groupId}</h2>
            <p>
              ${group.state === undefined ? '' : html`state <strong>${group.state}</strong> · `}lag
              <strong class="${totalLag !== undefined && totalLag > 0 ? 'warn' : ''}">${totalLag ?? 'unknown'}</strong>
              · dead letters open
              <a href="${v.base}/dead-letters${query({ group: group.groupId })}" class="${open > 0 ? 'bad' : ''}"
                >${open}</a
              >
            </p>
          </div>
          <div>${chart === undefined ? '' : lagChart(chart.perMinute, chart.lag)}</div>
        </div>
        <table>
          <thead>
            <tr>
              <th>topic</th>
              <th class="num">partition</th>
              <th class="num">resume point (db)</th>
              <th class="num">committed (Kafka)</th>
              <th class="num">log end</th>
              <th class="num">lag</th>
              <th>updated</th>
            </tr>
          </thead>
          <tbody>
            ${group.topics.flatMap((topic) => {
              const partitions = new Set([
                ...topic.partitions.map((p) => p.partition),
                ...(group.lag ?? []).filter((l) => l.topic === topic.topic).map((l) => l.partition),
              ]);
              return [...partitions]
                .sort((a, b) => a - b)
                .map((partition) => {
                  const recorded = topic.partitions.find((p) => p.partition === partition);
                  const lag = group.lag?.find((l) => l.topic === topic.topic && l.partition === partition);
                  const paused = data.paused.some(
                    (p) => p.groupId === group.groupId && p.topic === topic.topic && p.partition === partition,
                  );
                  return html`<tr>
                    <td>${topic.topic}${paused ? html` <span class="pill parked">paused</span>` : ''}</td>
                    <td class="num">${partition}</td>
                    <td class="num">${recorded?.nextOffset ?? '—'}</td>
                    <td class="num">${lag?.committed ?? '—'}</td>
                    <td class="num">${lag?.logEnd ?? '—'}</td>
                    <td class="num ${lag !== undefined && lag.lag > 0 ? 'warn' : ''}">${lag?.lag ?? '—'}</td>
                    <td class="muted">${time(recorded?.updatedAt)}</td>
                  </tr>`;
                });
            })}
          </tbody>
        </table>
        <p class="muted">
          ${group.topics.map((t) => `${t.topic}: ${t.processed} processed, dead letters ${t.deadLetters.open} open / ${t.deadLetters.retried} retried / ${t.deadLetters.discarded} discarded`).join(' · ')}
        </p>
      </section>`;
    })}
    ${
      report.outbox === undefined
        ? ''
        : html`<p>
            Outbox:
            <a href="${v.base}/outbox"
              >${report.outbox.pending} pending,
              <span class="${report.outbox.parked > 0 ? 'bad' : ''}">${report.outbox.parked} parked</span></a
            >, ${report.outbox.sent} sent, ${report.outbox.discarded} discarded.
          </p>`
    }
    ${(report.replays ?? []).some((r) => r.completedAt === null) ? html`<p class="flash warn">A replay is in progress: see <a href="${v.base}/replay">Replay</a>.</p>` : ''}`;
}

function pausedSection(v: ViewContext, paused: GroupsData['paused']): Html {
  if (paused.length === 0) return html``;
  return html`<section class="card">
    <h2>Paused partitions</h2>
    <table>
      <thead>
        <tr>
          <th>group</th>
          <th>topic/partition</th>
          <th class="num">at offset</th>
          <th>message id</th>
          <th>reason</th>
          <th>error</th>
          <th>since</th>
          <th></th>
        </tr>
      </thead>
      <tbody>
        ${paused.map(
          (p) =>
            html`<tr data-paused="${p.groupId}">
              <td>${p.groupId}</td>
              <td>${p.topic}/${p.partition}</td>
              <td class="num">${p.offset}</td>
              <td class="mono">${p.messageId ?? '—'}</td>
              <td><span class="pill parked">${p.reason}</span></td>
              <td>${shorten(readableMessage(p.error.message), 200)}</td>
              <td>${time(p.pausedAt)}</td>
              <td>
                ${
                  // An offsets mismatch is resumed by fixing the offsets while the group is stopped: resuming here
                  // would only check them again and pause again. The other reasons retry the message from attempt 1.
                  p.reason === 'offsets-mismatch'
                    ? html`<span class="muted">fix the offsets first (<code>oncely offsets reset</code>)</span>`
                    : v.write
                      ? html`<form method="post" action="${v.base}/groups/resume">
                          ${csrfField(v)} <input type="hidden" name="group" value="${p.groupId}" /><input
                            type="hidden"
                            name="topic"
                            value="${p.topic}"
                          /><input type="hidden" name="partition" value="${p.partition}" />
                          <button type="submit">Resume</button>
                        </form>`
                      : html`<span class="muted">read-only</span>`
                }
              </td>
            </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

// ---------------------------------------------------------------- dead letters

export interface DeadLetterQuery {
  readonly group: string;
  readonly topic: string;
  readonly reason: string;
  readonly status: string;
  readonly since: string;
  readonly until: string;
  readonly messageId: string;
  readonly payload: string;
  readonly limit: number;
}

export function deadLettersScreen(v: ViewContext, q: DeadLetterQuery, letters: readonly DeadLetterSummary[]): Html {
  const option = (value: string, current: string, label = value): Html =>
    html`<option value="${value}" ${value === current ? html` selected` : ''}>${label}</option>`;
  return html`<h1>Dead letters</h1>
    <form class="filters" method="get" action="${v.base}/dead-letters">
      <label>group <input name="group" value="${q.group}" size="18" /></label>
      <label>topic <input name="topic" value="${q.topic}" size="18" /></label>
      <label
        >reason
        <select name="reason">
          ${option('', q.reason, 'any')}${DEAD_LETTER_REASONS.map((r) => option(r, q.reason))}
        </select></label
      >
      <label
        >status
        <select name="status">
          ${['open', 'retried', 'discarded', 'all'].map((s) => option(s, q.status))}
        </select></label
      >
      <label>since <input name="since" value="${q.since}" size="12" placeholder="2h or ISO time" /></label>
      <label>until <input name="until" value="${q.until}" size="12" placeholder="ISO time" /></label>
      <label>message id <input name="messageId" value="${q.messageId}" size="22" placeholder="exact id" /></label>
      <label
        >payload contains
        ${
          v.payloads
            ? html`<input name="payload" value="${q.payload}" size="16" />`
            : html`<input name="payload" disabled placeholder="needs --payloads" size="16" />`
        }</label
      >
      <button type="submit">Filter</button>
    </form>
    <form method="get" action="${v.base}/dead-letters/confirm">
      <table>
        <thead>
          <tr>
            <th><input type="checkbox" data-select-all aria-label="select all" /></th>
            <th>id</th>
            <th>group</th>
            <th>topic/partition/offset</th>
            <th>message id</th>
            <th>reason</th>
            <th class="num">attempts</th>
            <th>status</th>
            <th>created</th>
            <th>error</th>
          </tr>
        </thead>
        <tbody>
          ${
            letters.length === 0
              ? html`<tr>
                  <td colspan="10" class="muted">No ${q.status === 'all' ? '' : `${q.status} `}dead letters match.</td>
                </tr>`
              : letters.map(
                  (l) =>
                    html`<tr data-dead-letter="${l.id}">
                      <td>
                        ${l.status === 'open' ? html`<input type="checkbox" name="id" value="${l.id}" aria-label="select ${l.id}" />` : ''}
                      </td>
                      <td><a href="${v.base}/dead-letters/${l.id}">${l.id}</a></td>
                      <td>${l.groupId}</td>
                      <td>${l.topic}/${l.partition}/${l.offset}</td>
                      <td class="mono">${shorten(l.messageId ?? '(invalid)', 40)}</td>
                      <td>${l.reason}</td>
                      <td class="num">${l.attempts}</td>
                      <td><span class="pill ${l.status}">${l.status}</span></td>
                      <td>${time(l.createdAt)}</td>
                      <td>${shorten(readableMessage(l.errorMessage), 80)}</td>
                    </tr>`,
                )
          }
        </tbody>
      </table>
      ${
        v.write
          ? html`<div class="actions">
              <button type="submit" name="action" value="retry">Retry selected…</button>
              <button type="submit" name="action" value="discard" class="danger">Discard selected…</button>
              <span class="muted">${letters.length} shown (at most ${q.limit}); you confirm on the next screen.</span>
            </div>`
          : readOnlyNote()
      }
    </form>`;
}

export function deadLetterScreen(v: ViewContext, letter: DeadLetter): Html {
  const header = (h: DeadLetter['headers'][number]): Html => {
    // Ids and trace context say where a message came from, not what it holds: always shown.
    const visible =
      v.payloads ||
      ['message-id', 'idempotency-key', 'traceparent', 'content-type'].includes(h.key) ||
      h.key.startsWith('oncely-');
    return html`<tr>
      <td class="mono">${h.key}</td>
      <td class="mono">
        ${
          visible
            ? h.encoding === 'base64'
              ? `base64:${h.value}`
              : h.value
            : hidden(Buffer.byteLength(h.value), 'header values')
        }
      </td>
    </tr>`;
  };
  return html`<h1>Dead letter ${letter.id} <span class="pill ${letter.status}">${letter.status}</span></h1>
    <div class="card">
      <dl class="fields">
        <dt>group (scope)</dt>
        <dd>${letter.groupId}</dd>
        <dt>record</dt>
        <dd>
          ${letter.topic}/${letter.partition}/${letter.offset}${letter.recordTimestamp === null ? '' : ` (${time(letter.recordTimestamp)})`}
        </dd>
        <dt>message id</dt>
        <dd class="mono" data-field="message-id">${letter.messageId ?? '(invalid)'}</dd>
        <dt>reason</dt>
        <dd>${letter.reason}</dd>
        <dt>attempts</dt>
        <dd>${letter.attempts}</dd>
        <dt>created</dt>
        <dd>${time(letter.createdAt)}</dd>
        ${
          letter.resolvedAt === null
            ? ''
            : html`<dt>resolved</dt>
                <dd>${time(letter.resolvedAt)}</dd>`
        }
        ${
          letter.resolution === null
            ? ''
            : html`<dt>resolution</dt>
                <dd>${letter.resolution}</dd>`
        }
        <dt>key</dt>
        <dd class="mono">
          ${letter.key === null ? '(none)' : v.payloads ? printable(letter.key) : hidden(letter.key.length, 'keys')}
        </dd>
      </dl>
    </div>
    ${
      letter.status === 'open'
        ? v.write
          ? html`<div class="actions">
              <a class="button" href="${v.base}/dead-letters/confirm${query({ action: 'retry', id: letter.id })}"
                >Retry…</a
              >
              <a
                class="button danger"
                href="${v.base}/dead-letters/confirm${query({ action: 'discard', id: letter.id })}"
                >Discard…</a
              >
            </div>`
          : readOnlyNote()
        : ''
    }
    <h2>Error</h2>
    <pre data-field="error">${formatStoredError(letter.error).join('\n')}</pre>
    <h2>Value</h2>
    ${
      letter.value === null
        ? html`<p class="muted">(none: a tombstone)</p>`
        : v.payloads
          ? html`<pre data-field="value">${printable(letter.value)}</pre>`
          : html`<p data-field="value">${hidden(letter.value.length)}</p>`
    }
    <h2>Headers</h2>
    ${
      letter.headers.length === 0
        ? html`<p class="muted">none</p>`
        : html`<table>
            <thead>
              <tr>
                <th>key</th>
                <th>value</th>
              </tr>
            </thead>
            <tbody>
              ${letter.headers.map(header)}
            </tbody>
          </table>`
    }`;
}

export function confirmDeadLetters(v: ViewContext, action: 'retry' | 'discard', letters: readonly DeadLetter[]): Html {
  const open = letters.filter((l) => l.status === 'open');
  const verb = action === 'retry' ? 'Retry' : 'Discard';
  return html`<h1>${verb} ${open.length} dead letter${open.length === 1 ? '' : 's'}?</h1>
    ${action === 'retry' && !v.canRetry ? html`<p class="flash error">This console was started without the consumer's handlers, so it cannot retry: start it with <code>--handlers &lt;module&gt;</code> (or <code>handlers</code> when mounted).</p>` : ''}
    <table>
      <thead>
        <tr>
          <th>id</th>
          <th>group</th>
          <th>record</th>
          <th>message id</th>
          <th>reason</th>
          <th>status</th>
        </tr>
      </thead>
      <tbody>
        ${letters.map(
          (l) =>
            html`<tr>
              <td>${l.id}</td>
              <td>${l.groupId}</td>
              <td>${l.topic}/${l.partition}/${l.offset}</td>
              <td class="mono">${l.messageId ?? '(invalid)'}</td>
              <td>${l.reason}</td>
              <td><span class="pill ${l.status}">${l.status}</span></td>
            </tr>`,
        )}
      </tbody>
    </table>
    ${letters.length > open.length ? html`<p class="muted">${letters.length - open.length} of them are not open and are left as they are.</p>` : ''}
    <form class="stack" method="post" action="${v.base}/dead-letters/${action}">
      ${csrfField(v)} ${open.map((l) => html`<input type="hidden" name="id" value="${l.id}" />`)}
      ${action === 'retry' ? html`<p class="muted">Each one re-runs its handler in a fresh transaction: on success its effects, its inbox row and the dead letter commit together.</p>` : html`<label>why (kept with each dead letter) <input name="reason" required maxlength="500" /></label>`}
      <div class="actions">
        <button
          type="submit"
          class="${action === 'discard' ? 'danger' : ''}"
          ${open.length === 0 || (action === 'retry' && !v.canRetry) ? html` disabled` : ''}
        >
          Confirm: ${verb.toLowerCase()} ${open.length}
        </button>
        <a href="${v.base}/dead-letters">Cancel</a>
      </div>
    </form>`;
}

export function resultsScreen(
  title: string,
  results: readonly { readonly id: string; readonly outcome: string; readonly message: string }[],
  back: Html,
): Html {
  return html`<h1>${title}</h1>
    <table>
      <thead>
        <tr>
          <th>id</th>
          <th>outcome</th>
          <th>what happened</th>
        </tr>
      </thead>
      <tbody>
        ${results.map(
          (r) =>
            html`<tr data-result="${r.id}">
              <td>${r.id}</td>
              <td><span class="pill ${r.outcome}">${r.outcome}</span></td>
              <td>${readableMessage(r.message)}</td>
            </tr>`,
        )}
      </tbody>
    </table>
    <p>${back}</p>`;
}

// ---------------------------------------------------------------- replay

export interface ReplayQuery {
  readonly group: string;
  readonly topic: string;
  readonly from: string;
  readonly to: string;
  readonly partitions: string;
}

export function replayScreen(
  v: ViewContext,
  q: ReplayQuery,
  groups: readonly { groupId: string; topics: string[] }[],
  history: readonly ReplayProgress[],
  plan: Html,
): Html {
  const topics = [...new Set(groups.flatMap((g) => g.topics))];
  return html`<h1>Replay</h1>
    ${v.hasKafka ? '' : html`<p class="flash warn">Replays need Kafka: start the console with <code>--brokers</code>.</p>`}
    <form class="filters" method="get" action="${v.base}/replay/plan">
      <label>group <input name="group" value="${q.group}" list="oncely-groups" required size="22" /></label>
      <label>topic <input name="topic" value="${q.topic}" list="oncely-topics" required size="22" /></label>
      <label
        >from <input name="from" value="${q.from}" required placeholder="offset, ISO time or earliest" size="20"
      /></label>
      <label>to (exclusive) <input name="to" value="${q.to}" placeholder="latest" size="16" /></label>
      <label>partitions <input name="partitions" value="${q.partitions}" placeholder="all, or 0,1" size="8" /></label>
      <button type="submit">Plan</button>
      <datalist id="oncely-groups">${groups.map((g) => html`<option value="${g.groupId}"></option>`)}</datalist>
      <datalist id="oncely-topics">${topics.map((t) => html`<option value="${t}"></option>`)}</datalist>
    </form>
    ${plan}
    <h2>History</h2>
    ${
      history.length === 0
        ? html`<p class="muted">No replay has been run.</p>`
        : html`<table>
            <thead>
              <tr>
                <th>id</th>
                <th>group</th>
                <th>topic</th>
                <th>range</th>
                <th>forced</th>
                <th>by</th>
                <th>at</th>
                <th>progress</th>
              </tr>
            </thead>
            <tbody>
              ${history.map(
                (r) =>
                  html`<tr>
                    <td>${r.id}</td>
                    <td>${r.groupId}</td>
                    <td>${r.topic}</td>
                    <td>${r.from} → ${r.to}</td>
                    <td>${r.forced ? html`<span class="bad">forced</span>` : 'no'}</td>
                    <td>${r.requestedBy}</td>
                    <td>${time(r.createdAt)}</td>
                    <td>
                      ${
                        r.completedAt === null
                          ? r.partitions
                              .map((p) => `p${p.partition}: at ${p.position ?? '—'} of ${p.start}–${p.end}`)
                              .join('; ')
                          : `completed ${time(r.completedAt)}`
                      }
                    </td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }`;
}

export function replayPlanSection(v: ViewContext, q: ReplayQuery, plan: ReplayPlan): Html {
  const t = plan.totals;
  const row = (label: string, p: Omit<ReplayPlan['partitions'][number], 'partition'> | null, totals = t) =>
    html`<tr class="${p === null ? 'total' : ''}">
      <td>${label}</td>
      <td>${p === null ? '' : `${p.start}–${p.end}`}</td>
      <td class="num">${p?.messages ?? totals.messages}</td>
      <td class="num">${p?.skipped ?? totals.skipped}</td>
      <td class="num">${p?.applied ?? totals.applied}</td>
      <td class="num ${(p?.atRisk ?? totals.atRisk) > 0 ? 'bad' : ''}" data-class="at-risk">
        ${p?.atRisk ?? totals.atRisk}${p?.atRiskRange ? ` (${p.atRiskRange.first}–${p.atRiskRange.last})` : ''}
      </td>
      <td class="num">${p?.deadLettered ?? totals.deadLettered}</td>
      <td class="num">${p?.gone ?? totals.gone}</td>
    </tr>`;
  return html`<section class="card" data-plan>
    <h2>
      Plan · group ${plan.groupId}${plan.inboxScope === plan.groupId ? '' : ` · inbox scope ${plan.inboxScope}`} ·
      ${plan.topic} · ${plan.from} → ${plan.to}
    </h2>
    <table>
      <thead>
        <tr>
          <th>partition</th>
          <th>range</th>
          <th class="num">messages</th>
          <th class="num">skip (in inbox)</th>
          <th class="num">apply (new)</th>
          <th class="num">at risk</th>
          <th class="num">dead-lettered</th>
          <th class="num">gone from Kafka</th>
        </tr>
      </thead>
      <tbody>
        ${plan.partitions.map((p) => row(String(p.partition), p))} ${row('total', null)}
      </tbody>
    </table>
    ${
      t.atRisk > 0
        ? html`<p class="flash error" data-at-risk="${t.atRisk}">
            ${t.atRisk} message(s) at risk: below the inbox horizon or written before the last purge, their inbox rows
            may have been purged and they could apply twice. A run is refused unless forced.
          </p>`
        : html`<p class="flash ok">Nothing at risk: a run applies only the ${t.applied} message(s) counted as new.</p>`
    }
    <p class="muted">Planned in ${plan.durationMs} ms. Nothing has moved.</p>
    ${
      v.write
        ? html`<form class="stack" method="post" action="${v.base}/replay/run">
            ${csrfField(v)} <input type="hidden" name="group" value="${q.group}" /><input
              type="hidden"
              name="topic"
              value="${q.topic}"
            />
            <input type="hidden" name="from" value="${q.from}" /><input type="hidden" name="to" value="${q.to}" /><input
              type="hidden"
              name="partitions"
              value="${q.partitions}"
            />
            ${
              t.atRisk > 0
                ? html`<label
                      ><span
                        ><input type="checkbox" name="force" value="on" /> force: apply the ${t.atRisk} at-risk
                        message(s) again if their rows were purged</span
                      ></label
                    >
                    <label
                      ><span>to force, type the group name: <code>${plan.groupId}</code></span>
                      <input name="confirm" autocomplete="off"
                    /></label>`
                : ''
            }
            <div class="actions">
              <button type="submit" class="${t.atRisk > 0 ? 'danger' : ''}">Run replay</button>
              <span class="muted">Refused while the group has live members: stop its consumers first.</span>
            </div>
          </form>`
        : readOnlyNote()
    }
  </section>`;
}

// ---------------------------------------------------------------- outbox

export function outboxScreen(
  v: ViewContext,
  counts: Record<OutboxStatus, number>,
  backlog: {
    counts: { topic: string; status: 'pending' | 'parked'; rows: number }[];
    oldestPendingAgeSeconds: number | null;
  },
  parked: readonly OutboxEntry[],
): Html {
  return html`<h1>Outbox</h1>
    <div class="card">
      <p>
        <strong data-count="pending">${counts.pending}</strong> pending ·
        <strong data-count="parked" class="${counts.parked > 0 ? 'bad' : ''}">${counts.parked}</strong> parked ·
        ${counts.sent} sent · ${counts.discarded}
        discarded${backlog.oldestPendingAgeSeconds === null ? '' : ` · oldest pending ${Math.round(backlog.oldestPendingAgeSeconds)} s old`}
      </p>
      ${backlog.counts.length === 0 ? '' : html`<p class="muted">${backlog.counts.map((c) => `${c.topic}: ${c.rows} ${c.status}`).join(' · ')}</p>`}
    </div>
    <h2>Parked events</h2>
    <form method="get" action="${v.base}/outbox/confirm">
      <table>
        <thead>
          <tr>
            <th><input type="checkbox" data-select-all aria-label="select all" /></th>
            <th>id</th>
            <th>topic</th>
            <th>key</th>
            <th>message-id</th>
            <th class="num">attempts</th>
            <th>error</th>
            <th>created</th>
          </tr>
        </thead>
        <tbody>
          ${
            parked.length === 0
              ? html`<tr>
                  <td colspan="8" class="muted">No parked events.</td>
                </tr>`
              : parked.map((e) => {
                  const last = (e.lastError ?? {}) as { code?: unknown; message?: unknown };
                  return html`<tr data-outbox="${e.id}">
                    <td><input type="checkbox" name="id" value="${e.id}" aria-label="select ${e.id}" /></td>
                    <td>${e.id}</td>
                    <td>${e.topic}</td>
                    <td class="mono">
                      ${e.key === null ? '(none)' : v.payloads ? e.key : hidden(Buffer.byteLength(e.key), 'keys')}
                    </td>
                    <td class="mono">${e.messageId}</td>
                    <td class="num">${e.attempts}</td>
                    <td>
                      ${`${typeof last.code === 'string' ? last.code : ''} ${typeof last.message === 'string' ? last.message : ''}`.trim()}
                    </td>
                    <td>${time(e.createdAt)}</td>
                  </tr>`;
                })
          }
        </tbody>
      </table>
      ${
        v.write
          ? html`<div class="actions">
              <button type="submit" name="action" value="retry">Retry selected…</button>
              <button type="submit" name="action" value="discard" class="danger">Discard selected…</button>
              <button type="submit" name="action" value="retry-all" class="secondary">Retry all parked…</button>
            </div>`
          : readOnlyNote()
      }
    </form>`;
}

export function confirmOutbox(
  v: ViewContext,
  action: 'retry' | 'discard',
  entries: readonly OutboxEntry[],
  all: boolean,
): Html {
  const verb = action === 'retry' ? 'Retry' : 'Discard';
  return html`<h1>
      ${verb} ${all ? 'every parked event' : `${entries.length} parked event${entries.length === 1 ? '' : 's'}`}?
    </h1>
    <table>
      <thead>
        <tr>
          <th>id</th>
          <th>topic</th>
          <th>message-id</th>
          <th class="num">attempts</th>
        </tr>
      </thead>
      <tbody>
        ${entries.map(
          (e) =>
            html`<tr>
              <td>${e.id}</td>
              <td>${e.topic}</td>
              <td class="mono">${e.messageId}</td>
              <td class="num">${e.attempts}</td>
            </tr>`,
        )}
      </tbody>
    </table>
    <form class="stack" method="post" action="${v.base}/outbox/${action}">
      ${csrfField(v)}
      ${all ? html`<input type="hidden" name="all" value="1" />` : entries.map((e) => html`<input type="hidden" name="id" value="${e.id}" />`)}
      ${
        action === 'retry'
          ? html`<p class="muted">Back to pending: the relay sends them again, in order per key.</p>`
          : html`<p class="muted">Never sent; the events of their keys behind them go on.</p>
              <label>why <input name="reason" required maxlength="500" /></label>`
      }
      <div class="actions">
        <button
          type="submit"
          class="${action === 'discard' ? 'danger' : ''}"
          ${entries.length === 0 ? html` disabled` : ''}
        >
          Confirm: ${verb.toLowerCase()}</button
        ><a href="${v.base}/outbox">Cancel</a>
      </div>
    </form>`;
}

// ---------------------------------------------------------------- HTTP keys

export function keysScreen(
  v: ViewContext,
  q: { scope: string; key: string },
  found: StoredKey | undefined | null,
): Html {
  return html`<h1>HTTP idempotency keys</h1>
    <form class="filters" method="get" action="${v.base}/keys">
      <label>scope <input name="scope" value="${q.scope}" required size="24" /></label>
      <label>Idempotency-Key <input name="key" value="${q.key}" required size="40" /></label>
      <button type="submit">Look up</button>
    </form>
    ${
      found === null
        ? ''
        : found === undefined
          ? html`<p class="flash warn">No key ${q.key} in scope ${q.scope} (never used, or expired and purged).</p>`
          : html`<div class="card" data-key>
              <dl class="fields">
                <dt>status</dt>
                <dd>
                  <span class="pill ${found.completed ? 'done' : 'open'}"
                    >${found.completed ? 'completed' : 'in progress'}</span
                  >
                  ${found.live ? '' : html`<span class="warn">expired</span> (a new request with it starts a new generation)`}
                </dd>
                <dt>generation</dt>
                <dd>${found.generation.toString()}</dd>
                <dt>request</dt>
                <dd>${found.method} ${found.path}</dd>
                <dt>fingerprint</dt>
                <dd class="mono">${found.fingerprint.toString('hex')}</dd>
                <dt>stored status</dt>
                <dd data-field="status-code">${found.response?.status ?? '— (in progress)'}</dd>
                ${
                  found.response === undefined
                    ? ''
                    : html`<dt>stored headers</dt>
                        <dd class="mono">${found.response.headers.map(([name]) => name).join(', ') || '(none)'}</dd>
                        <dt>stored body</dt>
                        <dd>
                          ${v.payloads ? html`<pre data-field="body">${printable(found.response.body)}</pre>` : hidden(found.response.body.length, 'stored bodies')}
                        </dd>`
                }
              </dl>
            </div>`
    }`;
}

// ---------------------------------------------------------------- audit, sign-in, errors

export function auditScreen(entries: readonly AuditEntry[]): Html {
  return html`<h1>Audit log</h1>
    <p class="muted">Every write made through the console, newest first (<code>oncely.console_audit</code>).</p>
    <table>
      <thead>
        <tr>
          <th>id</th>
          <th>at</th>
          <th>who</th>
          <th>from</th>
          <th>action</th>
          <th>target</th>
          <th>outcome</th>
          <th>result</th>
        </tr>
      </thead>
      <tbody>
        ${
          entries.length === 0
            ? html`<tr>
                <td colspan="8" class="muted">Nothing has been changed through the console.</td>
              </tr>`
            : entries.map(
                (e) =>
                  html`<tr data-audit="${e.id}">
                    <td>${e.id}</td>
                    <td>${time(e.createdAt)}</td>
                    <td>${e.actor} <span class="muted">(${e.auth})</span></td>
                    <td>${e.remoteAddress ?? '—'}</td>
                    <td>${e.action}</td>
                    <td class="mono">${shorten(JSON.stringify(e.target), 120)}</td>
                    <td><span class="pill ${e.outcome ?? 'open'}">${e.outcome ?? 'running'}</span></td>
                    <td>${shorten(e.result ?? '', 160)}</td>
                  </tr>`,
              )
        }
      </tbody>
    </table>`;
}

export function signInScreen(base: string, problem: string | undefined): Html {
  return html`<h1>Sign in</h1>
    ${problem === undefined ? '' : html`<p class="flash error" role="alert">${problem}</p>`}
    <form class="stack card" method="post" action="${base}/login" data-full>
      <label>console token <input type="password" name="token" required autocomplete="current-password" /></label>
      <label
        >your name (kept in the audit log with every change you make)
        <input name="name" maxlength="100" autocomplete="username"
      /></label>
      <div class="actions"><button type="submit">Sign in</button></div>
      <p class="muted">
        The token was printed by <code>oncely console</code> (or set with <code>--token</code> /
        <code>ONCELY_CONSOLE_TOKEN</code>).
      </p>
    </form>`;
}
