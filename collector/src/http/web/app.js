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
const WALL = params.get('mode') === 'wall' || (params.has('wall') && !['0', 'false'].includes(params.get('wall'))) || location.hash === '#wall';
// A city too big to take every reading and sensor object: above this many
// sensors the page reads the compact map snapshot (/map) every few seconds
// and only alerts and gateways live, instead of /sensors and every reading.
const BIG_CITY = 1500;
let BIG = false;
const SRV_STATES = ['ok', 'alerting', 'stale', 'offline'];
const SEV_NAMES = [null, 'info', 'warning', 'critical', 'emergency'];
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
  sensorsVersion: 0,    // moves when sensors or their positions change
  alertsVersion: 0,     // moves when the open alerts change
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
// Open alerts by sensor, rebuilt when the open set changes: 10,000 markers
// ask for theirs every frame.
let alertIdx = null;
function alertsFor(id) {
  if (!alertIdx) {
    alertIdx = new Map();
    for (const a of S.open.values()) { if (!alertIdx.has(a.sensor)) alertIdx.set(a.sensor, []); alertIdx.get(a.sensor).push(a); }
  }
  return alertIdx.get(id) || [];
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
  // A big city's states come from the server's snapshot; an alert heard over the feed counts at once.
  if (BIG && sn.srv != null) {
    const st = SRV_STATES[sn.srv];
    if (st === 'offline' || st === 'stale') return st;
    return alertsFor(sn.id).length ? 'alerting' : 'ok';
  }
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
  S.sensorsVersion++;
  fillSelect($('sensor-kind'), [...new Set(list.map((s) => s.kind).filter(Boolean))].sort());
  S.dirty = true;
}

// The compact snapshot (/map: columns of arrays). In a big city it is the
// page's sensor list; in a small one it only brings the basemap settings
// (/sensors brings the rest).
function mergeSnapshot(m) {
  map.tiles = m.tiles || null;
  if (!BIG) return m;
  const next = new Map();
  let moved = m.id.length !== S.sensors.size;
  let changed = false;
  for (let i = 0; i < m.id.length; i++) {
    const id = m.id[i];
    const s = S.sensors.get(id) || { id, name: null, owner: null, installed: null, metrics: [], last_seen_ms: null };
    if (s.lat !== m.lat[i] || s.lon !== m.lon[i] || s.district !== (m.d[i] >= 0 ? m.districts[m.d[i]] : null)) moved = true;
    s.lat = m.lat[i]; s.lon = m.lon[i];
    s.district = m.d[i] >= 0 ? m.districts[m.d[i]] : null;
    s.kind = m.k[i] >= 0 ? m.kinds[m.k[i]] : null;
    s.gateway = m.g[i] >= 0 ? m.gateways[m.g[i]] : null;
    if (s.srv !== m.s[i]) changed = true;
    s.srv = m.s[i];
    s.srvSev = SEV_NAMES[m.sev[i]];
    s.catalogued = m.c[i] === 1;
    next.set(id, s);
  }
  S.sensors = next;
  if (moved) S.sensorsVersion++;
  fillSelect($('sensor-kind'), [...m.kinds].sort());
  // Nothing redrawn when no sensor changed state: a quiet city costs a parse every few seconds.
  if (moved || changed) { S.dirty = true; scheduleMap(); }
  return m;
}
// How big the city is (which decides what the page reads), its sensors and its outlines.
function loadSnapshot() {
  return api('/map').then((m) => { BIG = m.id.length > BIG_CITY; mergeSnapshot(m); if (m.boundaries) return loadBoundaries(); }).catch(() => {});
}
async function loadBoundaries() {
  try { map.boundaries = await api('/map/boundaries'); scheduleMap(); } catch (_) { map.boundaries = null; }
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
  alertIdx = null;
  S.alertsVersion++;
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
  schedule();
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
  const sig = (m) => [...m.values()].map((a) => a.id + ':' + a.severity + ':' + a.sensor).sort().join('|');
  if (sig(next) !== sig(S.open)) S.alertsVersion++;
  S.open = next;
  alertIdx = null;
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
  // The map shows alerts by colour: redrawn when the open set changed, not on every poll.
  if (S.alertsVersion !== map.alertsDrawn) { map.alertsDrawn = S.alertsVersion; scheduleMap(); }
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
  await loadSnapshot();
  startStream();
  await Promise.allSettled([refreshHealth(), refreshAlerts(), refreshRules()]);
  renderAlerts();
  refreshSensorPage();
  refreshDistricts();
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
// Web-mercator world units (256 at zoom 0, like XYZ tiles), so an operator's
// tile server lines up. Only what is in view is drawn: districts as regions
// coloured by their state, then markers, clustered on a grid when the view
// holds more than a screen can show one by one. Redrawn on animation frames,
// at most once a frame, whatever the number of updates.
const WORLD = 256;
const INDIVIDUAL_MAX = 600; // sensors in view drawn one by one up to this
const CLUSTER_SMALL = 3;    // a grid cell with this few sensors shows them, not a cluster
const mercX = (lon) => (lon + 180) / 360 * WORLD;
const mercY = (lat) => { const s = Math.sin(lat * Math.PI / 180); return (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * WORLD; };
const map = {
  w: 0, h: 0, view: null, home: null, markers: new Map(), rings: new Map(), pos: new Map(), late: new Set(),
  dirty: true, boundaries: null, tiles: null, clusterOf: new Map(), drag: null, userMoved: false, labels: new Map(),
};
function hull(pts) {
  if (pts.length < 3) return pts.slice();
  const p = pts.slice().sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const lo = [], up = [];
  for (const q of p) { while (lo.length >= 2 && cross(lo[lo.length - 2], lo[lo.length - 1], q) <= 0) lo.pop(); lo.push(q); }
  for (const q of p.reverse()) { while (up.length >= 2 && cross(up[up.length - 2], up[up.length - 1], q) <= 0) up.pop(); up.push(q); }
  return lo.slice(0, -1).concat(up.slice(0, -1));
}
const STATE_RANK = { ok: 0, stale: 1, offline: 2, alerting: 3 };
// Worst of a group: any open alert (its severity), else offline, stale, ok.
function worstOf(acc, st, sev) {
  if (sev && (!acc.sev || SEV_RANK[sev] > SEV_RANK[acc.sev])) acc.sev = sev;
  if (STATE_RANK[st] > STATE_RANK[acc.st]) acc.st = st;
  return acc;
}
function groupColor(g) {
  if (g.sev) return COLORS[g.sev];
  return COLORS[g.st === 'alerting' ? 'warning' : g.st];
}
function placedSensors() {
  const out = [];
  for (const s of S.sensors.values()) if (Number.isFinite(s.lat) && Number.isFinite(s.lon)) {
    if (s.wx == null || s.plat !== s.lat || s.plon !== s.lon) { s.wx = mercX(s.lon); s.wy = mercY(s.lat); s.plat = s.lat; s.plon = s.lon; }
    out.push(s);
  }
  return out;
}
// The districts' shapes in world units: the configured boundaries, else a
// hull around each district's sensors (drawn with a wide round stroke).
// Recomputed only when positions or boundaries change (hulls of 10,000 points are not free).
let shapeCache = { key: '', shapes: null };
function districtShapes(placed) {
  const key = placed.length + ':' + S.sensorsVersion + ':' + (map.boundaries ? 1 : 0);
  if (shapeCache.key === key) return shapeCache.shapes;
  const shapes = districtShapesNow(placed);
  shapeCache = { key, shapes };
  return shapes;
}
function districtShapesNow(placed) {
  const shapes = new Map();
  if (map.boundaries) {
    for (const f of map.boundaries.features || []) {
      const name = f.properties && f.properties.name;
      const polys = f.geometry && f.geometry.type === 'Polygon' ? [f.geometry.coordinates] : (f.geometry && f.geometry.coordinates) || [];
      shapes.set(name, { rings: polys.flatMap((p) => p.map((r) => r.map(([lon, lat]) => [mercX(lon), mercY(lat)]))), hull: false });
    }
  }
  const by = new Map();
  for (const s of placed) { if (!s.district || shapes.has(s.district)) continue; if (!by.has(s.district)) by.set(s.district, []); by.get(s.district).push([s.wx, s.wy]); }
  for (const [d, pts] of by) shapes.set(d, { rings: [hull(pts)], hull: true });
  for (const sh of shapes.values()) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const r of sh.rings) for (const [x, y] of r) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
    sh.box = [x0, y0, x1, y1];
  }
  return shapes;
}
function fitView(box, W, H, pad) {
  const [x0, y0, x1, y1] = box;
  const sx = (W - 2 * pad) / Math.max(x1 - x0, 1e-7), sy = (H - 2 * pad) / Math.max(y1 - y0, 1e-7);
  return { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, s: Math.min(sx, sy) };
}
function scheduleMap() { map.dirty = true; schedule(); }
function drawMap() { scheduleMap(); }

