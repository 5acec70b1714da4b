// citysense operations dashboard. Plain JS, no build step; uPlot is the only
// dependency (vendored, global `uPlot`). Every string from the API reaches the
// page through textContent / setAttribute, never innerHTML.
// One file of ~1,300 lines on purpose: the binary embeds its assets as a
// fixed list and the page must run from file without a bundler; the
// sections below (`// ---------- name ----------`) are its modules, sharing
// one closure's state.
'use strict';
(() => {
const API = '/api/v1';
const LS_BY = 'citysense.ackBy';
const LS_SOUND = 'citysense.sound';
const SEVERITIES = ['emergency', 'critical', 'warning', 'info'];
const SEV_RANK = { info: 1, warning: 2, critical: 3, emergency: 4 };
const POLL_MS = 5000;
const ALERT_POLL_MS = 15000;
const HISTORY_MAX = 20;
const STALE_MAX_MS = 60000; // stale after this long without a reading, whatever the interval
const STALE_MIN_MS = 10000; // floor of 3x interval, so 5 s polling never flickers a 1 s sensor
const RANGES = {
  '1h': { from: '-1h', step: '10s', stepMs: 10e3, spanMs: 3600e3, label: 'Last hour' },
  '1d': { from: '-24h', step: '5m', stepMs: 300e3, spanMs: 86400e3, label: 'Last day' },
  '1w': { from: '-7d', step: '30m', stepMs: 1800e3, spanMs: 604800e3, label: 'Last week' },
};
const COLORS = {
  ok: '#2fbf71', info: '#f2c94c', warning: '#ff9f1c', critical: '#ff4d4f', emergency: '#ff1f5a',
  stale: '#7d8794', offline: '#8e5cd9', line: '#5aa9ff', limit: '#ff4d4f',
};

const params = new URLSearchParams(location.search);
const WALL = params.get('mode') === 'wall' || (params.has('wall') && !['0', 'false'].includes(params.get('wall')));
if (WALL) { document.body.classList.add('wall'); document.documentElement.classList.add('wall'); }

// ---------- access token ----------
// With [[auth.token]] on the collector every API call needs a bearer token.
// It lives in sessionStorage (or localStorage when "remember" was ticked) and
// only ever travels in the Authorization header or, for EventSource, which
// cannot send headers, in the stream URL's access_token. Never in the DOM,
// logs or error texts.
const TOKEN_KEY = 'citysense.token';
function store(kind) { try { return window[kind]; } catch (_) { return null; } }
function readToken() {
  for (const k of ['sessionStorage', 'localStorage']) {
    const st = store(k);
    const t = st && st.getItem(TOKEN_KEY);
    if (t) return t;
  }
  return '';
}
function saveToken(t, remember) {
  const keep = store(remember ? 'localStorage' : 'sessionStorage');
  const drop = store(remember ? 'sessionStorage' : 'localStorage');
  if (drop) drop.removeItem(TOKEN_KEY);
  if (keep) keep.setItem(TOKEN_KEY, t);
}
function forgetToken() {
  for (const k of ['sessionStorage', 'localStorage']) { const st = store(k); if (st) st.removeItem(TOKEN_KEY); }
}
// A wall display that cannot type gets ?token=… once: keep it for this tab
// and take it out of the visible URL (and history) straight away.
if (params.has('token')) {
  const t = (params.get('token') || '').trim();
  if (WALL && t) saveToken(t, false);
  params.delete('token');
  const q = params.toString();
  history.replaceState(history.state, '', location.pathname + (q ? '?' + q : '') + location.hash);
}
let token = readToken();
// Set by a 401 until a token is accepted: polling pauses meanwhile.
let authWait = false;

// ---------- state ----------
const S = {
  sensors: new Map(),   // id -> sensor view from /sensors, kept current by SSE readings
  gateways: new Map(),  // id -> gateway view
  open: new Map(),      // alert id -> open alert
  resolved: [],         // newest first
  rules: new Map(),     // rule id -> rule
  interval: new Map(),  // sensor id -> estimated reporting interval (ms)
  lastTs: new Map(),    // sensor id -> newest reading ts seen over SSE
  skew: 0,              // server clock minus ours (ms), from the Date header when large
  detail: null,         // open sensor detail
  dirty: true,
  mapKey: '',
  alertsDirty: true,
  lastEventAt: Date.now(),
  knownAlerts: new Set(),
  fresh: new Map(),     // alert id -> until when its row is highlighted as new
  rowErrors: new Map(), // alert id -> { msg, until }: a refused ack / resolve, shown on the row
};
const now = () => Date.now() + S.skew;

// ---------- helpers ----------
const $ = (id) => document.getElementById(id);
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}
const SVGNS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}
function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}
function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k == null || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}
// replaceChildren that skips null / false like h() does.
function put(el, ...kids) {
  el.replaceChildren();
  append(el, kids);
}
function setText(el, text) {
  const t = String(text);
  if (el.textContent !== t) el.textContent = t;
}
function setAttr(el, k, v) {
  const t = String(v);
  if (el.getAttribute(k) !== t) el.setAttribute(k, t);
}

function fmtAge(ms) {
  if (ms == null || !isFinite(ms)) return '—';
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' m ' + String(s % 60).padStart(2, '0') + ' s';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + String(Math.floor(s / 60) % 60).padStart(2, '0') + ' m';
  return Math.floor(s / 86400) + ' d ' + (Math.floor(s / 3600) % 24) + ' h';
}
function fmtDur(ms) {
  if (ms == null) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
  return fmtAge(ms);
}
// A gateway's clock against the collector's. The API's clock_offset_ms is the
// collector's time minus the gateway's, so a gateway ahead has a negative one.
function fmtClock(offsetMs) {
  if (offsetMs == null || !isFinite(offsetMs)) return '—';
  const ahead = -offsetMs;
  const a = Math.abs(ahead);
  const mag = a < 1000 ? Math.round(a) + ' ms'
    : a < 120000 ? (a / 1000).toFixed(1) + ' s'
    : a < 7200000 ? (a / 60000).toFixed(1) + ' min'
    : a < 172800000 ? (a / 3600000).toFixed(1) + ' h'
    : a < 63115200000 ? (a / 86400000).toFixed(1) + ' d'
    : (a / 31557600000).toFixed(a < 315576000000 ? 1 : 0) + ' y';
  if (Math.round(a) === 0) return '±0 ms';
  return (ahead >= 0 ? '+' : '-') + mag + (ahead >= 0 ? ' ahead' : ' behind');
}
function fmtNum(v) {
  if (v == null || !isFinite(v)) return '—';
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en');
  if (a >= 100) return String(Math.round(v * 10) / 10);
  return String(Math.round(v * 100) / 100);
}
const UNIT = { 'ug/m3': 'µg/m³', degC: '°C', m3s: 'm³/s' };
const fmtUnit = (u) => (u ? UNIT[u] || u : '');
const withUnit = (v, u) => fmtNum(v) + (u && v != null ? ' ' + fmtUnit(u) : '');
const sevOf = (a) => (SEV_RANK[a.severity] ? a.severity : 'info');

// Every request to the collector goes through here. `opts.token` overrides the
// stored token (the sign-in dialog tries a token before keeping it).
async function api(path, opts) {
  opts = Object.assign({}, opts);
  const trial = 'token' in opts;
  const used = trial ? opts.token : token;
  delete opts.token;
  const headers = Object.assign({ Accept: 'application/json' }, opts.headers);
  if (used) headers.Authorization = 'Bearer ' + used;
  opts.headers = headers;
  const res = await fetch(API + path, opts);
  const date = res.headers.get('Date');
  if (date) {
    const d = Date.parse(date) - Date.now();
    S.skew = Math.abs(d) > 5000 ? d : 0;
  }
  let body = null;
  try { body = await res.json(); } catch (_) { /* empty or not JSON */ }
  if (!res.ok) {
    const err = new Error((body && body.error) || res.status + ' ' + res.statusText);
    err.status = res.status;
    // Only a refusal of the token in use asks for a new one (not a late
    // answer to a request sent with a token replaced since, nor a trial).
    if (res.status === 401 && !trial && used === token) needSignIn();
    throw err;
  }
  return body;
}
function post(path, body) {
  return api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}

let toastTimer = 0;
function toast(msg, bad) {
  const t = $('toast');
  t.textContent = msg;
  t.className = bad ? 'bad' : '';
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
}

// ---------- sensors ----------
function unitOf(sn, metric) {
  const m = sn && sn.metrics.find((x) => x.metric === metric);
  return m ? m.unit : null;
}
function alertsFor(id) {
  const out = [];
  for (const a of S.open.values()) if (a.sensor === id) out.push(a);
  return out;
}
function topSeverity(alerts) {
  let best = null;
  for (const a of alerts) if (!best || SEV_RANK[sevOf(a)] > SEV_RANK[best]) best = sevOf(a);
  return best;
}
// The server's stale_after_ms when the last poll brought one, so page and
// API apply one rule to one arrival time; between polls the page re-derives
// the state from last_seen_ms (moved on by SSE readings). A sensor first seen
// over SSE falls back to the interval estimated here.
function staleLimit(sn) {
  if (sn.stale_after_ms != null) return sn.stale_after_ms;
  const iv = S.interval.get(sn.id);
  return iv ? Math.min(STALE_MAX_MS, Math.max(3 * iv, STALE_MIN_MS)) : STALE_MAX_MS;
}
function sensorState(sn) {
  const gw = sn.gateway && S.gateways.get(sn.gateway);
  if (gw && gw.status === 'offline') return 'offline';
  if (sn.last_seen_ms == null || now() - sn.last_seen_ms > staleLimit(sn)) return 'stale';
  if (alertsFor(sn.id).length) return 'alerting';
  return 'ok';
}
function markerColor(state, sev) {
  if (state === 'alerting') return COLORS[sev] || COLORS.warning;
  return COLORS[state];
}

function mergeSensors(list) {
  const next = new Map();
  for (const s of list) {
    const old = S.sensors.get(s.id);
    if (old) {
      // Keep values newer than the poll that arrived over SSE meanwhile.
      for (const m of s.metrics) {
        const o = old.metrics.find((x) => x.metric === m.metric);
        if (o && o.ts_ms != null && (m.ts_ms == null || o.ts_ms > m.ts_ms)) Object.assign(m, { ts_ms: o.ts_ms, value: o.value, quality: o.quality });
      }
      for (const o of old.metrics) if (!s.metrics.some((m) => m.metric === o.metric)) s.metrics.push(o);
      if (old.last_seen_ms != null && (s.last_seen_ms == null || old.last_seen_ms > s.last_seen_ms)) s.last_seen_ms = old.last_seen_ms;
    }
    next.set(s.id, s);
  }
  S.sensors = next;
  S.dirty = true;
}

