/**
 * The console's stylesheet and script, shipped inside the package as strings: nothing is fetched
 * from a CDN, nothing needs a build step, and the page works offline. The script is small and
 * hand-written (no framework): it swaps the server-rendered <main> for links, forms and live
 * updates. Without it every link and form still works as a plain page load.
 */

export const CONSOLE_CSS = `
:root { --bg: #f6f7f9; --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --accent: #2458d6;
  --ok: #17803d; --warn: #a15c00; --bad: #b42318; --card: #fff; font-family: system-ui, sans-serif; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font-size: 14px; }
header { display: flex; gap: 1.2rem; align-items: center; padding: .6rem 1.2rem; background: #1d2330; color: #fff; flex-wrap: wrap; }
header a { color: #cfd8ff; text-decoration: none; }
header a.current { color: #fff; font-weight: 600; border-bottom: 2px solid #fff; }
header .brand { color: #fff; font-weight: 700; }
header nav { display: flex; gap: 1rem; }
header .mode { margin-left: auto; color: #cfd3dc; font-size: 12px; }
header form { margin: 0; }
header button { background: none; color: #cfd8ff; border: 1px solid #56607a; }
#live { font-size: 12px; color: #9fb0d0; min-width: 9rem; }
main { padding: 1rem 1.2rem 3rem; max-width: 1400px; }
h1 { font-size: 20px; margin: .2rem 0 1rem; }
h2 { font-size: 16px; margin: 1.4rem 0 .5rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; background: var(--card); }
th, td { text-align: left; padding: .35rem .55rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .02em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
pre { background: #f0f2f6; padding: .6rem; border-radius: 4px; overflow: auto; max-height: 24rem; white-space: pre-wrap; word-break: break-all; }
.flash { padding: .6rem .8rem; border-radius: 4px; margin: 0 0 1rem; border: 1px solid; }
.flash.ok { background: #e8f6ee; border-color: #9fd3b2; color: var(--ok); }
.flash.error { background: #fdecea; border-color: #f3b0aa; color: var(--bad); }
.flash.warn { background: #fff4e0; border-color: #f1c98a; color: var(--warn); }
.muted { color: var(--muted); }
.bad { color: var(--bad); font-weight: 600; }
.warn { color: var(--warn); font-weight: 600; }
.ok { color: var(--ok); }
.hidden-value { color: var(--muted); font-style: italic; }
form.filters { display: flex; flex-wrap: wrap; gap: .6rem; align-items: end; margin-bottom: 1rem; }
form.filters label, form.stack label { display: flex; flex-direction: column; gap: .2rem; font-size: 12px; color: var(--muted); }
form.stack { display: flex; flex-direction: column; gap: .7rem; max-width: 32rem; }
input, select, button { font: inherit; padding: .3rem .5rem; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
button, a.button { cursor: pointer; background: var(--accent); color: #fff; border: 1px solid var(--accent); }
a.button { display: inline-block; padding: .3rem .6rem; border-radius: 4px; text-decoration: none; }
button.danger, a.button.danger { background: var(--bad); border-color: var(--bad); }
button.secondary { background: #fff; color: var(--accent); }
button:disabled { opacity: .5; cursor: not-allowed; }
.actions { display: flex; gap: .5rem; margin: .6rem 0; align-items: center; flex-wrap: wrap; }
dl.fields { display: grid; grid-template-columns: 10rem 1fr; gap: .3rem 1rem; margin: 0; }
dl.fields dt { color: var(--muted); }
dl.fields dd { margin: 0; }
.pill { display: inline-block; padding: 0 .45rem; border-radius: 9px; font-size: 12px; border: 1px solid var(--line); }
.pill.open, .pill.parked, .pill.refused, .pill.failed { border-color: #f3b0aa; color: var(--bad); }
.pill.retried, .pill.done, .pill.processed { border-color: #9fd3b2; color: var(--ok); }
.chart { display: block; width: 100%; max-width: 420px; height: 70px; background: #f8f9fb; border: 1px solid var(--line); border-radius: 4px; }
.chart .bar { fill: #9db4ef; }
.chart .lag { fill: none; stroke: var(--bad); stroke-width: 1.5; }
.chart .axis { stroke: var(--line); }
.chart-legend { font-size: 12px; color: var(--muted); }
.grid2 { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 1fr); gap: 1rem; align-items: start; }
`;