function drawMapNow() {
  map.dirty = false;
  const el = $('map');
  // Sizes from the ResizeObserver: reading them here would force a layout of the whole page every frame.
  if (!map.size) map.size = { w: $('map-wrap').clientWidth, h: $('map-wrap').clientHeight, rem: parseFloat(getComputedStyle(document.documentElement).fontSize) || 16 };
  const W = Math.max(200, Math.round(map.size.w));
  const H = Math.max(160, Math.round(map.size.h));
  const REM = map.size.rem;
  const R = WALL ? Math.round(REM * 0.65) : 8;
  const placed = placedSensors();
  const unplaced = [];
  if (!BIG) for (const s of S.sensors.values()) if (!(Number.isFinite(s.lat) && Number.isFinite(s.lon))) unplaced.push(s);
  const tray = unplaced.length ? R * 2 + 34 : 0;
  const MH = H - tray;
  const shapes = districtShapes(placed);
  // Home: everything placed and every boundary, refitted to the panel until the operator moves the map.
  let box = [Infinity, Infinity, -Infinity, -Infinity];
  for (const s of placed) { box[0] = Math.min(box[0], s.wx); box[1] = Math.min(box[1], s.wy); box[2] = Math.max(box[2], s.wx); box[3] = Math.max(box[3], s.wy); }
  for (const sh of shapes.values()) { box[0] = Math.min(box[0], sh.box[0]); box[1] = Math.min(box[1], sh.box[1]); box[2] = Math.max(box[2], sh.box[2]); box[3] = Math.max(box[3], sh.box[3]); }
  const pad = R * 3 + 12;
  if (Number.isFinite(box[0])) {
    const minSpan = mercX(0.005) - mercX(0);
    if (box[2] - box[0] < minSpan) { box[0] -= minSpan / 2; box[2] += minSpan / 2; }
    if (box[3] - box[1] < minSpan) { box[1] -= minSpan / 2; box[3] += minSpan / 2; }
    map.home = fitView(box, W, MH, pad);
    if (!map.view || !map.userMoved || W !== map.w || MH !== map.mh) { if (!map.userMoved || !map.view) map.view = Object.assign({}, map.home); }
  }
  map.w = W; map.h = H; map.mh = MH;
  el.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  el.setAttribute('width', W);
  el.setAttribute('height', H);
  map.markers.clear(); map.rings.clear(); map.pos.clear(); map.clusterOf.clear(); map.labels.clear();
  const nodes = [svg('defs', null,
    svg('pattern', { id: 'hatch', width: 5, height: 5, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
      svg('rect', { width: 5, height: 5, fill: COLORS.offline }),
      svg('line', { x1: 0, y1: 0, x2: 0, y2: 5, stroke: '#2a1748', 'stroke-width': 2.5 }))),
  svg('rect', { class: 'map-bg', x: 0, y: 0, width: W, height: H })];
  const v = map.view;
  if (!v) {
    nodes.push(svg('text', { x: W / 2, y: MH / 2, class: 'map-empty' }, S.sensors.size ? 'No sensor has a position in the catalogue' : 'Loading sensors…'));
  } else {
    const X = (wx) => (wx - v.cx) * v.s + W / 2;
    const Y = (wy) => (wy - v.cy) * v.s + MH / 2;
    if (map.tiles) nodes.push(tileLayer(v, W, MH));
    // Districts: coloured by their worst, filled at city zoom, outlined deeper in.
    const perD = new Map();
    for (const s of S.sensors.values()) {
      const st = sensorState(s);
      const sev = topSeverity(alertsFor(s.id));
      s.mst = st; s.msev = sev;
      if (!s.district) continue;
      if (!perD.has(s.district)) perD.set(s.district, { st: 'ok', sev: null, n: 0, bad: 0 });
      const g = worstOf(perD.get(s.district), st === 'alerting' ? 'ok' : st, sev);
      g.n++; if (st === 'stale' || st === 'offline') g.bad++;
    }
    const cityZoom = v.s <= map.home.s * 2.5;
    const regions = svg('g', { class: 'regions' + (cityZoom ? ' city-zoom' : '') });
    const labels = svg('g', { class: 'district-labels' });
    const order = [...shapes.keys()].sort((a, b) => districtRank(a) - districtRank(b));
    const taken = [];
    const fs = WALL ? REM * 1.3 : 15;
    for (const d of order) {
      const sh = shapes.get(d);
      const g = perD.get(d) || { st: 'ok', sev: null, n: 0, bad: 0 };
      // Mostly not reporting shows as such; otherwise the worst open alert, else ok.
      const col = g.sev ? COLORS[g.sev] : g.n && g.bad / g.n > 0.5 ? COLORS[g.st] : COLORS.ok;
      const dpath = sh.rings.map((r) => 'M' + r.map(([x, y]) => X(x).toFixed(1) + ' ' + Y(y).toFixed(1)).join('L') + 'Z').join('');
      regions.append(svg('path', {
        class: 'region' + (sh.hull ? ' hull' : ''), d: dpath, fill: col, stroke: col, 'stroke-width': sh.hull ? R * 5 : 2,
        'data-district': d, 'data-severity': g.sev || null, 'data-state': g.sev ? 'alerting' : g.n && g.bad / g.n > 0.5 ? g.st : 'ok',
        role: 'button', 'aria-label': 'district ' + d,
      }, svg('title', null, d)));
      // At the region's top edge, clear of the clusters in its middle; else its
      // middle or its foot, whichever collides with no label placed before.
      const half = d.length * fs * 0.46;
      if (X(sh.box[2]) < 0 || X(sh.box[0]) > W || Y(sh.box[3]) < fs * 2 || Y(sh.box[1]) > MH) continue;
      const cx = Math.max(half + 4, Math.min(W - half - 4, X((sh.box[0] + sh.box[2]) / 2)));
      const spots = [Y(sh.box[1]) + fs * 1.1, (Y(sh.box[1]) + Y(sh.box[3])) / 2, Y(sh.box[3]) - fs * 1.4].map((y) => Math.max(fs * 1.2, Math.min(MH - fs * 1.4, y)));
      const cy = spots.find((y) => !taken.some((t) => Math.abs(t.x - cx) < t.half + half && Math.abs(t.y - y) < fs * 2.2));
      if (cy == null) continue;
      taken.push({ x: cx, y: cy, half });
      // The name, and under it the district's AQI (kept current in place by refreshDistricts).
      const aqi = svg('tspan', { x: cx, dy: fs * 0.95, class: 'district-aqi' }, districtAqi(d));
      const t = svg('text', { x: cx, y: cy, class: 'district-label', 'data-district': d }, d, aqi);
      map.labels.set(d, aqi);
      labels.append(t);
    }
    nodes.push(regions);
    // Markers in view, clustered when too many.
    const m = R * 2;
    const inView = placed.filter((s) => { const x = X(s.wx), y = Y(s.wy); return x > -m && x < W + m && y > -m && y < MH + m; });
    const rings = svg('g', { class: 'rings' });
    const marks = svg('g', { class: 'markers' });
    const single = [];
    if (inView.length <= INDIVIDUAL_MAX) single.push(...inView);
    else {
      const cell = WALL ? REM * 4.5 : 56;
      const cells = new Map();
      for (const s of inView) {
        const k = Math.floor(X(s.wx) / cell) * 65536 + Math.floor(Y(s.wy) / cell);
        if (!cells.has(k)) cells.set(k, []);
        cells.get(k).push(s);
      }
      for (const [k, list] of cells) {
        if (list.length <= CLUSTER_SMALL) { single.push(...list); continue; }
        const acc = { st: 'ok', sev: null };
        let sx = 0, sy = 0;
        const dc = new Map();
        for (const s of list) { worstOf(acc, s.mst, s.msev); sx += s.wx; sy += s.wy; dc.set(s.district, (dc.get(s.district) || 0) + 1); }
        const x = X(sx / list.length), y = Y(sy / list.length);
        const r = R + 3 + Math.min(14, Math.log2(list.length) * 2) * (WALL ? REM / 16 : 1);
        const district = [...dc.entries()].sort((a, b) => b[1] - a[1])[0][0] || '';
        const g = svg('g', { class: 'cluster', 'data-cluster': k, 'data-count': list.length, 'data-state': acc.st, 'data-severity': acc.sev, 'data-district': district, role: 'button', 'aria-label': list.length + ' sensors' },
          svg('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: r.toFixed(1), fill: acc.st === 'offline' && !acc.sev ? 'url(#hatch)' : groupColor(acc) }),
          svg('text', { x: x.toFixed(1), y: (y + r * 0.33).toFixed(1) }, list.length >= 1000 ? (list.length / 1000).toFixed(1) + 'k' : String(list.length)));
        marks.append(g);
        for (const s of list) map.clusterOf.set(s.id, g);
      }
    }
    for (const s of single) map.pos.set(s.id, [X(s.wx), Y(s.wy)]);
    nodes.push(rings, marks, labels);
    // Scale bar, in km at the view's centre.
    const lat = Math.atan(Math.sinh(Math.PI * (1 - 2 * v.cy / WORLD))) * 180 / Math.PI;
    const kmPerPx = 40075 * Math.cos(lat * Math.PI / 180) / WORLD / v.s;
    const km = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200].find((q) => q / kmPerPx >= (WALL ? REM * 6 : 80)) || 200;
    const len = km / kmPerPx;
    nodes.push(svg('g', { class: 'scale' },
      svg('path', { d: 'M' + (W - len - 16) + ' 17v5h' + len + 'v-5' }),
      svg('text', { x: W - 16 - len / 2, y: 34 }, km < 1 ? km * 1000 + ' m' : km + ' km')));
    if (map.tiles && map.tiles.attribution) nodes.push(svg('text', { class: 'attribution', x: W - 6, y: MH - 6 }, map.tiles.attribution));
    placeMarkers(rings, marks, single, R);
  }
  if (unplaced.length) {
    const ty = H - tray;
    nodes.push(svg('g', { class: 'tray' },
      svg('line', { x1: 0, x2: W, y1: ty, y2: ty }),
      svg('text', { x: 8, y: ty + 14, class: 'tray-label' }, 'Not on the map (no position / not in catalogue):')));
    const trayG = svg('g', { class: 'tray-marks' });
    const ids = svg('g', { class: 'id-labels' });
    const list = [];
    unplaced.forEach((s, i) => {
      const x = 8 + R + i * Math.max(R * 2 + 70, 90);
      if (x < W - R) { map.pos.set(s.id, [x, ty + 20 + R]); list.push(s); ids.append(svg('text', { x: x + R + 4, y: ty + 24 + R, class: 'tray-id' }, s.id)); }
    });
    const rings = svg('g', { class: 'rings' });
    placeMarkers(rings, trayG, list, R);
    nodes.push(rings, trayG, ids);
  }
  put(el, ...nodes);
  updateMarkers();
  if (!window.__cityPaint && placed.length) window.__cityPaint = performance.now();
}
function placeMarkers(rings, marks, list, R) {
  for (const s of list) {
    const p = map.pos.get(s.id);
    const ring = svg('circle', { class: 'ring', cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: R + 5 });
    const c = svg('circle', {
      class: 'mk' + (s.catalogued ? '' : ' uncatalogued'), cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: R,
      'data-sensor': s.id, 'data-district': s.district || null, 'data-state': 'ok', tabindex: WALL ? null : '0', role: 'button', 'aria-label': 'sensor ' + s.id,
    }, svg('title', null, s.id));
    rings.append(ring);
    marks.append(c);
    map.markers.set(s.id, c);
    map.rings.set(s.id, ring);
  }
}
function districtAqi(d) {
  const info = S.districts && S.districts.byName.get(d);
  const aqi = info && info.indicators.aqi;
  return aqi ? 'AQI ' + aqi.aqi : '';
}
function districtRank(d) {
  const x = S.districts && S.districts.byName.get(d);
  return x ? x.rank : 1e9;
}
// The operator's tile server, if configured: XYZ tiles under the view.
function tileLayer(v, W, H) {
  const g = svg('g', { class: 'tiles' });
  const z = Math.max(0, Math.min(19, Math.round(Math.log2(v.s))));
  const n = 2 ** z, size = WORLD / n * v.s;
  const x0 = Math.floor(((v.cx - W / 2 / v.s) / WORLD) * n), x1 = Math.floor(((v.cx + W / 2 / v.s) / WORLD) * n);
  const y0 = Math.max(0, Math.floor(((v.cy - H / 2 / v.s) / WORLD) * n)), y1 = Math.min(n - 1, Math.floor(((v.cy + H / 2 / v.s) / WORLD) * n));
  if ((x1 - x0 + 1) * (y1 - y0 + 1) > 80) return g;
  for (let ty = y0; ty <= y1; ty++) for (let tx = x0; tx <= x1; tx++) {
    const wx = ((tx % n) + n) % n;
    const url = map.tiles.url.replace('{z}', z).replace('{x}', wx).replace('{y}', ty);
    g.append(svg('image', { href: url, x: ((tx * WORLD / n - v.cx) * v.s + W / 2).toFixed(1), y: ((ty * WORLD / n - v.cy) * v.s + H / 2).toFixed(1), width: size.toFixed(1) + 0.5, height: size.toFixed(1) + 0.5 }));
  }
  return g;
}
function zoomAt(px, py, factor) {
  const v = map.view;
  if (!v || !map.home) return;
  const s = Math.max(map.home.s * 0.5, Math.min(map.home.s * 4096, v.s * factor));
  const wx = v.cx + (px - map.w / 2) / v.s, wy = v.cy + (py - map.mh / 2) / v.s;
  map.view = { cx: wx - (px - map.w / 2) / s, cy: wy - (py - map.mh / 2) / s, s };
  map.userMoved = true;
  scheduleMap();
}
function zoomToDistrict(d) {
  const sh = districtShapes(placedSensors()).get(d);
  if (!sh) return false;
  map.view = fitView(sh.box, map.w, map.mh, 30);
  map.userMoved = true;
  scheduleMap();
  return true;
}
function homeView() { map.userMoved = false; map.view = map.home && Object.assign({}, map.home); scheduleMap(); }
function wireMap() {
  const el = $('map');
  el.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = el.getBoundingClientRect();
    zoomAt(e.clientX - r.left, e.clientY - r.top, Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });
  el.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    map.drag = { x: e.clientX, y: e.clientY, moved: false, v: map.view && Object.assign({}, map.view) };
  });
  window.addEventListener('pointermove', (e) => {
    const d = map.drag;
    if (!d || !d.v) return;
    const dx = e.clientX - d.x, dy = e.clientY - d.y;
    if (!d.moved && Math.hypot(dx, dy) < 4) return;
    d.moved = true;
    map.view = { cx: d.v.cx - dx / d.v.s, cy: d.v.cy - dy / d.v.s, s: d.v.s };
    map.userMoved = true;
    scheduleMap();
  });
  window.addEventListener('pointerup', () => { setTimeout(() => { map.drag = null; }, 0); });
  el.addEventListener('click', (e) => {
    if (map.drag && map.drag.moved) { e.stopPropagation(); return; }
    const r = el.getBoundingClientRect();
    const cl = e.target.closest && e.target.closest('.cluster');
    if (cl) { zoomAt(e.clientX - r.left, e.clientY - r.top, 3); return; }
    const reg = e.target.closest && e.target.closest('.region');
    if (reg && map.view && map.view.s <= map.home.s * 2.5) zoomToDistrict(reg.getAttribute('data-district'));
  });
  el.addEventListener('dblclick', (e) => { const r = el.getBoundingClientRect(); zoomAt(e.clientX - r.left, e.clientY - r.top, 2); });
  $('map-zoom-in').addEventListener('click', () => zoomAt(map.w / 2, map.mh / 2, 2));
  $('map-zoom-out').addEventListener('click', () => zoomAt(map.w / 2, map.mh / 2, 0.5));
  $('map-home').addEventListener('click', homeView);
}
// For the console and the browser tests: where a sensor is drawn, and moving the view.
window.citysense = {
  clusterOf: (id) => map.clusterOf.get(id) || null,
  zoomToDistrict,
  home: homeView,
  view: () => map.view && Object.assign({}, map.view),
};

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
    c.classList.toggle('inc-overdue', map.late.has(id));
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
    h('div', { class: 'st-' + st }, st + (sev ? ' (' + sev + ')' : ''), s.last_seen_ms != null ? [' · seen ', fmtAge(now() - s.last_seen_ms), ' ago'] : null),
    s.catalogued ? null : h('div', { class: 'flag' }, 'not in catalogue'));
  placeTip(tip, evt);
}
function showClusterTip(g, evt) {
  const tip = $('tip');
  put(tip, h('strong', null, g.getAttribute('data-count') + ' sensors'), h('div', { class: 'muted' }, g.getAttribute('data-district') || ''),
    h('div', null, 'worst: ' + (g.getAttribute('data-severity') || g.getAttribute('data-state'))), h('div', { class: 'muted' }, 'click to zoom in'));
  placeTip(tip, evt);
}
function placeTip(tip, evt) {
  tip.hidden = false;
  const wrap = $('map-wrap').getBoundingClientRect();
  let x = evt.clientX - wrap.left + 14, y = evt.clientY - wrap.top + 14;
  if (x + tip.offsetWidth > wrap.width) x = evt.clientX - wrap.left - tip.offsetWidth - 10;
  if (y + tip.offsetHeight > wrap.height) y = evt.clientY - wrap.top - tip.offsetHeight - 10;
  tip.style.transform = 'translate(' + Math.max(0, x) + 'px,' + Math.max(0, y) + 'px)';
}