function onReading(r) {
  let sn = S.sensors.get(r.sensor);
  if (!sn) {
    // Not yet in the list (new, uncatalogued): the next poll brings the full entry.
    sn = { id: r.sensor, kind: null, name: null, district: null, owner: null, lat: null, lon: null, installed: null, gateway: null, catalogued: false, last_seen_ms: null, metrics: [] };
    S.sensors.set(r.sensor, sn);
  }
  let m = sn.metrics.find((x) => x.metric === r.metric);
  if (!m) { m = { metric: r.metric, unit: null }; sn.metrics.push(m); sn.metrics.sort((a, b) => (a.metric < b.metric ? -1 : 1)); }
  if (m.ts_ms == null || r.ts_ms >= m.ts_ms) Object.assign(m, { ts_ms: r.ts_ms, value: r.value, quality: r.quality });
  // Like the server's last_seen_ms: when the reading arrived, not its sample time.
  const seen = now();
  if (sn.last_seen_ms == null || seen > sn.last_seen_ms) sn.last_seen_ms = seen;
  const last = S.lastTs.get(r.sensor);
  if (last != null && r.ts_ms > last + 50) {
    const d = r.ts_ms - last;
    const iv = S.interval.get(r.sensor);
    S.interval.set(r.sensor, iv ? iv * 0.8 + d * 0.2 : d);
  }
  if (last == null || r.ts_ms > last) S.lastTs.set(r.sensor, r.ts_ms);
  S.dirty = true;
  if (S.detail && S.detail.id === r.sensor) chartAppend(r);
}

// ---------- alerts ----------
function upsertAlert(a) {
  if (a.state === 'resolved') {
    S.open.delete(a.id);
    S.resolved = [a].concat(S.resolved.filter((x) => x.id !== a.id)).slice(0, HISTORY_MAX);
  } else {
    const old = S.open.get(a.id);
    if (!old || (a.updated_ts_ms || 0) >= (old.updated_ts_ms || 0) || a.state !== old.state) S.open.set(a.id, a);
  }
  S.alertsDirty = true;
  S.dirty = true;
}
function onAlertEvent(ev) {
  const { event, ...a } = ev;
  const isNew = !S.knownAlerts.has(a.id);
  S.knownAlerts.add(a.id);
  upsertAlert(a);
  if ((event === 'fired' || event === 'escalated' || (isNew && a.state === 'firing')) && SEV_RANK[sevOf(a)] >= SEV_RANK.critical) {
    beep(sevOf(a));
  }
  if (event === 'fired' || isNew) S.fresh.set(a.id, Date.now() + 10000);
  renderAlerts();
}

async function refreshAlerts() {
  if (authWait) return;
  const started = now();
  const [open, resolved] = await Promise.all([api('/alerts?state=open'), api('/alerts?state=resolved')]);
  const next = new Map();
  for (const a of open) {
    const local = S.open.get(a.id);
    next.set(a.id, local && (local.updated_ts_ms || 0) > (a.updated_ts_ms || 0) ? local : a);
    S.knownAlerts.add(a.id);
  }
  const resolvedIds = new Set(resolved.map((a) => a.id));
  // An alert that fired over SSE after this request left is kept.
  for (const [id, a] of S.open) if (!next.has(id) && !resolvedIds.has(id) && (a.updated_ts_ms || 0) > started - 2000) next.set(id, a);
  S.open = next;
  resolved.sort((a, b) => (b.resolved_ts_ms || b.updated_ts_ms || 0) - (a.resolved_ts_ms || a.updated_ts_ms || 0));
  for (const a of resolved) S.knownAlerts.add(a.id);
  S.resolved = resolved.slice(0, HISTORY_MAX);
  S.alertsDirty = true;
  S.dirty = true;
  renderAlerts();
}

function alertSubject(a) {
  const rule = S.rules.get(a.rule);
  if ((rule && (rule.kind === 'gateway_offline' || rule.kind === 'clock_skew')) || (!a.metric && S.gateways.has(a.sensor) && !S.sensors.has(a.sensor))) return 'gateway ' + a.sensor;
  return a.sensor;
}
function alertCondition(a) {
  const rule = S.rules.get(a.rule);
  const sn = S.sensors.get(a.sensor);
  const unit = unitOf(sn, a.metric);
  if (rule && rule.kind === 'gateway_offline') return 'gateway offline';
  // value and threshold in seconds; value is the collector's time minus the gateway's.
  if (rule && rule.kind === 'clock_skew') return 'clock ' + fmtClock(a.value == null ? null : a.value * 1000) + (a.threshold != null ? ' (limit ±' + fmtDur(a.threshold * 1000) + ')' : '');
  if (rule && rule.kind === 'stale') return 'no readings' + (rule.for ? ' for > ' + rule.for : '');
  const op = (rule && rule.op) || '>';
  if (a.value == null && a.threshold == null) return a.metric || a.rule;
  return withUnit(a.value, unit) + (a.threshold != null ? ' ' + op + ' ' + fmtNum(a.threshold) : '');
}
function sortedOpen() {
  return [...S.open.values()].sort((a, b) => SEV_RANK[sevOf(b)] - SEV_RANK[sevOf(a)] || (b.started_ts_ms || 0) - (a.started_ts_ms || 0) || b.id - a.id);
}

function sensorLink(id, label) {
  if (!S.sensors.has(id)) return h('span', { class: 'sensor-id' }, label || id);
  return h('button', { type: 'button', class: 'sensor-link', 'data-open-sensor': id, title: 'Open sensor ' + id }, label || id);
}

function alertRow(a) {
  const sev = sevOf(a);
  const fresh = (S.fresh.get(a.id) || 0) > Date.now();
  const row = h('div', {
    class: 'alert sev-' + sev + ' ' + a.state + (fresh ? ' fresh' : '') + (a.escalated ? ' escalated' : ''),
    'data-alert-id': a.id, 'data-state': a.state, 'data-severity': sev, tabindex: '-1',
  });
  const subject = alertSubject(a);
  append(row, [
    h('div', { class: 'a-main' },
      h('span', { class: 'badge sev-' + sev }, sev),
      subject === a.sensor ? sensorLink(a.sensor) : h('span', { class: 'sensor-id' }, subject),
      a.metric ? h('span', { class: 'a-metric' }, a.metric) : null,
      h('span', { class: 'a-value' }, alertCondition(a))),
    h('div', { class: 'a-meta' },
      h('span', { class: 'a-rule' }, a.rule),
      h('span', null, 'for ', h('span', { class: 'age', 'data-since': a.started_ts_ms }, fmtAge(now() - a.started_ts_ms))),
      a.escalated ? h('span', { class: 'tag esc' }, 'escalated') : null,
      a.state === 'acknowledged' ? h('span', { class: 'tag ack-tag' }, 'ack by ', a.acked_by || '?') : h('span', { class: 'tag firing-tag' }, 'firing')),
    a.note ? h('div', { class: 'a-note' }, '“', a.note, '”') : null,
    WALL ? null : h('div', { class: 'a-actions' },
      a.state === 'firing' ? h('button', { type: 'button', class: 'control ack', 'data-id': a.id }, 'Acknowledge') : null,
      h('button', { type: 'button', class: 'control resolve', 'data-id': a.id }, 'Resolve')),
    !WALL && S.rowErrors.has(a.id) ? h('p', { class: 'a-error error', role: 'alert' }, S.rowErrors.get(a.id).msg) : null,
  ]);
  return row;
}

function renderAlerts() {
  S.alertsDirty = false;
  const box = $('alerts');
  const list = sortedOpen();
  const frag = document.createDocumentFragment();
  if (!list.length) frag.append(h('div', { class: 'empty' }, 'No open alerts'));
  for (const sev of SEVERITIES) {
    const group = list.filter((a) => sevOf(a) === sev);
    if (!group.length) continue;
    frag.append(h('div', { class: 'sev-head sev-' + sev }, sev, ' · ', group.length));
    for (const a of group) frag.append(alertRow(a));
  }
  const focused = document.activeElement && box.contains(document.activeElement) ? document.activeElement : null;
  const refocus = focused && focused.closest('[data-alert-id]') && [focused.closest('[data-alert-id]').dataset.alertId, focused.className];
  put(box, frag);
  if (refocus) {
    const r = box.querySelector('[data-alert-id="' + CSS.escape(refocus[0]) + '"]');
    const b = r && [...r.querySelectorAll('button')].find((x) => x.className === refocus[1]);
    if (b) b.focus();
  }
  setText($('alerts-count'), list.length ? '(' + list.length + ')' : '');
  if (WALL) fitWallAlerts();

  const hist = $('history');
  put(hist, ...S.resolved.map((a) => h('li', { class: 'hist sev-' + sevOf(a), 'data-resolved-id': a.id },
    h('span', { class: 'badge sev-' + sevOf(a) }, sevOf(a)),
    alertSubject(a) === a.sensor ? sensorLink(a.sensor) : h('span', { class: 'sensor-id' }, alertSubject(a)),
    a.metric ? h('span', { class: 'a-metric' }, a.metric) : null,
    h('span', { class: 'a-rule' }, a.rule),
    h('span', { class: 'muted' }, 'resolved ', h('span', { class: 'age', 'data-since': a.resolved_ts_ms || a.updated_ts_ms }, fmtAge(now() - (a.resolved_ts_ms || a.updated_ts_ms))), ' ago',
      a.resolved_by ? ' by ' + a.resolved_by : ' (cleared)',
      a.acked_by && a.acked_by !== a.resolved_by ? ', ack ' + a.acked_by : '',
      a.resolved_ts_ms ? ', lasted ' + fmtAge(a.resolved_ts_ms - a.started_ts_ms) : ''),
    a.note ? h('span', { class: 'a-note' }, '“', a.note, '”') : null)));
  if (!S.resolved.length) hist.append(h('li', { class: 'empty' }, 'None yet'));
  renderBanner();
  renderKpis();
  updateMarkers();
}

// Wall: show what fits, say how many more.
function fitWallAlerts() {
  const box = $('alerts');
  const more = $('alerts-more');
  const rows = [...box.children];
  rows.forEach((r) => { r.hidden = false; });
  const limit = box.getBoundingClientRect().bottom;
  let hidden = 0;
  for (const r of rows) {
    if (r.getBoundingClientRect().bottom > limit + 1) { r.hidden = true; if (r.classList.contains('alert')) hidden++; }
  }
  for (const r of rows) {
    if (!r.classList.contains('sev-head') || r.hidden) continue;
    const next = r.nextElementSibling;
    if (!next || next.hidden) r.hidden = true;
  }
  more.hidden = !hidden;
  more.textContent = hidden ? '+ ' + hidden + ' more open alert' + (hidden > 1 ? 's' : '') : '';
}