export const CONSOLE_JS = `'use strict';
(function () {
  var base = document.body.getAttribute('data-base') || '';
  var refreshMs = Number(document.body.getAttribute('data-refresh') || '5') * 1000;
  var busy = false;

  function main() { return document.querySelector('main'); }
  function live(text) { var el = document.getElementById('live'); if (el) el.textContent = text; }
  function stamp() { live('updated ' + new Date().toLocaleTimeString()); }
  function ours(url) { return url.origin === location.origin && (url.pathname === base || url.pathname.indexOf(base + '/') === 0 || base === ''); }

  function markNav() {
    var path = location.pathname.slice(base.length) || '/';
    document.querySelectorAll('header nav a').forEach(function (a) {
      var target = new URL(a.href).pathname.slice(base.length) || '/';
      var current = target === '/' ? path === '/' : path.indexOf(target) === 0;
      a.classList.toggle('current', current);
    });
  }

  function swap(text) {
    var template = document.createElement('template');
    template.innerHTML = text;
    var next = template.content.querySelector('main');
    var title = template.content.querySelector('title');
    if (!next) return false;
    main().replaceWith(next);
    if (title) document.title = title.textContent;
    markNav();
    stamp();
    return true;
  }

  // Fetches a page's <main> (the server answers X-Oncely-Fragment with it alone) and swaps it in.
  function load(url, init, history_) {
    busy = true;
    init = init || {};
    init.headers = Object.assign({ 'x-oncely-fragment': '1' }, init.headers || {});
    init.credentials = 'same-origin';
    return fetch(url, init).then(function (response) {
      if (response.status === 401) { location.href = url; return; }
      return response.text().then(function (text) {
        if (!swap(text)) { location.href = url; return; }
        var canonical = main().getAttribute('data-url') || response.url;
        if (history_ === 'push') history.pushState(null, '', canonical);
        else if (history_ === 'replace') history.replaceState(null, '', canonical);
        if (history_) window.scrollTo(0, 0);
      });
    }).catch(function () {
      live('connection lost; retrying');
    }).finally(function () { busy = false; });
  }

  document.addEventListener('click', function (event) {
    var a = event.target.closest && event.target.closest('a[href]');
    if (!a || a.target || a.hasAttribute('download') || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    var url = new URL(a.href, location.href);
    if (!ours(url) || a.hasAttribute('data-full')) return;
    event.preventDefault();
    load(url.href, {}, 'push');
  });

  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (form.hasAttribute('data-full')) return;
    var data = new FormData(form, event.submitter || undefined);
    var params = new URLSearchParams();
    data.forEach(function (value, key) { if (typeof value === 'string') params.append(key, value); });
    var action = new URL(form.getAttribute('action') || location.href, location.href);
    if (!ours(action)) return;
    event.preventDefault();
    form.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    if ((form.getAttribute('method') || 'get').toLowerCase() === 'post') {
      load(action.pathname, { method: 'POST', body: params, headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 'push');
    } else {
      params.forEach(function (value, key) { if (value === '') params.delete(key); });
      var query = params.toString();
      load(action.pathname + (query ? '?' + query : ''), {}, 'push');
    }
  });

  // Select-all boxes and typed confirmations.
  document.addEventListener('change', function (event) {
    var box = event.target;
    if (box.hasAttribute && box.hasAttribute('data-select-all')) {
      box.form.querySelectorAll('input[type=checkbox][name=id]').forEach(function (b) { b.checked = box.checked; });
    }
  });
  document.addEventListener('input', function (event) {
    var input = event.target;
    var expected = input.getAttribute && input.getAttribute('data-confirm-match');
    if (expected === null || expected === undefined) return;
    var button = input.form && input.form.querySelector('button[data-needs-confirm]');
    if (button) button.disabled = input.value !== expected;
  });

  window.addEventListener('popstate', function () { load(location.href, {}, null); });

  // Live updates: the page's <main data-live> is fetched again, unless the operator is in the middle
  // of something (a field focused, rows ticked) or the tab is hidden.
  setInterval(function () {
    var m = main();
    if (busy || document.hidden || !m || !m.hasAttribute('data-live')) return;
    var focused = document.activeElement;
    if ((focused && focused !== document.body && m.contains(focused) && /INPUT|SELECT|TEXTAREA/.test(focused.tagName)) ||
        m.querySelector('input[type=checkbox][name=id]:checked')) {
      live('live updates paused while you select');
      return;
    }
    load(location.href, {}, null);
  }, refreshMs);

  markNav();
  stamp();
})();
`;