// ---------- tables ----------
// The sensors table is a page of the server's list (/sensors/page), filtered,
// searched and sorted there (worst first by default), so 10,000 sensors cost
// the page 50 rows.
const PAGE = 50;
const TBL = { offset: 0, total: 0, rows: [], seq: 0, timer: 0 };
function sensorQuery() {
  const q = new URLSearchParams();
  const f = ($('sensor-filter').value || '').trim();
  if (f) q.set('q', f);
  for (const [k, id] of [['district', 'sensor-district'], ['kind', 'sensor-kind'], ['state', 'sensor-state']]) { const v = $(id).value; if (v) q.set(k, v); }
  q.set('offset', TBL.offset);
  q.set('limit', PAGE);
  return q.toString();
}
async function refreshSensorPage() {
  if (authWait || WALL) return;
  const seq = ++TBL.seq;
  let page;
  try { page = await api('/sensors/page?' + sensorQuery()); } catch (_) { return; }
  if (seq !== TBL.seq) return;
  if (page.total && TBL.offset >= page.total) { TBL.offset = Math.floor((page.total - 1) / PAGE) * PAGE; return refreshSensorPage(); }
  TBL.total = page.total;
  TBL.rows = page.rows;
  // The detail panel of a big city reads its sensor's values from here.
  for (const r of page.rows) { const s = S.sensors.get(r.id); if (s && BIG) { s.metrics = r.metrics; s.last_seen_ms = r.last_seen_ms; s.name = r.name; } }
  renderSensors();
}
function refreshSensorsSoon() { clearTimeout(TBL.timer); TBL.timer = setTimeout(() => { TBL.offset = 0; refreshSensorPage(); }, 200); }
function fillSelect(el, values) {
  const key = values.join('\u0001');
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  const cur = el.value;
  put(el, h('option', { value: '' }, el.dataset.all), ...values.map((v) => h('option', { value: v }, v)));
  el.value = values.includes(cur) ? cur : '';
}
function renderSensors() {
  const tbody = $('sensors');
  put(tbody, ...TBL.rows.map((r) => {
    const st = r.state;
    const sev = r.severity;
    const local = S.sensors.get(r.id);
    // Live values when the page has them (small cities get every reading).
    const metrics = local && !BIG && local.metrics.length ? local.metrics : r.metrics;
    const seen = local && !BIG && local.last_seen_ms != null ? local.last_seen_ms : r.last_seen_ms;
    return h('tr', { 'data-row': r.id, 'data-state': st, tabindex: '0', title: 'Open ' + r.id },
      h('td', null, h('span', { class: 'mono' }, r.id), r.catalogued ? null : h('span', { class: 'flag' }, 'uncatalogued')),
      h('td', null, h('span', { class: 'pill st-' + st + (sev ? ' sev-' + sev : '') }, st === 'alerting' ? sev : st)),
      h('td', null, r.kind || '—'),
      h('td', null, r.district || '—'),
      h('td', { class: 'vals' }, metrics.filter((m) => m.value != null).map((m) => m.metric + ' ' + withUnit(m.value, m.unit)).join(' · ') || '—'),
      h('td', { class: 'muted' }, seen == null ? 'never' : [h('span', { class: 'age', 'data-since': seen }, fmtAge(now() - seen)), ' ago']));
  }));
  if (!TBL.rows.length) tbody.append(h('tr', null, h('td', { colspan: 6, class: 'empty' }, 'No sensor matches')));
  const filtered = TBL.total !== S.sensors.size;
  setText($('sensors-count'), '(' + (filtered ? TBL.total + ' of ' : '') + S.sensors.size + ')');
  const last = Math.min(TBL.total, TBL.offset + PAGE);
  setText($('sensors-pageinfo'), TBL.total ? (TBL.offset + 1) + '–' + last + ' of ' + TBL.total : '0');
  $('sensors-prev').disabled = TBL.offset === 0;
  $('sensors-next').disabled = last >= TBL.total;
}
function wireTables() {
  $('sensor-filter').addEventListener('input', refreshSensorsSoon);
  for (const id of ['sensor-district', 'sensor-kind', 'sensor-state']) $(id).addEventListener('change', refreshSensorsSoon);
  $('sensors-prev').addEventListener('click', () => { TBL.offset = Math.max(0, TBL.offset - PAGE); refreshSensorPage(); });
  $('sensors-next').addEventListener('click', () => { TBL.offset += PAGE; refreshSensorPage(); });
  $('gw-filter').addEventListener('input', () => { GWT.offset = 0; renderGateways(); });
  $('gw-state').addEventListener('change', () => { GWT.offset = 0; renderGateways(); });
  $('gw-prev').addEventListener('click', () => { GWT.offset = Math.max(0, GWT.offset - PAGE); renderGateways(); });
  $('gw-next').addEventListener('click', () => { GWT.offset += PAGE; renderGateways(); });
}