function renderBanner() {
  const b = $('banner');
  const urgent = sortedOpen().filter((a) => a.state === 'firing' && SEV_RANK[sevOf(a)] >= SEV_RANK.critical);
  if (!urgent.length) { b.hidden = true; put(b); document.body.classList.remove('has-banner'); return; }
  const a = urgent[0];
  const sev = sevOf(a);
  b.className = 'sev-' + sev;
  b.dataset.alertId = a.id;
  put(b,
    h('span', { class: 'b-icon', 'aria-hidden': 'true' }, '⚠'),
    h('strong', null, sev.toUpperCase()),
    h('span', null, alertSubject(a), a.metric ? ' · ' + a.metric : '', ' · ', alertCondition(a), ' · ', a.rule),
    h('span', { class: 'b-age' }, 'for ', h('span', { class: 'age', 'data-since': a.started_ts_ms }, fmtAge(now() - a.started_ts_ms))),
    urgent.length > 1 ? h('span', { class: 'b-more' }, '+' + (urgent.length - 1) + ' more') : null,
    WALL ? null : h('span', { class: 'b-hint' }, 'unacknowledged — click to show'));
  b.hidden = false;
  document.body.classList.add('has-banner');
}

// ---------- acknowledge / resolve ----------
let ackId = null;
function openAck(id) {
  const a = S.open.get(id);
  if (!a) return;
  ackId = id;
  const d = $('ack-dialog');
  put($('ack-what'), h('span', { class: 'badge sev-' + sevOf(a) }, sevOf(a)), ' ', alertSubject(a), a.metric ? ' · ' + a.metric : '', ' · ', alertCondition(a), ' (', a.rule, ')');
  $('ack-by').value = localStorage.getItem(LS_BY) || 'operator';
  $('ack-note').value = '';
  $('ack-error').hidden = true;
  $('ack-submit').disabled = false;
  if (typeof d.showModal === 'function') { if (!d.open) d.showModal(); } else d.setAttribute('open', '');
  $('ack-note').focus();
}
function closeAck() {
  const d = $('ack-dialog');
  ackId = null;
  if (d.open && typeof d.close === 'function') d.close(); else d.removeAttribute('open');
}
async function submitAck(e) {
  e.preventDefault();
  if (ackId == null) return closeAck();
  const by = $('ack-by').value.trim();
  const note = $('ack-note').value.trim();
  const err = $('ack-error');
  if (!by) { err.textContent = 'Enter your name.'; err.hidden = false; $('ack-by').focus(); return; }
  localStorage.setItem(LS_BY, by);
  $('ack-submit').disabled = true;
  const id = ackId;
  try {
    const a = await post('/alerts/' + encodeURIComponent(id) + '/ack', note ? { by, note } : { by });
    S.rowErrors.delete(a.id);
    upsertAlert(a);
    renderAlerts();
    closeAck();
    toast('Alert ' + a.id + ' acknowledged by ' + by);
  } catch (ex) {
    const msg = refusalText('acknowledge', ex);
    if (ex.status === 403) {
      // Retrying cannot help: say why (the server's words) and offer another token.
      put(err, msg, ' ', h('button', { type: 'button', class: 'linkish', id: 'ack-switch-token' }, 'Sign in with another token'));
      rowError(id, msg);
    } else {
      err.textContent = msg;
      $('ack-submit').disabled = false;
    }
    err.hidden = false;
    refreshAlerts().catch(() => {});
  }
}
async function resolveAlert(id, btn) {
  if (btn) btn.disabled = true;
  const by = localStorage.getItem(LS_BY) || 'operator';
  try {
    const a = await post('/alerts/' + encodeURIComponent(id) + '/resolve', { by });
    S.rowErrors.delete(a.id);
    upsertAlert(a);
    renderAlerts();
    toast('Alert ' + a.id + ' resolved by ' + by);
  } catch (ex) {
    const msg = refusalText('resolve', ex);
    rowError(id, msg);
    toast(msg, true);
    if (btn) btn.disabled = false;
    refreshAlerts().catch(() => {});
  }
}
// What to say when the API turned an ack / resolve down; 403 is the token's role.
function refusalText(verb, ex) {
  if (ex.status === 403) return 'Your token may not ' + verb + ' alerts — ' + ex.message;
  if (ex.status === 401) return 'Could not ' + verb + ': sign in first.';
  return 'Could not ' + verb + ': ' + ex.message;
}
function rowError(id, msg) {
  S.rowErrors.set(id, { msg, until: Date.now() + 20000 });
  S.alertsDirty = true;
  renderAlerts();
}

// ---------- sign in ----------
function needSignIn() {
  authWait = true;
  clearTimeout(streamTimer);
  if (es) { es.close(); es = null; }
  setConn('down', 'sign-in needed');
  openSignIn(token ? 'The saved token was not accepted any more. Enter a valid token.' : '');
}
function tokenError(msg) {
  const e = $('token-error');
  e.textContent = msg || '';
  e.hidden = !msg;
}
function openSignIn(msg) {
  const d = $('token-dialog');
  if (d.open) return;
  if ($('ack-dialog').open) closeAck();
  $('token-input').value = '';
  $('token-remember').checked = false;
  $('token-submit').disabled = false;
  tokenError(msg);
  if (typeof d.showModal === 'function') d.showModal(); else d.setAttribute('open', '');
  $('token-input').focus();
}
async function submitToken(e) {
  e.preventDefault();
  const input = $('token-input');
  const t = input.value.trim();
  if (!t) { tokenError('Enter the access token.'); input.focus(); return; }
  $('token-submit').disabled = true;
  tokenError('');
  try {
    await api('/gateways', { token: t });
  } catch (ex) {
    $('token-submit').disabled = false;
    tokenError(ex.status === 401 ? 'This token was not accepted. Check it and try again.' : 'Could not check the token: ' + ex.message);
    input.focus();
    input.select();
    return;
  }
  saveToken(t, $('token-remember').checked);
  token = t;
  authWait = false;
  input.value = '';
  const d = $('token-dialog');
  if (d.open && typeof d.close === 'function') d.close(); else d.removeAttribute('open');
  renderSignOut();
  S.rowErrors.clear();
  toast('Signed in');
  startStream();
  await Promise.allSettled([refreshHealth(), refreshAlerts(), refreshRules()]);
  renderAlerts();
  if (!WALL) renderSensors();
  if (S.detail) loadCharts(); else openFromHash();
}
function renderSignOut() {
  $('sign-out').hidden = !token;
}
function signOut() {
  forgetToken();
  token = '';
  if (es) es.close();
  location.reload();
}

// ---------- sound ----------
let soundOn = localStorage.getItem(LS_SOUND) === '1';
let audioCtx = null;
function audio() {
  if (!audioCtx) {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return null;
    try { audioCtx = new AC(); } catch (_) { return null; }
  }
  if (audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
  return audioCtx;
}
function beep(sev) {
  if (!soundOn) return;
  const ctx = audio();
  if (!ctx) return;
  const t0 = ctx.currentTime + 0.03;
  const n = sev === 'emergency' ? 3 : 2;
  for (let i = 0; i < n; i++) {
    const o = ctx.createOscillator();
    const g = ctx.createGain();
    o.type = 'square';
    o.frequency.value = sev === 'emergency' ? 1046 : sev === 'test' ? 660 : 880;
    const t = t0 + i * 0.3;
    g.gain.setValueAtTime(0.0001, t);
    g.gain.exponentialRampToValueAtTime(0.18, t + 0.02);
    g.gain.exponentialRampToValueAtTime(0.0001, t + 0.22);
    o.connect(g).connect(ctx.destination);
    o.start(t);
    o.stop(t + 0.25);
    if (sev === 'test') break;
  }
}
function renderSound() {
  const b = $('sound');
  b.textContent = soundOn ? 'Sound: on' : 'Sound: off';
  b.setAttribute('aria-pressed', String(soundOn));
  b.classList.toggle('on', soundOn);
}

// ---------- map ----------
const map = { w: 0, h: 0, pos: new Map(), markers: new Map(), rings: new Map() };
function niceStep(span, lines) {
  const raw = span / lines;
  const steps = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10];
  return steps.find((s) => s >= raw) || 10;
}
function hull(pts) {
  if (pts.length < 3) return pts.slice();
  const p = pts.slice().sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const lo = [], up = [];
  for (const q of p) { while (lo.length >= 2 && cross(lo[lo.length - 2], lo[lo.length - 1], q) <= 0) lo.pop(); lo.push(q); }
  for (const q of p.reverse()) { while (up.length >= 2 && cross(up[up.length - 2], up[up.length - 1], q) <= 0) up.pop(); up.push(q); }
  return lo.slice(0, -1).concat(up.slice(0, -1));
}
const DISTRICT_HUES = [205, 140, 35, 280, 180, 330, 95, 20];

function drawMap() {
  const el = $('map');
  const wrap = $('map-wrap');
  const W = Math.max(200, Math.round(wrap.clientWidth));
  const H = Math.max(160, Math.round(wrap.clientHeight));
  const sensors = [...S.sensors.values()];
  const placed = sensors.filter((s) => Number.isFinite(s.lat) && Number.isFinite(s.lon));
  const unplaced = sensors.filter((s) => !(Number.isFinite(s.lat) && Number.isFinite(s.lon)));
  map.w = W; map.h = H;
  $('tip').hidden = true;
  map.pos.clear(); map.markers.clear(); map.rings.clear();
  el.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  el.setAttribute('width', W);
  el.setAttribute('height', H);
  const REM = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
  const R = WALL ? Math.round(REM * 0.65) : 8;
  const pad = R * 3 + 12;
  const tray = unplaced.length ? R * 2 + 34 : 0;
  const nodes = [];
  const defs = svg('defs', null,
    svg('pattern', { id: 'hatch', width: 5, height: 5, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
      svg('rect', { width: 5, height: 5, fill: COLORS.offline }),
      svg('line', { x1: 0, y1: 0, x2: 0, y2: 5, stroke: '#2a1748', 'stroke-width': 2.5 })));
  nodes.push(defs, svg('rect', { class: 'map-bg', x: 0, y: 0, width: W, height: H }));

  if (placed.length) {
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    for (const s of placed) {
      minLat = Math.min(minLat, s.lat); maxLat = Math.max(maxLat, s.lat);
      minLon = Math.min(minLon, s.lon); maxLon = Math.max(maxLon, s.lon);
    }
    if (maxLat - minLat < 0.005) { minLat -= 0.0025; maxLat += 0.0025; }
    if (maxLon - minLon < 0.005) { minLon -= 0.0025; maxLon += 0.0025; }
    const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
    const spanX = (maxLon - minLon) * k, spanY = maxLat - minLat;
    const scale = Math.min((W - 2 * pad) / spanX, (H - tray - 2 * pad) / spanY);
    const ox = (W - spanX * scale) / 2, oy = (H - tray - spanY * scale) / 2;
    const X = (lon) => ox + (lon - minLon) * k * scale;
    const Y = (lat) => oy + (maxLat - lat) * scale;
    const lonAt = (x) => minLon + (x - ox) / (k * scale);
    const latAt = (y) => maxLat - (y - oy) / scale;

    // Grid over the whole view, labelled at the edges.
    const grid = svg('g', { class: 'grid' });
    const latTop = latAt(0), latBot = latAt(H - tray), lonL = lonAt(0), lonR = lonAt(W);
    // One step both ways, lines at least ~100 px apart.
    const step = Math.max(niceStep(latTop - latBot, Math.max(2, (H - tray) / 100)), niceStep(lonR - lonL, Math.max(2, W / 110)));
    const dec = Math.max(0, Math.ceil(-Math.log10(step)));
    for (let v = Math.ceil(latBot / step) * step; v <= latTop; v += step) {
      const y = Y(v);
      grid.append(svg('line', { x1: 0, x2: W, y1: y, y2: y }), svg('text', { x: 4, y: y - 3, class: 'grid-label' }, v.toFixed(dec) + '°N'));
    }
    for (let v = Math.ceil(lonL / step) * step; v <= lonR; v += step) {
      const x = X(v);
      grid.append(svg('line', { x1: x, x2: x, y1: 0, y2: H - tray }), svg('text', { x: x + 3, y: H - tray - 5, class: 'grid-label' }, v.toFixed(dec) + '°E'));
    }
    nodes.push(grid);

    // Districts: a soft padded hull around their sensors, label at the centroid.
    const byDistrict = new Map();
    for (const s of placed) {
      const d = s.district || '';
      if (!d) continue;
      if (!byDistrict.has(d)) byDistrict.set(d, []);
      byDistrict.get(d).push(s);
    }
    const areas = svg('g', { class: 'districts' });
    const labels = svg('g', { class: 'district-labels' });
    const labelAt = [];
    [...byDistrict.keys()].sort().forEach((d, i) => {
      const list = byDistrict.get(d);
      const hue = DISTRICT_HUES[i % DISTRICT_HUES.length];
      const pts = hull(list.map((s) => [X(s.lon), Y(s.lat)]));
      const stroke = 'hsla(' + hue + ',45%,55%,0.13)';
      areas.append(svg('polygon', { points: pts.map((p) => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' '), fill: stroke, stroke, 'stroke-width': R * 6, 'stroke-linejoin': 'round' }));
      const cx = list.reduce((a, s) => a + X(s.lon), 0) / list.length;
      const cy = list.reduce((a, s) => a + Y(s.lat), 0) / list.length;
      labelAt.push({ d, cx, cy, hue, ys: list.map((s) => Y(s.lat)) });
    });
    // At the centroid, nudged up or down when a marker sits right under it.
    const fs = WALL ? REM * 1.3 : 15;
    const taken = [];
    for (const { d, cx, cy, hue } of labelAt) {
      const half = d.length * fs * 0.45;
      let best = cy, bestHit = Infinity;
      const ys = labelAt.find((l) => l.d === d).ys;
      const cands = [];
      for (const [dx, cx2] of [[0, cx], [1, cx + half * 0.7], [1, cx - half * 0.7]]) {
        for (const dy of [0, -1, 1, -2, 2, -3, 3]) cands.push([cx2, cy + dy * fs * 0.9, Math.abs(dy) * 0.1 + dx * 0.15]);
        cands.push([cx2, Math.min(...ys) - R - 6, 0.5 + dx * 0.15], [cx2, Math.max(...ys) + R + fs + 2, 0.6 + dx * 0.15]);
      }
      let bestX = cx;
      for (const [x, y, cost] of cands) {
        let hit = cost;
        if (x - half < 0 || x + half > W || y - fs < 0 || y > H - tray) hit += 5;
        for (const s of placed) {
          const px = X(s.lon), py = Y(s.lat);
          if (Math.abs(px - x) < half + R && py > y - fs - R && py < y + R + 2) hit++;
        }
        for (const t of taken) if (Math.abs(t.x - x) < t.half + half && Math.abs(t.y - y) < fs * 1.2) hit += 10;
        if (hit < bestHit) { bestHit = hit; best = y; bestX = x; }
      }
      taken.push({ x: bestX, y: best, half });
      labels.append(svg('text', { x: bestX, y: best, class: 'district-label', fill: 'hsl(' + hue + ',40%,75%)' }, d));
    }
    nodes.push(areas, labels);

    // Scale bar.
    const kmPerPx = 111.32 / scale;
    const km = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100].find((v) => v / kmPerPx >= (WALL ? REM * 6 : 80)) || 100;
    const len = km / kmPerPx;
    const sy = 22;
    nodes.push(svg('g', { class: 'scale' },
      svg('path', { d: 'M' + (W - len - 16) + ' ' + (sy - 5) + 'v5h' + len + 'v-5' }),
      svg('text', { x: W - 16 - len / 2, y: sy + 12 }, km + ' km')));
    for (const s of placed) map.pos.set(s.id, [X(s.lon), Y(s.lat)]);
  } else {
    nodes.push(svg('text', { x: W / 2, y: (H - tray) / 2, class: 'map-empty' }, S.sensors.size ? 'No sensor has a position in the catalogue' : 'Loading sensors…'));
  }

  if (unplaced.length) {
    const ty = H - tray;
    nodes.push(svg('g', { class: 'tray' },
      svg('line', { x1: 0, x2: W, y1: ty, y2: ty }),
      svg('text', { x: 8, y: ty + 14, class: 'tray-label' }, 'Not on the map (no position / not in catalogue):')));
    unplaced.forEach((s, i) => {
      const x = 8 + R + i * Math.max(R * 2 + 70, 90);
      if (x < W - R) map.pos.set(s.id, [x, ty + 20 + R]);
    });
  }

  const rings = svg('g', { class: 'rings' });
  const marks = svg('g', { class: 'markers' });
  const idLabels = svg('g', { class: 'id-labels' });
  for (const s of sensors) {
    const p = map.pos.get(s.id);
    if (!p) continue;
    const ring = svg('circle', { class: 'ring', cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: R + 5 });
    const c = svg('circle', {
      class: 'mk' + (s.catalogued ? '' : ' uncatalogued'), cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: R,
      'data-sensor': s.id, 'data-state': 'ok', tabindex: WALL ? null : '0', role: 'button', 'aria-label': 'sensor ' + s.id,
    }, svg('title', null, s.id));
    rings.append(ring);
    marks.append(c);
    map.markers.set(s.id, c);
    map.rings.set(s.id, ring);
    if (!Number.isFinite(s.lat) || !Number.isFinite(s.lon)) idLabels.append(svg('text', { x: p[0] + R + 4, y: p[1] + 4, class: 'tray-id' }, s.id));
  }
  nodes.push(rings, marks, idLabels);
  put(el, ...nodes);
  updateMarkers();
}

function updateMarkers() {
  for (const [id, c] of map.markers) {
    const s = S.sensors.get(id);
    if (!s) continue;
    const st = sensorState(s);
    const al = alertsFor(id);
    const sev = topSeverity(al);
    setAttr(c, 'data-state', st);
    if (sev) setAttr(c, 'data-severity', sev); else c.removeAttribute('data-severity');
    setAttr(c, 'fill', st === 'offline' ? 'url(#hatch)' : markerColor(st, sev));
    const ring = map.rings.get(id);
    const ringCls = 'ring' + (sev ? ' on sev-' + sev : '') + (al.some((a) => a.state === 'firing') ? ' firing' : '');
    setAttr(ring, 'class', ringCls);
    if (sev) setAttr(ring, 'stroke', COLORS[sev]);
    if (S.detail && S.detail.id === id) c.classList.add('selected'); else c.classList.remove('selected');
  }
}

function showTip(id, evt) {
  const s = S.sensors.get(id);
  const tip = $('tip');
  if (!s) return;
  const st = sensorState(s);
  const sev = topSeverity(alertsFor(id));
  put(tip,
    h('strong', null, s.id), s.name ? h('span', null, ' ', s.name) : null,
    h('div', { class: 'muted' }, [s.kind || 'unknown kind', s.district].filter(Boolean).join(' · ')),
    h('div', { class: 'st-' + st }, st + (sev ? ' (' + sev + ')' : ''), ' · seen ', fmtAge(now() - s.last_seen_ms), ' ago'),
    s.catalogued ? null : h('div', { class: 'flag' }, 'not in catalogue'));
  tip.hidden = false;
  const wrap = $('map-wrap').getBoundingClientRect();
  let x = evt.clientX - wrap.left + 14, y = evt.clientY - wrap.top + 14;
  if (x + tip.offsetWidth > wrap.width) x = evt.clientX - wrap.left - tip.offsetWidth - 10;
  if (y + tip.offsetHeight > wrap.height) y = evt.clientY - wrap.top - tip.offsetHeight - 10;
  tip.style.transform = 'translate(' + Math.max(0, x) + 'px,' + Math.max(0, y) + 'px)';
}

// ---------- tables ----------
const sensorRows = new Map();
function renderSensors() {
  const tbody = $('sensors');
  const filter = ($('sensor-filter').value || '').trim().toLowerCase();
  const ids = [...S.sensors.keys()];
  for (const [id, r] of sensorRows) if (!S.sensors.has(id)) { r.tr.remove(); sensorRows.delete(id); }
  let shown = 0;
  ids.forEach((id, i) => {
    const s = S.sensors.get(id);
    let r = sensorRows.get(id);
    if (!r) {
      const cells = { id: h('td'), st: h('td'), kind: h('td'), district: h('td'), vals: h('td', { class: 'vals' }), seen: h('td', { class: 'muted' }) };
      const tr = h('tr', { 'data-row': id, tabindex: '0', title: 'Open ' + id }, Object.values(cells));
      r = { tr, cells, key: '' };
      sensorRows.set(id, r);
    }
    if (tbody.children[i] !== r.tr) tbody.insertBefore(r.tr, tbody.children[i] || null);
    const st = sensorState(s);
    const sev = topSeverity(alertsFor(id));
    const key = [s.catalogued, s.kind, s.district, st, sev].join('|');
    if (key !== r.key) {
      r.key = key;
      put(r.cells.id, h('span', { class: 'mono' }, id), s.catalogued ? null : h('span', { class: 'flag' }, 'uncatalogued'));
      put(r.cells.st, h('span', { class: 'pill st-' + st + (sev ? ' sev-' + sev : '') }, st === 'alerting' ? sev : st));
      setText(r.cells.kind, s.kind || '—');
      setText(r.cells.district, s.district || '—');
    }
    setText(r.cells.vals, s.metrics.filter((m) => m.value != null).map((m) => m.metric + ' ' + withUnit(m.value, m.unit)).join(' · ') || '—');
    setText(r.cells.seen, s.last_seen_ms == null ? 'never' : fmtAge(now() - s.last_seen_ms) + ' ago');
    const hay = (id + ' ' + (s.kind || '') + ' ' + (s.district || '') + ' ' + (s.name || '') + ' ' + st).toLowerCase();
    const vis = !filter || hay.includes(filter);
    r.tr.hidden = !vis;
    if (vis) shown++;
  });
  setText($('sensors-count'), '(' + (filter ? shown + ' of ' : '') + S.sensors.size + ')');
}