// ---------- districts ----------
// The league (worst first), with each district's share of sensors by state,
// its worst open alert and the figures a city reports, from /districts.
const DIST_POLL_MS = 5000;
async function refreshDistricts() {
  if (authWait) return;
  let d;
  try { d = await api('/districts'); } catch (_) { return; }
  d.byName = new Map(d.districts.map((x) => [x.name, x]));
  S.districts = d;
  fillSelect($('sensor-district'), d.districts.map((x) => x.name).sort());
  renderDistricts();
  // The map's labels carry each district's AQI: changed in place, not redrawn.
  if (!map.labels.size) scheduleMap();
  for (const [name, el] of map.labels) setText(el, districtAqi(name));
}
function spark(values, w, hgt) {
  const pts = values.map((v, i) => [i, v]).filter((p) => p[1] != null);
  if (pts.length < 2) return h('span', { class: 'muted spark-none' }, '—');
  const max = Math.max(...pts.map((p) => p[1]), 1), min = Math.min(...pts.map((p) => p[1]), 0);
  const n = values.length - 1 || 1;
  const line = pts.map(([i, v]) => (i / n * w).toFixed(1) + ',' + (hgt - 2 - (v - min) / (max - min || 1) * (hgt - 4)).toFixed(1)).join(' ');
  return svg('svg', { class: 'spark', width: w, height: hgt, viewBox: '0 0 ' + w + ' ' + hgt, 'aria-hidden': 'true' }, svg('polyline', { points: line }));
}
const AQI_COLORS = ['', '#2fbf71', '#f2c94c', '#ff9f1c', '#ff4d4f', '#a3307a', '#7e0023'];
function aqiCell(aqi) {
  if (!aqi) return h('span', { class: 'muted' }, '—');
  return h('span', { class: 'aqi', title: aqi.level.name + ' (' + aqi.level.name_zh + ')' },
    h('b', { class: 'aqi-badge', style: null, 'data-level': aqi.level.level }, String(aqi.aqi)), ' ', aqi.level.name,
    aqi.primary.length ? h('span', { class: 'muted' }, ' · ' + aqi.primary.map((p) => p.toUpperCase().replace('PM25', 'PM2.5')).join(', ')) : null);
}
function limitCell(x, unit) {
  if (!x) return h('span', { class: 'muted' }, '—');
  const over = x.above > 0;
  return h('span', { class: over ? 'over' : '' }, fmtNum(x.max) + ' ' + unit,
    x.limit != null ? h('span', { class: 'muted' }, ' / ' + fmtNum(x.limit)) : null,
    over ? h('span', { class: 'pill sev-warning' }, x.above + ' over') : null);
}
function shareBar(d) {
  const n = d.sensors || 1;
  const seg = (k) => h('i', { class: 'bar-' + k, style: null, 'data-share': Math.round(d[k] / n * 100) });
  const bar = h('span', { class: 'sharebar', title: d.ok + ' ok · ' + d.alerting + ' alerting · ' + d.stale + ' stale · ' + d.offline + ' offline' }, seg('alerting'), seg('offline'), seg('stale'), seg('ok'));
  // Widths through the CSSOM: the CSP allows no inline style attributes.
  for (const i of bar.children) i.style.width = i.dataset.share + '%';
  return bar;
}
function renderDistricts() {
  const d = S.districts;
  if (!d) return;
  const rows = [d.city].concat(d.districts);
  put($('district-league'), ...rows.map((x) => {
    const city = x === d.city;
    const sev = x.worst ? x.worst.severity : null;
    const alertsHere = city ? S.open.size : x.open_alerts;
    return h('tr', { 'data-district': x.name, class: (city ? 'city' : '') + (sev ? ' sev-' + sev : ''), 'data-severity': sev },
      h('td', { class: 'num rank' }, city ? '' : String(x.rank)),
      h('td', { class: 'dname' }, city ? 'City' : x.name),
      h('td', null, shareBar(x), WALL ? null : h('span', { class: 'muted small' }, ' ' + x.ok + '/' + x.sensors + ' ok')),
      h('td', { class: 'worst' }, x.worst ? [h('span', { class: 'badge sev-' + sev }, sev), ' ', x.worst.sensor, ' · ', h('span', { class: 'age', 'data-since': x.worst.started_ts_ms }, fmtAge(now() - x.worst.started_ts_ms)), alertsHere > 1 ? h('span', { class: 'muted' }, ' +' + (alertsHere - 1)) : null] : h('span', { class: 'muted' }, 'none')),
      h('td', null, aqiCell(x.indicators.aqi)),
      h('td', { class: 'trend' }, spark(x.spark.aqi, WALL ? 120 : 90, WALL ? 28 : 20)),
      h('td', null, limitCell(x.indicators.water, 'm')),
      h('td', null, limitCell(x.indicators.noise, 'dB')),
      h('td', { class: 'num' }, x.indicators.traffic && x.indicators.traffic.mean_speed_kmh != null ? fmtNum(x.indicators.traffic.mean_speed_kmh) + ' km/h' : '—'));
  }));
  for (const b of document.querySelectorAll('#district-league .aqi-badge')) b.style.background = AQI_COLORS[Number(b.dataset.level)] || '';
  if (WALL) fitWallRows($('district-league'), $('districts-more'), 'district');
}
// Wall: the rows that fit, and how many more.
function fitWallRows(tbody, more, noun) {
  const rows = [...tbody.children];
  rows.forEach((r) => { r.hidden = false; });
  const box = tbody.closest('.fit');
  if (!box) return;
  const limit = box.getBoundingClientRect().bottom;
  let hidden = 0;
  // Positions first, then hide: once one row does not fit, none after it is shown.
  const bottoms = rows.map((r) => r.getBoundingClientRect().bottom);
  const first = bottoms.findIndex((b) => b > limit + 1);
  if (first >= 0) for (const r of rows.slice(first)) { r.hidden = true; hidden++; }
  more.hidden = !hidden;
  more.textContent = hidden ? '+ ' + hidden + ' more ' + noun + (hidden > 1 ? 's' : '') : '';
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
// Worst first, then by id; searched, filtered by state and paged like the sensors.
const GW_RANK = { refusing: 0, offline: 1, degraded: 2, unknown: 3, online: 4 };
const GWT = { offset: 0 };
function renderGateways() {
  renderGatewayIssues();
  const tbody = $('gateways');
  const all = [...S.gateways.values()];
  const words = ($('gw-filter').value || '').trim().toLowerCase().split(/\s+/).filter(Boolean);
  const want = $('gw-state').value;
  const gws = all.filter((g) => (!want || gatewayState(g) === want) && words.every((w) => (g.id + ' ' + gatewayState(g)).toLowerCase().includes(w)))
    .sort((a, b) => (GW_RANK[gatewayState(a)] ?? 3) - (GW_RANK[gatewayState(b)] ?? 3) || (a.id < b.id ? -1 : 1));
  if (GWT.offset >= gws.length) GWT.offset = Math.max(0, Math.floor((gws.length - 1) / PAGE) * PAGE);
  const last = Math.min(gws.length, GWT.offset + PAGE);
  setText($('gw-pageinfo'), gws.length ? (GWT.offset + 1) + '–' + last + ' of ' + gws.length : '0');
  setText($('gateways-count'), '(' + (gws.length !== all.length ? gws.length + ' of ' : '') + all.length + ')');
  $('gw-prev').disabled = GWT.offset === 0;
  $('gw-next').disabled = last >= gws.length;
  if (!gws.length) { put(tbody, h('tr', null, h('td', { colspan: 13, class: 'empty' }, all.length ? 'No gateway matches' : 'No gateway has connected yet'))); return; }
  put(tbody, ...gws.slice(GWT.offset, last).map((g) => {
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
  // A big city's page holds no values: fetch this sensor's row first.
  if (BIG && !s.fetched) {
    s.fetched = true;
    api('/sensors/page?id=' + encodeURIComponent(id)).then((p) => { const r = p.rows[0]; if (r) Object.assign(s, { metrics: r.metrics, last_seen_ms: r.last_seen_ms, name: r.name }); openDetail(id); }, () => { s.fetched = false; });
    return;
  }
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
  const src = new EventSource(API + '/stream?types=' + (BIG ? 'alert,gateway' : 'reading,alert,gateway') + (token ? '&access_token=' + encodeURIComponent(token) : ''));
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
    const [sensors, gateways] = await Promise.all([BIG ? api('/map').then(mergeSnapshot) : api('/sensors'), api('/gateways')]);
    if (!BIG) { mergeSensors(sensors); scheduleMap(); }
    S.gateways = new Map(gateways.map((g) => [g.id, g]));
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

// Everything the feed and the polls change is drawn on the next animation
// frame, once, however many updates arrived since the last one.
let frame = 0;
function schedule() { if (!frame) frame = requestAnimationFrame(flushFrame); }
function flushFrame() {
  frame = 0;
  if (S.alertsDirty) renderAlerts();
  if (S.dirty) {
    S.dirty = false;
    // A small city's states move with time (stale); a big one's come with the snapshot, which marks the map itself.
    if (!BIG) map.dirty = true;
    renderKpis();
    if (S.detail) updateDetail();
  }
  if (map.dirty) drawMapNow();
  flushCharts();
}
function tick() {
  const t = now();
  for (const el of document.querySelectorAll('[data-since]')) {
    const v = Number(el.dataset.since);
    if (v) setText(el, fmtAge(t - v));
  }
  setText($('clock'), new Date().toLocaleTimeString([], WALL ? { hour: '2-digit', minute: '2-digit' } : undefined));
  schedule();
  for (const [id, until] of S.fresh) if (until < Date.now()) { S.fresh.delete(id); const r = document.querySelector('#alerts [data-alert-id="' + id + '"]'); if (r) r.classList.remove('fresh'); }
  for (const [id, e] of S.rowErrors) if (e.until < Date.now()) { S.rowErrors.delete(id); S.alertsDirty = true; }
  // A connection that says "open" but carries nothing for a minute is dead.
  if (es && es.readyState === EventSource.OPEN && Date.now() - S.lastEventAt > 60000) startStream();
}
// States change with time alone (stale), so the page re-derives them every
// second; a big city's come from the server with each snapshot instead.
setInterval(() => { if (!BIG) S.dirty = true; }, 1000);

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
  wireTables();
  wireMap();

  const svgEl = $('map');
  svgEl.addEventListener('mousemove', (e) => {
    const mk = e.target.closest && e.target.closest('[data-sensor]');
    const cl = !mk && e.target.closest && e.target.closest('.cluster');
    if (mk) showTip(mk.getAttribute('data-sensor'), e); else if (cl) showClusterTip(cl, e); else $('tip').hidden = true;
  });
  svgEl.addEventListener('mouseleave', () => { $('tip').hidden = true; });

  let lastSize = '';
  const ro = new ResizeObserver(() => {
    const w = $('map-wrap');
    const size = w.clientWidth + 'x' + w.clientHeight;
    if (size !== lastSize) {
      lastSize = size;
      map.size = { w: w.clientWidth, h: w.clientHeight, rem: parseFloat(getComputedStyle(document.documentElement).fontSize) || 16 };
      if (S.sensors.size) drawMap();
    }
    if (S.detail) for (const c of S.detail.charts.values()) if (c.u && c.u.width !== chartWidth()) c.u.setSize({ width: chartWidth(), height: c.u.height });
    if (WALL) { fitWallAlerts(); renderDistricts(); }
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
  map.late = new Set(overdue.flatMap((i) => i.sensors || []));
  updateMarkers();
  renderWallIncidents(open);
}
// The wall has no incidents table: the open ones go under its alerts, worst first, with their age.
function renderWallIncidents(open) {
  if (!WALL) return;
  const box = $('wall-incidents');
  const rank = (i) => (i.overdue ? 10 : 0) + (SEV_RANK[i.severity] || 0);
  const list = [...open].sort((a, b) => rank(b) - rank(a) || a.opened_ms - b.opened_ms);
  box.hidden = !list.length;
  put($('wall-inc-list'), ...list.map((i) => h('li', { class: 'wall-inc sev-' + i.severity + (i.overdue ? ' inc-overdue' : ''), 'data-incident-id': i.id },
    h('span', { class: 'badge sev-' + i.severity }, i.severity), ' ', h('strong', null, i.title), ' · ', i.department || 'unassigned', ' · ',
    h('span', { class: 'age', 'data-since': i.opened_ms }, fmtAge(now() - i.opened_ms)), i.overdue ? [' ', h('span', { class: 'pill inc-late' }, 'overdue')] : null)));
  fitWallRows($('wall-inc-list'), $('wall-inc-more'), 'incident');
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
  // The snapshot first: it says how big the city is and draws the map at once;
  // without a token it also asks whether this collector wants one (a 401 opens
  // the sign-in, which then starts everything).
  await loadSnapshot();
  if (!authWait) startStream();
  await Promise.allSettled([refreshHealth(), refreshAlerts(), refreshRules(), refreshDistricts()]);
  renderAlerts(); // rule kinds refine the labels
  refreshSensorPage();
  setInterval(refreshSensorPage, POLL_MS);
  setInterval(refreshDistricts, DIST_POLL_MS);
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