// A gateway's worst condition: offline, then refusing (its batches are
// refused, so nothing of it is stored), then degraded (devices failing), then
// its connection status. Failing devices are the server's failing_devices
// (errors rose and no poll succeeded since the agent's previous health report).
function gatewayState(g) {
  if (g.status === 'offline') return 'offline';
  if (g.delivery === 'refusing') return 'refusing';
  if (failingDevices(g).length) return 'degraded';
  return g.status || 'unknown';
}
function failingDevices(g) {
  const names = g.failing_devices || [];
  return names.map((n) => (g.devices || []).find((d) => d.sensor === n) || { sensor: n });
}
function refusalLine(g) {
  const r = g.refusing;
  if (!r) return null;
  return h('div', { class: 'gw-refusing' }, h('span', { class: 'pill st-refusing' }, 'refusing'), ' batches refused: ',
    h('strong', { class: 'mono' }, r.reason), ' ×', fmtNum(r.count), ' since ',
    h('span', { class: 'age', 'data-since': r.since_ms }, fmtAge(now() - r.since_ms)), ' ago — nothing from it is stored');
}
function failingLines(g) {
  const devs = failingDevices(g);
  if (!devs.length) return null;
  return h('div', { class: 'gw-degraded' }, h('span', { class: 'pill st-degraded' }, 'degraded'), ' failing devices:',
    h('ul', { class: 'failing' }, devs.map((d) => h('li', { 'data-device': d.sensor },
      sensorLink(d.sensor),
      d.errors != null ? ' · ' + fmtNum(d.errors) + ' errors' : null,
      d.last_error ? [' · ', h('span', { class: 'last-error' }, d.last_error)] : null,
      ' · last good poll ', d.last_poll_ms == null ? 'never' : [h('span', { class: 'age', 'data-since': d.last_poll_ms }, fmtAge(now() - d.last_poll_ms)), ' ago']))));
}
// The gateway's clock: beyond [ingest.clock] max_offset (clock_state
// `skewed`) its readings with impossible times are moved to the collector's
// time; an agent whose clock reads before its build date says it is not synced.
function clockSkewed(g) {
  return g.clock_state === 'skewed';
}
function clockNotSynced(g) {
  return !!g.agent_clock && g.agent_clock.synced === false;
}
function clockCell(g) {
  const bad = clockSkewed(g) || clockNotSynced(g);
  return h('td', { class: 'num clock' + (bad ? ' warn' : ''), 'data-clock': g.clock_state || 'unknown', 'data-synced': g.agent_clock ? String(g.agent_clock.synced) : 'unknown' },
    fmtClock(g.clock_offset_ms), clockNotSynced(g) ? [' ', h('span', { class: 'pill st-degraded' }, 'not synced')] : null);
}
function clockLine(g) {
  if (!clockSkewed(g) && !clockNotSynced(g)) return null;
  return h('div', { class: 'gw-clock' }, h('span', { class: 'pill st-degraded' }, 'clock'), ' ',
    clockSkewed(g) ? [h('strong', { class: 'mono' }, fmtClock(g.clock_offset_ms)), ' of the collector — ', fmtNum(g.clock_skewed_readings || 0), g.clock_skewed_readings === 1 ? ' reading' : ' readings', ' moved to the collector\'s time'] : null,
    clockSkewed(g) && clockNotSynced(g) ? '; ' : null,
    clockNotSynced(g) ? 'the agent says its clock was never set (it reads before the agent was built)' : null);
}
function refusedLine(g) {
  const r = g.last_refused;
  if (!g.refused_readings || !r) return null;
  return h('div', { class: 'gw-refused' }, h('span', { class: 'pill st-refusing' }, 'refused'), ' ', fmtNum(g.refused_readings),
    g.refused_readings === 1 ? ' reading' : ' readings', ' of sensors it does not own; last ', sensorLink(r.sensor), ' (owned by ', h('span', { class: 'mono' }, (r.owners || []).join(', ') || '—'), ') ',
    h('span', { class: 'age', 'data-since': r.at_ms }, fmtAge(now() - r.at_ms)), ' ago');
}
// A config reload the agent refused (a SIGHUP with a broken file, or one
// renaming the gateway), from its health/ report: it goes on with the config
// it loaded before, until a reload is accepted.
function reloadRefused(g) {
  return (g.config && g.config.reload_refused) || null;
}
// An agent's time as HH:MM, with the day when it is not today's.
function fmtAt(ms) {
  const d = new Date(ms);
  const hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  return d.toDateString() === new Date(now()).toDateString() ? hm : d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + hm;
}
// The first reason without the config file's directory, cut for the wall.
function shortReason(r) {
  const first = ((r.reasons || [])[0] || '').replace(/^[^:]*\//, '');
  return first.length > 90 ? first.slice(0, 89) + '…' : first;
}
function configLine(g) {
  const r = reloadRefused(g);
  if (!r) return null;
  const more = Math.max(0, (r.reasons || []).length - 1) + (r.reasons_omitted || 0);
  return h('div', { class: 'gw-config' }, h('span', { class: 'pill st-degraded' }, 'config'),
    ' reload refused at ', h('strong', null, fmtAt(r.at_ms)), ': ', h('span', { class: 'mono reason' }, (r.reasons || [])[0] || 'no reason given'),
    ' (running the config loaded at ', fmtAt(g.config.loaded_ms), ')',
    more > 0 ? ' — ' + more + (more === 1 ? ' more reason' : ' more reasons') + ' in citysense-agent status at the gateway' : null);
}
function renderGateways() {
  renderGatewayIssues();
  const tbody = $('gateways');
  const gws = [...S.gateways.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  if (!gws.length) { put(tbody, h('tr', null, h('td', { colspan: 13, class: 'empty' }, 'No gateway has connected yet'))); return; }
  put(tbody, ...gws.map((g) => {
    const devs = g.devices || [];
    const errs = devs.reduce((n, d) => n + (d.errors || 0), 0);
    const state = gatewayState(g);
    const num = (v) => h('td', { class: 'num' }, v == null ? '—' : fmtNum(v));
    const row = h('tr', { 'data-gateway': g.id, 'data-status': g.status, 'data-state': state, 'data-delivery': g.delivery || 'ok', 'data-config': reloadRefused(g) ? 'refused' : 'ok', class: 'gw-' + state },
      h('td', { class: 'mono' }, g.id),
      h('td', null, h('span', { class: 'pill st-' + (state === 'online' ? 'ok' : state) }, state),
        state !== g.status && g.status ? h('span', { class: 'muted conn-note' }, ' ', g.status) : null),
      h('td', null, g.last_seen_ms == null ? 'never' : [h('span', { class: 'age', 'data-since': g.last_seen_ms }, fmtAge(now() - g.last_seen_ms)), ' ago']),
      num(g.buffer_depth),
      h('td', { class: 'num' }, fmtDur(g.oldest_buffered_age_ms)),
      h('td', { class: 'num' + (g.dropped_at_gateway > 0 ? ' warn' : '') }, g.dropped_at_gateway == null ? '—' : fmtNum(g.dropped_at_gateway)),
      h('td', { class: 'num' + (errs > 0 ? ' warn' : '') }, fmtNum(errs)),
      h('td', { class: 'num' }, fmtDur(g.lag_ms)),
      num(g.readings_received), num(g.duplicates),
      h('td', { class: 'num' + (g.rejected_batches > 0 ? ' warn' : '') }, fmtNum(g.rejected_batches)),
      h('td', { class: 'num refused' + (g.refused_readings > 0 ? ' warn' : '') }, fmtNum(g.refused_readings || 0)),
      clockCell(g));
    // What is wrong, in words, on a row of its own: no hover on a tablet or the wall.
    const why = [refusalLine(g), failingLines(g), refusedLine(g), clockLine(g), configLine(g)].filter(Boolean);
    if (!why.length) return row;
    return [row, h('tr', { class: 'gw-why gw-' + state + (reloadRefused(g) ? ' reload-refused' : ''), 'data-gateway-why': g.id }, h('td', { colspan: 13 }, why))];
  }));
}
// The strip under the header: every refusing or degraded gateway, skewed
// clock and refused config reload, on the wall too (which has no gateways panel).
function renderGatewayIssues() {
  const box = $('gw-issues');
  const bad = [...S.gateways.values()].filter((g) => ['refusing', 'degraded'].includes(gatewayState(g)) || clockSkewed(g) || reloadRefused(g)).sort((a, b) => (a.id < b.id ? -1 : 1));
  box.hidden = !bad.length;
  put(box, ...bad.map((g) => {
    const state = gatewayState(g);
    const r = g.refusing;
    const reload = reloadRefused(g);
    const said = [
      state === 'refusing' && r ? ['batches refused: ', h('strong', null, r.reason), ' ×' + fmtNum(r.count)] : null,
      state === 'degraded' ? ['failing: ', failingDevices(g).map((d) => d.sensor).join(', ')] : null,
      clockSkewed(g) ? ['clock ', h('strong', null, fmtClock(g.clock_offset_ms))] : null,
      reload ? h('span', { class: 'issue-config' }, h('span', { class: 'pill st-degraded' }, 'config'), ' reload refused at ', h('strong', null, fmtAt(reload.at_ms)), ': ', shortReason(reload)) : null,
    ].filter(Boolean);
    return h('div', { class: 'gw-issue gw-' + state + (reload ? ' reload-refused' : ''), 'data-gateway': g.id, 'data-state': state },
      h('span', { class: 'mono' }, g.id), ' ', h('span', { class: 'pill st-' + state }, state), ' ',
      said.map((x, i) => (i ? [' · ', x] : x)));
  }));
}

function renderKpis() {
  const counts = { ok: 0, alerting: 0, stale: 0, offline: 0 };
  for (const s of S.sensors.values()) counts[sensorState(s)]++;
  for (const k of Object.keys(counts)) setText($('kpi-' + k), counts[k]);
  // Each gateway counted once, under its worst condition.
  const gw = { online: 0, offline: 0, refusing: 0, degraded: 0 };
  for (const g of S.gateways.values()) { const st = gatewayState(g); gw[st in gw ? st : 'offline']++; }
  for (const k of Object.keys(gw)) setText($('kpi-gw-' + k), gw[k]);
  const off = gw.offline;
  $('kpi-gw-refusing').parentElement.classList.toggle('hot', gw.refusing > 0);
  $('kpi-gw-degraded').parentElement.classList.toggle('hot', gw.degraded > 0);
  const sev = { emergency: 0, critical: 0, warning: 0, info: 0 };
  for (const a of S.open.values()) sev[sevOf(a)]++;
  for (const k of SEVERITIES) {
    setText($('kpi-' + k), sev[k]);
    $('kpi-' + k).parentElement.classList.toggle('hot', sev[k] > 0);
  }
  $('kpi-alerting').parentElement.classList.toggle('hot', counts.alerting > 0);
  $('kpi-stale').parentElement.classList.toggle('hot', counts.stale > 0);
  $('kpi-offline').parentElement.classList.toggle('hot', counts.offline > 0);
  $('kpi-gw-offline').parentElement.classList.toggle('hot', off > 0);
}

// ---------- sensor detail ----------
function ruleLimits(s, metric) {
  const out = [];
  for (const r of S.rules.values()) {
    if (r.kind !== 'threshold' || r.metric !== metric || r.value == null) continue;
    const sel = r.select || {};
    if (sel.kind && sel.kind !== s.kind) continue;
    if (sel.district && sel.district !== s.district) continue;
    if (sel.gateway && sel.gateway !== s.gateway) continue;
    if (sel.sensor && !new RegExp('^' + sel.sensor.split('*').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$').test(s.id)) continue;
    out.push(r);
  }
  return out;
}

function openDetail(id) {
  const s = S.sensors.get(id);
  if (!s) return;
  closeDetail(true);
  S.detail = { id, range: (S.detail && S.detail.range) || '1h', charts: new Map(), token: 0 };
  const d = $('detail');
  d.hidden = false;
  $('grid').classList.add('has-detail');
  d.classList.toggle('uncatalogued', !s.catalogued);
  put($('detail-title'), h('span', { class: 'mono' }, s.id), s.name ? h('span', { class: 'sub' }, ' ', s.name) : null);
  const dl = (rows) => h('dl', { class: 'cat' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v == null || v === '' ? '—' : v)]));
  const units = s.metrics.filter((m) => m.unit).map((m) => m.metric + ': ' + fmtUnit(m.unit)).join(', ');
  const body = $('detail-body');
  put(body,
    s.catalogued ? null : h('div', { class: 'uncat-flag' }, 'Not in the sensor catalogue — this sensor sends data but has no catalogue entry (no owner, position or units on record).'),
    h('div', { id: 'detail-state' }),
    dl([
      ['Kind', s.kind], ['Name', s.name], ['Owner', s.owner], ['District', s.district],
      ['Position', Number.isFinite(s.lat) && Number.isFinite(s.lon) ? s.lat.toFixed(5) + ', ' + s.lon.toFixed(5) : null],
      ['Installed', s.installed], ['Gateway', s.gateway], ['Units', units],
    ]),
    h('div', { id: 'detail-alerts' }),
    h('div', { class: 'ranges', role: 'group', 'aria-label': 'Time range' },
      Object.entries(RANGES).map(([k, r]) => h('button', { type: 'button', class: 'control range' + (k === S.detail.range ? ' active' : ''), 'data-range': k, title: r.label }, k))),
    h('div', { id: 'charts' }));
  history.replaceState(null, '', '#sensor=' + encodeURIComponent(id));
  updateDetail();
  updateMarkers();
  if (!WALL) d.scrollIntoView({ block: 'nearest' });
  loadCharts();
}

function closeDetail(keepHash) {
  if (!S.detail) return;
  for (const c of S.detail.charts.values()) if (c.u) c.u.destroy();
  S.detail = null;
  $('detail').hidden = true;
  $('grid').classList.remove('has-detail');
  put($('detail-body'));
  if (!keepHash) history.replaceState(null, '', location.pathname + location.search);
  updateMarkers();
}

function updateDetail() {
  if (!S.detail) return;
  const s = S.sensors.get(S.detail.id);
  if (!s) return;
  const st = sensorState(s);
  const al = alertsFor(s.id);
  const sev = topSeverity(al);
  const box = $('detail-state');
  if (box) {
    put(box,
      h('span', { class: 'pill st-' + st + (sev ? ' sev-' + sev : '') }, st === 'alerting' ? 'alerting · ' + sev : st),
      ' last reading ', s.last_seen_ms == null ? 'never' : [h('span', { class: 'age', 'data-since': s.last_seen_ms }, fmtAge(now() - s.last_seen_ms)), ' ago'],
      (s.interval_ms || S.interval.get(s.id)) ? ' · every ~' + fmtDur(s.interval_ms || S.interval.get(s.id)) : '',
      ' · stale after ' + fmtDur(staleLimit(s)));
  }
  const ab = $('detail-alerts');
  if (ab) put(ab, ...al.map((a) => h('div', { class: 'mini-alert sev-' + sevOf(a) }, h('span', { class: 'badge sev-' + sevOf(a) }, sevOf(a)), ' ', a.rule, a.metric ? ' · ' + a.metric : '', ' · ', alertCondition(a), ' · ', a.state)));
  for (const [metric, c] of S.detail.charts) {
    const m = s.metrics.find((x) => x.metric === metric);
    if (c.latest && m) setText(c.latest, withUnit(m.value, m.unit));
  }
}

function chartWidth() {
  return Math.max(240, Math.floor($('detail-body').clientWidth - 4));
}
const pad2 = (n) => String(n).padStart(2, '0');
function xLabels(rangeKey) {
  return (u, splits) => splits.map((v) => {
    const d = new Date(v * 1000);
    const hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
    if (rangeKey === '1h') return hm;
    if (rangeKey === '1d') return d.getHours() === 0 && d.getMinutes() === 0 ? d.toLocaleDateString([], { month: 'short', day: 'numeric' }) : hm;
    return d.toLocaleDateString([], { weekday: 'short', day: 'numeric' }) + (d.getHours() || d.getMinutes() ? ' ' + hm : '');
  });
}
function makeChart(host, metric, unit, limits, data, rangeKey) {
  const axis = { stroke: '#8aa0b4', grid: { stroke: 'rgba(138,160,180,0.12)', width: 1 }, ticks: { stroke: 'rgba(138,160,180,0.2)', width: 1 } };
  const series = [{}, { label: metric, stroke: COLORS.line, width: 1.5, fill: 'rgba(90,169,255,0.12)', spanGaps: false, points: { show: false }, value: (u, v) => (v == null ? '—' : fmtNum(v)) }];
  for (const r of limits) series.push({ label: r.id + ' ' + (r.op || '') + ' ' + r.value, stroke: COLORS[r.severity] || COLORS.limit, width: 1, dash: [6, 4], points: { show: false } });
  return new uPlot({
    width: chartWidth(), height: WALL ? 220 : 160,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true } },
    axes: [Object.assign({ values: xLabels(rangeKey), space: rangeKey === '1w' ? 90 : 60 }, axis), Object.assign({ size: 56, values: (u, vals) => vals.map(fmtNum), label: fmtUnit(unit) || undefined, labelSize: 18 }, axis)],
    series,
  }, data, host);
}

async function loadCharts() {
  const D = S.detail;
  if (!D) return;
  const token = ++D.token;
  const s = S.sensors.get(D.id);
  const range = RANGES[D.range];
  for (const c of D.charts.values()) if (c.u) c.u.destroy();
  D.charts.clear();
  const box = $('charts');
  put(box);
  const metrics = s.metrics.map((m) => m.metric);
  if (!metrics.length) { box.append(h('p', { class: 'muted' }, 'No metrics reported yet.')); return; }
  const cards = metrics.map((metric) => {
    const latest = h('span', { class: 'latest' });
    const host = h('div', { class: 'chart-host' }, h('div', { class: 'chart-loading muted' }, 'loading…'));
    const card = h('div', { class: 'chart-card', 'data-metric': metric }, h('div', { class: 'chart-title' }, h('strong', null, metric), ' ', h('span', { class: 'muted' }, fmtUnit(unitOf(s, metric))), latest), host);
    box.append(card);
    return { metric, host, latest };
  });
  const results = await Promise.allSettled(metrics.map((m) =>
    api('/series?sensor=' + encodeURIComponent(D.id) + '&metric=' + encodeURIComponent(m) + '&from=' + range.from + '&step=' + range.step + '&agg=mean')));
  if (S.detail !== D || D.token !== token) return;
  results.forEach((res, i) => {
    const { metric, host, latest } = cards[i];
    put(host);
    if (res.status !== 'fulfilled') { host.append(h('p', { class: 'error' }, 'Could not load: ' + res.reason.message)); return; }
    const pts = res.value.points || [];
    const limits = ruleLimits(s, metric);
    const { xs, ys, gapS } = withGaps(pts, range.stepMs);
    const data = [xs, ys];
    for (const r of limits) data.push(xs.map(() => r.value));
    const c = { metric, stepMs: range.stepMs, spanMs: range.spanMs, gapS, data, n: 1, limits, latest, dirty: false, u: null };
    c.u = makeChart(host, metric, unitOf(s, metric), limits, data, D.range);
    if (!pts.length) host.append(h('p', { class: 'muted nodata' }, 'No data in this range.'));
    D.charts.set(metric, c);
  });
  updateDetail();
}

// The series API returns only buckets that hold data. Where two consecutive
// points lie more than GAP_INTERVALS intervals apart (the interval being the
// series' median spacing, never less than the step), a null point goes in
// between, so the line breaks (spanGaps: false) instead of bridging an outage.
const GAP_INTERVALS = 3;
function withGaps(pts, stepMs) {
  const diffs = [];
  for (let i = 1; i < pts.length; i++) if (pts[i].ts_ms > pts[i - 1].ts_ms) diffs.push(pts[i].ts_ms - pts[i - 1].ts_ms);
  diffs.sort((a, b) => a - b);
  const median = diffs.length ? diffs[diffs.length >> 1] : 0;
  const iv = Math.max(stepMs, median);
  const gapMs = GAP_INTERVALS * iv;
  const xs = [], ys = [];
  pts.forEach((p, i) => {
    if (i > 0 && p.ts_ms - pts[i - 1].ts_ms > gapMs) { xs.push((pts[i - 1].ts_ms + iv) / 1000); ys.push(null); }
    xs.push(p.ts_ms / 1000); ys.push(p.value);
  });
  return { xs, ys, gapS: gapMs / 1000 };
}
function chartAppend(r) {
  const c = S.detail.charts.get(r.metric);
  if (!c || r.value == null) return;
  const [xs, ys] = c.data;
  const bucket = Math.floor(r.ts_ms / c.stepMs) * c.stepMs / 1000;
  const last = xs.length ? xs[xs.length - 1] : -Infinity;
  if (bucket === last) {
    ys[ys.length - 1] = (ys[ys.length - 1] * c.n + r.value) / (c.n + 1);
    c.n++;
  } else if (bucket > last) {
    // A live point after an outage: break the line as withGaps does.
    if (xs.length && bucket - last > c.gapS) {
      xs.push(last + c.stepMs / 1000); ys.push(null);
      for (let i = 2; i < c.data.length; i++) c.data[i].push(c.limits[i - 2].value);
    }
    xs.push(bucket); ys.push(r.value); c.n = 1;
    for (let i = 2; i < c.data.length; i++) c.data[i].push(c.limits[i - 2].value);
    const cutoff = (r.ts_ms - c.spanMs) / 1000;
    while (xs.length > 2 && xs[0] < cutoff) for (const arr of c.data) arr.shift();
  } else return;
  c.dirty = true;
}
function flushCharts() {
  if (!S.detail) return;
  for (const c of S.detail.charts.values()) {
    if (!c.dirty || !c.u) continue;
    c.dirty = false;
    c.u.setData(c.data);
    const nd = c.u.root.parentElement && c.u.root.parentElement.querySelector('.nodata');
    if (nd && c.data[0].length) nd.remove();
  }
}

// ---------- live feed ----------
let es = null;
let everOpen = false;
let streamTimer = 0;
function setConn(state, text) {
  const c = $('conn');
  c.className = 'conn-' + state;
  c.textContent = text || state;
}
function startStream() {
  clearTimeout(streamTimer);
  if (es) es.close();
  setConn('connecting', everOpen ? 'reconnecting' : 'connecting');
  // EventSource cannot send an Authorization header: the token rides in the query.
  const src = new EventSource(API + '/stream?types=reading,alert,gateway' + (token ? '&access_token=' + encodeURIComponent(token) : ''));
  es = src;
  es.onopen = () => {
    S.lastEventAt = Date.now();
    setConn('live', 'live');
    // After a gap, what was missed comes from the API.
    if (everOpen) refreshAll();
    everOpen = true;
  };
  es.onerror = () => {
    if (src !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      setConn('down', 'offline');
      // EventSource does not say why: a plain request tells a refused token
      // (which opens the sign-in; signing in reconnects) from a network fault.
      const retry = () => { if (src === es) streamTimer = setTimeout(startStream, 3000); };
      api('/gateways').then(retry, (ex) => { if (ex.status !== 401) retry(); });
    } else setConn('connecting', 'reconnecting');
  };
  const handle = (fn) => (e) => {
    S.lastEventAt = Date.now();
    let data;
    try { data = JSON.parse(e.data); } catch (_) { return; }
    fn(data);
  };
  es.addEventListener('reading', handle(onReading));
  es.addEventListener('alert', handle(onAlertEvent));
  es.addEventListener('gateway', handle((g) => {
    const old = S.gateways.get(g.id) || { id: g.id, devices: [] };
    S.gateways.set(g.id, Object.assign({}, old, { status: g.status, last_seen_ms: Math.max(old.last_seen_ms || 0, g.ts_ms || 0) || null }));
    S.dirty = true;
    renderGateways();
  }));
  es.addEventListener('lagged', handle(() => refreshAll()));
}

// ---------- polling ----------
let pollErrors = 0;
async function refreshHealth() {
  if (authWait) return;
  try {
    const [sensors, gateways] = await Promise.all([api('/sensors'), api('/gateways')]);
    const before = S.mapKey;
    mergeSensors(sensors);
    S.gateways = new Map(gateways.map((g) => [g.id, g]));
    const key = [...S.sensors.values()].map((s) => s.id + ':' + s.lat + ':' + s.lon + ':' + s.district + ':' + s.catalogued).join('|');
    if (key !== before) { S.mapKey = key; drawMap(); }
    renderGateways();
    if (pollErrors) { pollErrors = 0; if ($('conn').className === 'conn-live') setConn('live', 'live'); }
    $('top').classList.remove('api-down');
    if (S.detail) updateDetail();
  } catch (e) {
    pollErrors++;
    $('top').classList.add('api-down');
    $('conn').title = e.status === 401 ? 'Sign-in needed' : 'API unreachable: ' + e.message;
  }
}
async function refreshRules() {
  if (authWait) return;
  try { S.rules = new Map((await api('/rules')).map((r) => [r.id, r])); } catch (_) { /* keep the old ones */ }
}
function refreshAll() {
  refreshHealth();
  refreshAlerts().catch(() => {});
}

function tick() {
  const t = now();
  for (const el of document.querySelectorAll('[data-since]')) {
    const v = Number(el.dataset.since);
    if (v) setText(el, fmtAge(t - v));
  }
  setText($('clock'), new Date().toLocaleTimeString([], WALL ? { hour: '2-digit', minute: '2-digit' } : undefined));
  if (S.dirty) {
    S.dirty = false;
    updateMarkers();
    renderKpis();
    if (!WALL) renderSensors();
    if (S.detail) updateDetail();
  }
  if (S.alertsDirty) renderAlerts();
  for (const [id, until] of S.fresh) if (until < Date.now()) { S.fresh.delete(id); const r = document.querySelector('#alerts [data-alert-id="' + id + '"]'); if (r) r.classList.remove('fresh'); }
  for (const [id, e] of S.rowErrors) if (e.until < Date.now()) { S.rowErrors.delete(id); S.alertsDirty = true; }
  flushCharts();
  // A connection that says "open" but carries nothing for a minute is dead.
  if (es && es.readyState === EventSource.OPEN && Date.now() - S.lastEventAt > 60000) startStream();
}
// States change with time alone (stale), so the page re-derives them every second.
setInterval(() => { S.dirty = true; }, 1000);

// ---------- events ----------
function wire() {
  document.addEventListener('click', (e) => {
    const t = e.target;
    const open = t.closest('[data-open-sensor]');
    if (open) { openDetail(open.getAttribute('data-open-sensor')); return; }
    const mk = t.closest('#map [data-sensor]');
    if (mk) { openDetail(mk.getAttribute('data-sensor')); return; }
    const row = t.closest('#sensors tr[data-row]');
    if (row) { openDetail(row.getAttribute('data-row')); return; }
    const ack = t.closest('#alerts .ack');
    if (ack) { openAck(Number(ack.dataset.id)); return; }
    const res = t.closest('#alerts .resolve');
    if (res) { resolveAlert(Number(res.dataset.id), res); return; }
    const range = t.closest('#detail .range');
    if (range && S.detail) {
      S.detail.range = range.dataset.range;
      for (const b of document.querySelectorAll('#detail .range')) b.classList.toggle('active', b === range);
      loadCharts();
      return;
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && S.detail && !$('ack-dialog').open && !$('token-dialog').open) closeDetail();
    if ((e.key === 'Enter' || e.key === ' ') && e.target.matches && e.target.matches('#map [data-sensor], #sensors tr[data-row]')) {
      e.preventDefault();
      openDetail(e.target.getAttribute('data-sensor') || e.target.getAttribute('data-row'));
    }
  });
  $('detail-close').addEventListener('click', () => closeDetail());
  $('banner').addEventListener('click', () => {
    const id = $('banner').dataset.alertId;
    const r = id && document.querySelector('#alerts [data-alert-id="' + CSS.escape(id) + '"]');
    if (r) { r.scrollIntoView({ block: 'center', behavior: 'smooth' }); r.classList.add('pulse-once'); setTimeout(() => r.classList.remove('pulse-once'), 2000); r.focus({ preventScroll: true }); }
  });
  $('ack-form').addEventListener('submit', submitAck);
  $('ack-cancel').addEventListener('click', closeAck);
  $('ack-dialog').addEventListener('close', () => { ackId = null; });
  $('ack-error').addEventListener('click', (e) => {
    if (e.target.closest('#ack-switch-token')) { closeAck(); openSignIn('Sign in with a token whose role may acknowledge and resolve alerts (operator or admin).'); }
  });
  $('token-form').addEventListener('submit', submitToken);
  // Nothing works without a token: Escape does not dismiss the sign-in.
  $('token-dialog').addEventListener('cancel', (e) => e.preventDefault());
  $('sign-out').addEventListener('click', signOut);
  $('sound').addEventListener('click', () => {
    soundOn = !soundOn;
    localStorage.setItem(LS_SOUND, soundOn ? '1' : '0');
    renderSound();
    if (soundOn) beep('test');
  });
  // Browsers start audio only after a gesture: unlock on the first one.
  const unlock = () => { if (soundOn) audio(); };
  document.addEventListener('pointerdown', unlock, { once: true });
  document.addEventListener('keydown', unlock, { once: true });
  $('sensor-filter').addEventListener('input', () => renderSensors());

  const svgEl = $('map');
  svgEl.addEventListener('mousemove', (e) => {
    const mk = e.target.closest && e.target.closest('[data-sensor]');
    if (mk) showTip(mk.getAttribute('data-sensor'), e); else $('tip').hidden = true;
  });
  svgEl.addEventListener('mouseleave', () => { $('tip').hidden = true; });

  let lastSize = '';
  const ro = new ResizeObserver(() => {
    const w = $('map-wrap');
    const size = w.clientWidth + 'x' + w.clientHeight;
    if (size !== lastSize) { lastSize = size; if (S.sensors.size) drawMap(); }
    if (S.detail) for (const c of S.detail.charts.values()) if (c.u && c.u.width !== chartWidth()) c.u.setSize({ width: chartWidth(), height: c.u.height });
    if (WALL) fitWallAlerts();
  });
  ro.observe($('map-wrap'));
  ro.observe($('detail'));
  ro.observe($('alerts'));
}

// ---------- incidents ----------
// Incidents (闭环处置) from /api/v1/incidents: the list with overdue marking
// and acknowledge / resolve buttons, the departments' league table from
// /api/v1/departments/performance, open and overdue counts in the KPIs (and
// on the wall), and sensors of overdue incidents marked on the map. Polled:
// incidents change on minutes, not readings.
const INC_POLL_MS = 3000;
const INC = { list: [], league: [], busy: new Set() };
const INC_OPEN = ['new', 'assigned', 'acknowledged', 'in_progress'];
async function refreshIncidents() {
  if (authWait) return;
  try {
    const all = $('inc-show-closed').checked;
    const [list, league] = await Promise.all([api('/incidents' + (all ? '' : '?status=open')), api('/departments/performance')]);
    INC.list = list;
    INC.league = league;
    renderIncidents();
    renderLeague();
  } catch (_) { /* the health poll reports the API's state */ }
}
function incidentDeadline(i) {
  const d = i.deadlines || {};
  const due = ['new', 'assigned'].includes(i.status) ? d.ack_due_ms : INC_OPEN.includes(i.status) ? d.resolve_due_ms : null;
  if (!due) return '—';
  const left = due - now();
  return left >= 0 ? 'in ' + fmtDur(left) : fmtDur(-left) + ' over';
}
function incidentActions(i) {
  if (INC.busy.has(i.id)) return h('span', { class: 'muted' }, '…');
  if (['new', 'assigned'].includes(i.status)) {
    return i.department ? h('button', { type: 'button', class: 'control inc-ack', 'data-incident': i.id }, 'Acknowledge') : h('span', { class: 'muted' }, 'unassigned');
  }
  if (['acknowledged', 'in_progress'].includes(i.status)) {
    return h('span', { class: 'inc-resolve-box' },
      h('input', { class: 'control inc-action', 'data-incident': i.id, placeholder: 'action taken', 'aria-label': 'Action taken on incident ' + i.id, maxlength: '500' }),
      h('button', { type: 'button', class: 'control inc-resolve', 'data-incident': i.id }, 'Resolve'));
  }
  return h('span', { class: 'muted' }, i.action || '');
}
function renderIncidents() {
  const open = INC.list.filter((i) => INC_OPEN.includes(i.status));
  const overdue = open.filter((i) => i.overdue);
  setText($('kpi-inc-open'), String(open.length));
  setText($('kpi-inc-overdue'), String(overdue.length));
  $('kpi-incidents').classList.toggle('hot', overdue.length > 0);
  setText($('incidents-count'), '(' + open.length + ' open' + (overdue.length ? ', ' + overdue.length + ' overdue' : '') + ')');
  // Keep what an operator is typing across a redraw.
  const typed = new Map([...document.querySelectorAll('#incidents .inc-action')].map((el) => [el.dataset.incident, el.value]));
  const focused = document.activeElement && document.activeElement.matches('#incidents .inc-action') ? document.activeElement.dataset.incident : null;
  put($('incidents'), ...INC.list.map((i) => h('tr', { 'data-incident-id': i.id, 'data-status': i.status, class: i.overdue ? 'inc-overdue' : '' },
    h('td', { class: 'mono' }, String(i.id)),
    h('td', null, h('span', { class: 'pill inc-st-' + i.status }, i.status.replace('_', ' ')), i.overdue ? [' ', h('span', { class: 'pill inc-late', title: 'past its ' + i.overdue + ' deadline' }, 'overdue')] : null),
    h('td', null, h('span', { class: 'pill sev-' + i.severity }, i.severity), ' ', i.title),
    h('td', null, i.department || '—', i.escalation_level ? h('span', { class: 'flag' }, 'escalated ×' + i.escalation_level) : null),
    h('td', null, (i.sensors || []).map((s, n) => [n ? ', ' : '', sensorLink(s)])),
    h('td', null, h('span', { class: 'age', 'data-since': i.opened_ms }, fmtAge(now() - i.opened_ms)), ' ago'),
    h('td', { class: 'inc-deadline' }, incidentDeadline(i)),
    h('td', { class: 'inc-act' }, incidentActions(i)))));
  for (const [id, v] of typed) { const el = document.querySelector('#incidents .inc-action[data-incident="' + CSS.escape(id) + '"]'); if (el) el.value = v; }
  if (focused) { const el = document.querySelector('#incidents .inc-action[data-incident="' + CSS.escape(focused) + '"]'); if (el) el.focus(); }
  const strip = $('inc-issues');
  strip.hidden = !overdue.length;
  put(strip, ...overdue.map((i) => h('div', { class: 'inc-issue', 'data-incident-id': i.id },
    h('span', { class: 'pill inc-late' }, 'overdue'), ' #' + i.id + ' ', h('strong', null, i.title), ' · ', i.department || 'unassigned', ' · not ' + (i.overdue === 'acknowledge' ? 'acknowledged' : 'resolved'))));
  const late = new Set(overdue.flatMap((i) => i.sensors || []));
  for (const [id, c] of map.markers) c.classList.toggle('inc-overdue', late.has(id));
}
function renderLeague() {
  const mins = (ms) => (ms == null ? '—' : fmtDur(ms));
  const rows = [...INC.league].sort((a, b) => b.volume - a.volume || (a.department < b.department ? -1 : 1));
  put($('league'), ...rows.map((p) => h('tr', { 'data-department': p.department, class: (p.overdue_now ? 'inc-overdue' : '') + (p.department === INC.trendDept ? ' selected' : '') },
    h('td', { class: 'mono' }, p.department),
    h('td', { class: 'num' }, String(p.volume)),
    h('td', { class: 'num' }, mins(p.ack_median_ms)),
    h('td', { class: 'num' }, mins(p.ack_p90_ms)),
    h('td', { class: 'num' }, mins(p.resolve_median_ms)),
    h('td', { class: 'num' }, String(p.ack_breaches + p.resolve_breaches)),
    h('td', { class: 'num' }, String(p.overdue_now)),
    h('td', { class: 'num' }, String(p.escalations)),
    h('td', { class: 'num' }, String(p.transfers)),
    h('td', { class: 'num' }, p.reopen_rate == null ? '—' : Math.round(p.reopen_rate * 100) + ' %'),
    h('td', { class: 'num' }, p.rated_good + ' / ' + p.rated_bad),
    h('td', { class: 'num' }, String(p.bad_rectified)))));
}
async function incidentAction(id, action, body) {
  INC.busy.add(id);
  renderIncidents();
  try {
    await post('/incidents/' + id + '/' + action, body);
    toast('Incident #' + id + ': ' + action + 'd');
  } catch (ex) {
    toast('Incident #' + id + ': ' + action + ' refused: ' + ex.message, true);
  } finally {
    INC.busy.delete(id);
    await refreshIncidents();
  }
}
// The trend of one department (the one clicked, else the busiest): per day
// over 30 days, incidents and missed deadlines, and the median time to acknowledge.
const TREND_POLL_MS = 15000;
async function refreshTrend() {
  if (authWait || !INC.league.length) return;
  if (!INC.trendDept || !INC.league.some((p) => p.department === INC.trendDept)) {
    INC.trendDept = [...INC.league].sort((a, b) => b.volume - a.volume)[0].department;
  }
  const dept = INC.trendDept;
  let rows;
  try { rows = await api('/departments/' + encodeURIComponent(dept) + '/performance?from=-30d&to=now&step=1d'); } catch (_) { return; }
  if (dept !== INC.trendDept) return;
  setText($('league-trend-name'), dept);
  for (const tr of document.querySelectorAll('#league tr[data-department]')) tr.classList.toggle('selected', tr.dataset.department === dept);
  const data = [rows.map((p) => p.from_ms / 1000), rows.map((p) => p.volume), rows.map((p) => p.ack_breaches + p.resolve_breaches), rows.map((p) => (p.ack_median_ms == null ? null : p.ack_median_ms / 60000))];
  const host = $('league-trend');
  const width = Math.max(300, host.clientWidth || 600);
  if (INC.trend && INC.trend.dept === dept) { INC.trend.u.setData(data); return; }
  if (INC.trend) INC.trend.u.destroy();
  const axis = { stroke: '#8aa0b4', grid: { stroke: 'rgba(138,160,180,0.12)', width: 1 }, ticks: { stroke: 'rgba(138,160,180,0.2)', width: 1 } };
  const u = new uPlot({
    width, height: 150,
    scales: { x: { time: true }, n: { range: (u, lo, hi) => [0, Math.max(1, hi)] }, min: { range: (u, lo, hi) => [0, Math.max(1, hi || 1)] } },
    axes: [axis, Object.assign({ scale: 'n', size: 40 }, axis), Object.assign({ scale: 'min', side: 1, size: 48, values: (u, vals) => vals.map((v) => v + ' m') }, axis)],
    series: [{}, { label: 'incidents', scale: 'n', stroke: COLORS.line, width: 1.5, points: { show: true } },
      { label: 'breaches', scale: 'n', stroke: '#ff2e63', width: 1.5, points: { show: true } },
      { label: 'ack median (min)', scale: 'min', stroke: '#ffd166', width: 1, dash: [6, 4], spanGaps: true, points: { show: true } }],
  }, data, host);
  INC.trend = { dept, u };
}
function initIncidents() {
  document.addEventListener('click', (e) => {
    const ack = e.target.closest('#incidents .inc-ack');
    if (ack) { incidentAction(Number(ack.dataset.incident), 'acknowledge', {}); return; }
    const res = e.target.closest('#incidents .inc-resolve');
    if (res) {
      const input = document.querySelector('#incidents .inc-action[data-incident="' + CSS.escape(res.dataset.incident) + '"]');
      const text = input ? input.value.trim() : '';
      if (!text) { toast('Say what was done before resolving', true); if (input) input.focus(); return; }
      incidentAction(Number(res.dataset.incident), 'resolve', { action: text });
    }
  });
  document.addEventListener('click', (e) => {
    const row = e.target.closest('#league tr[data-department]');
    if (row) { INC.trendDept = row.dataset.department; refreshTrend(); }
  });
  $('inc-show-closed').addEventListener('change', refreshIncidents);
  refreshIncidents().then(refreshTrend);
  setInterval(refreshIncidents, INC_POLL_MS);
  setInterval(refreshTrend, TREND_POLL_MS);
}

// ---------- start ----------
function openFromHash() {
  const m = /sensor=([^&]+)/.exec(location.hash);
  if (m && S.sensors.has(decodeURIComponent(m[1]))) openDetail(decodeURIComponent(m[1]));
}
async function init() {
  wire();
  renderSound();
  renderSignOut();
  setText($('clock'), new Date().toLocaleTimeString());
  // Without a token, first ask whether this collector wants one (a 401 opens
  // the sign-in, which then starts everything) rather than send every load.
  if (!token) await api('/gateways').catch(() => {});
  if (!authWait) startStream();
  await Promise.allSettled([refreshHealth(), refreshAlerts(), refreshRules()]);
  renderAlerts(); // rule kinds refine the labels
  if (!WALL) renderSensors();
  openFromHash();
  initIncidents();
  setInterval(tick, 1000);
  setInterval(refreshHealth, POLL_MS);
  setInterval(() => refreshAlerts().catch(() => {}), ALERT_POLL_MS);
  setInterval(refreshRules, 60000);
  // Keep reminding while an urgent alert waits for someone.
  setInterval(() => {
    const urgent = [...S.open.values()].filter((a) => a.state === 'firing' && SEV_RANK[sevOf(a)] >= SEV_RANK.critical);
    if (urgent.length) beep(topSeverity(urgent));
  }, 30000);
}
init();
})();
