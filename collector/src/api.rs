//! The HTTP API of contract v1 (JSON), `/metrics` and the dashboard page.
//! Bad input answers 4xx with `{"error": "…"}`, never 500.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::extract::Path;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::SensorEntry;
use crate::registry::Registry;
use crate::store::{aggregate, aggregate_rollups, Agg, Level, Rollup, Sample, Store};

enum Read {
    Raw(Vec<Sample>),
    Rollups(Vec<Rollup>),
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub catalogue: Arc<Vec<SensorEntry>>,
    pub alerting: Arc<crate::alerting::Alerting>,
    pub feed: crate::feed::Bus,
    pub started: std::time::Instant,
    /// Turns true when the collector stops: long-lived streams end on it.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The InfluxDB sink's counters, when one is configured.
    pub sink: Option<Arc<crate::sink::SinkStats>>,
    pub lifecycle: Arc<crate::lifecycle::LifecycleStats>,
    pub access: crate::auth::Access,
    pub tls: Arc<crate::front::TlsStats>,
    pub audit: Arc<crate::audit::AuditLog>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::web::index))
        .route("/assets/{*name}", get(crate::web::asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/sensors", get(sensors))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/series", get(series))
        .route("/api/v1/export", get(crate::export::export))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{id}/ack", post(ack))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route("/api/v1/rules", get(rules).post(add_rule))
        .route("/api/v1/rules/{id}", delete(delete_rule))
        .route("/api/v1/stream", get(crate::feed::sse::stream))
        .route("/api/v1/audit", get(audit))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route; see README for the API".into()) })
        .layer(axum::middleware::from_fn_with_state(state.access.clone(), crate::auth::guard))
        .layer(axum::extract::DefaultBodyLimit::max(crate::auth::MAX_BODY))
        .with_state(state)
}

pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

async fn healthz(State(st): State<AppState>) -> Response {
    match st.store.progress() {
        Ok(_) => Json(json!({"status": "ok", "uptime_s": st.started.elapsed().as_secs()})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "error": e.to_string()}))).into_response(),
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

async fn metrics(State(st): State<AppState>) -> Response {
    let c = &st.registry.counters;
    let mut out = String::new();
    counter(&mut out, "citysense_batches_total", "Batches accepted from agents.", c.batches.load(Relaxed));
    counter(&mut out, "citysense_readings_received_total", "Readings received in accepted batches, duplicates included.", c.received.load(Relaxed));
    counter(&mut out, "citysense_readings_stored_total", "Readings stored for the first time.", c.stored.load(Relaxed));
    counter(&mut out, "citysense_readings_duplicate_total", "Readings received again and not stored twice.", c.duplicate.load(Relaxed));
    counter(&mut out, "citysense_readings_dropped_at_agent_total", "Readings agents reported dropped before sending (buffer full).", c.skipped.load(Relaxed));
    counter(&mut out, "citysense_store_errors_total", "Store writes that failed (batches left unacknowledged).", c.store_errors.load(Relaxed));
    counter(&mut out, "citysense_rules_lagged_total", "Batches of stored readings the alert engine could not take in time.", c.rules_lagged.load(Relaxed));
    let _ = writeln!(out, "# HELP citysense_batches_rejected_total Batches rejected, by reason.\n# TYPE citysense_batches_rejected_total counter");
    let rejected = c.rejected.read().unwrap().clone();
    for reason in ["undecodable", "unknown_version", "too_large", "invalid", "gateway_mismatch", "unauthenticated", "unknown_gateway", "rate_limited"] {
        let _ = writeln!(out, "citysense_batches_rejected_total{{reason=\"{reason}\"}} {}", rejected.get(reason).copied().unwrap_or(0));
    }
    let _ = writeln!(out, "# HELP citysense_tls_handshakes_total TLS handshakes on the broker and HTTP listeners, by outcome.\n# TYPE citysense_tls_handshakes_total counter");
    let _ = writeln!(out, "citysense_tls_handshakes_total{{result=\"accepted\"}} {}\ncitysense_tls_handshakes_total{{result=\"refused\"}} {}", st.tls.accepted.load(Relaxed), st.tls.refused.load(Relaxed));
    let hooks = &st.alerting.outbox;
    let _ = writeln!(out, "# HELP citysense_webhook_delivered_total Webhook deliveries answered 2xx.\n# TYPE citysense_webhook_delivered_total counter\ncitysense_webhook_delivered_total {}", hooks.delivered.load(Relaxed));
    let _ = writeln!(out, "# HELP citysense_webhook_failures_total Webhook attempts that failed (retried).\n# TYPE citysense_webhook_failures_total counter\ncitysense_webhook_failures_total {}", hooks.failures.load(Relaxed));
    let _ = writeln!(out, "# HELP citysense_webhook_backlog Webhook deliveries waiting.\n# TYPE citysense_webhook_backlog gauge\ncitysense_webhook_backlog {}", hooks.backlog());
    counter(&mut out, "citysense_store_expired_samples_total", "Raw samples deleted past their retention.", st.lifecycle.expired_samples.load(Relaxed));
    counter(&mut out, "citysense_store_expired_rollups_total", "Rollup buckets deleted past their retention.", st.lifecycle.expired_rollups.load(Relaxed));
    let _ = writeln!(out, "# HELP citysense_store_bytes Bytes the embedded store takes on disk.\n# TYPE citysense_store_bytes gauge\ncitysense_store_bytes {}", st.store.size_on_disk());
    if let Some(sink) = &st.sink {
        counter(&mut out, "citysense_influx_points_written_total", "Points InfluxDB confirmed.", sink.written.load(Relaxed));
        counter(&mut out, "citysense_influx_points_rejected_total", "Points InfluxDB refused as invalid (logged, dropped).", sink.rejected.load(Relaxed));
        counter(&mut out, "citysense_influx_write_errors_total", "InfluxDB write requests that failed and are retried.", sink.errors.load(Relaxed));
        let _ = writeln!(out, "# HELP citysense_influx_backlog Readings stored and not yet confirmed by InfluxDB.\n# TYPE citysense_influx_backlog gauge\ncitysense_influx_backlog {}", st.store.forward_backlog());
    }
    let _ = writeln!(out, "# HELP citysense_alerts Alerts by state (resolved: all kept in history).\n# TYPE citysense_alerts gauge");
    for state in [crate::rules::State::Firing, crate::rules::State::Acknowledged, crate::rules::State::Resolved] {
        let n = st.alerting.alerts(|a| a.state == state).len();
        let _ = writeln!(out, "citysense_alerts{{state=\"{}\"}} {n}", state.as_str());
    }
    let _ = writeln!(out, "# HELP citysense_gateway_lag_seconds Ingest time minus the newest reading's time at the last batch.\n# TYPE citysense_gateway_lag_seconds gauge");
    let gws = st.registry.gateways();
    for g in &gws {
        if let Some(lag) = g.lag_ms {
            let _ = writeln!(out, "citysense_gateway_lag_seconds{{gateway=\"{}\"}} {:.3}", g.id, lag as f64 / 1000.0);
        }
    }
    let _ = writeln!(out, "# HELP citysense_gateway_buffer_depth Readings buffered at the gateway, from its last health report.\n# TYPE citysense_gateway_buffer_depth gauge");
    for g in &gws {
        if let Some(h) = &g.health {
            let _ = writeln!(out, "citysense_gateway_buffer_depth{{gateway=\"{}\"}} {}", g.id, h.buffer_depth);
        }
    }
    let _ = writeln!(out, "# HELP citysense_gateway_online 1 when the gateway's last state was online.\n# TYPE citysense_gateway_online gauge");
    for g in &gws {
        let _ = writeln!(out, "citysense_gateway_online{{gateway=\"{}\"}} {}", g.id, u8::from(g.status == "online"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[derive(Serialize)]
struct MetricView {
    metric: String,
    unit: Option<String>,
    ts_ms: Option<i64>,
    value: Option<f64>,
    quality: Option<shared::Quality>,
}

#[derive(Serialize)]
struct SensorView {
    id: String,
    kind: Option<String>,
    name: Option<String>,
    district: Option<String>,
    owner: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    installed: Option<String>,
    gateway: Option<String>,
    /// False for a sensor that sends data but is missing from the catalogue.
    catalogued: bool,
    last_seen_ms: Option<i64>,
    metrics: Vec<MetricView>,
}

/// `?catalogued=false` lists the sensors that send data but are not in the
/// catalogue, for an operator to add them.
async fn sensors(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Vec<SensorView>>, ApiError> {
    let only = match q.get("catalogued").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => return Err(bad(format!("catalogued `{v}` is not true or false"))),
    };
    if let Some(k) = q.keys().find(|k| *k != "catalogued") {
        return Err(bad(format!("unknown parameter `{k}`; use catalogued")));
    }
    let mut seen = st.registry.sensors();
    let mut out: Vec<SensorView> = Vec::new();
    let view = |id: &str, entry: Option<&SensorEntry>, seen: Option<crate::registry::SensorSeen>| {
        let seen = seen.unwrap_or_default();
        let mut metrics: BTreeMap<String, MetricView> = BTreeMap::new();
        if let Some(e) = entry {
            for (m, u) in &e.units {
                metrics.insert(m.clone(), MetricView { metric: m.clone(), unit: Some(u.clone()), ts_ms: None, value: None, quality: None });
            }
        }
        for (m, l) in seen.latest {
            let unit = entry.and_then(|e| e.units.get(&m).cloned()).or_else(|| default_unit(&m).map(str::to_string));
            metrics.insert(m.clone(), MetricView { metric: m, unit, ts_ms: Some(l.ts_ms), value: Some(l.value), quality: Some(l.quality) });
        }
        SensorView {
            id: id.to_string(),
            kind: entry.map(|e| e.kind.clone()),
            name: entry.and_then(|e| e.name.clone()),
            district: entry.and_then(|e| e.district.clone()),
            owner: entry.and_then(|e| e.owner.clone()),
            lat: entry.and_then(|e| e.lat),
            lon: entry.and_then(|e| e.lon),
            installed: entry.and_then(|e| e.installed.clone()),
            gateway: seen.gateway.or_else(|| entry.and_then(|e| e.gateway.clone())),
            catalogued: entry.is_some(),
            last_seen_ms: seen.last_seen_ms,
            metrics: metrics.into_values().collect(),
        }
    };
    for e in st.catalogue.iter() {
        let s = seen.remove(&e.id);
        out.push(view(&e.id, Some(e), s));
    }
    let mut rest: Vec<_> = seen.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, s) in rest {
        out.push(view(&id, None, Some(s)));
    }
    out.retain(|s| only.is_none_or(|c| s.catalogued == c));
    Ok(Json(out))
}

/// Units for the contract's well-known metrics, used when the catalogue gives none.
pub fn default_unit(metric: &str) -> Option<&'static str> {
    Some(match metric {
        "pm25" | "pm10" | "no2" => "ug/m3",
        "noise_laeq" => "dB(A)",
        "vehicle_count" => "vehicles",
        "occupancy" => "%",
        "speed_kmh" => "km/h",
        "water_level_m" => "m",
        "temperature_c" => "degC",
        _ => return None,
    })
}

async fn gateways(State(st): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = st
        .registry
        .gateways()
        .into_iter()
        .map(|g| {
            let h = g.health.as_ref();
            json!({
                "id": g.id,
                "status": g.status,
                "last_seen_ms": g.last_seen_ms,
                "buffer_depth": h.map(|h| h.buffer_depth),
                "oldest_buffered_age_ms": h.map(|h| h.oldest_age_ms),
                "dropped_at_gateway": h.map(|h| h.dropped),
                "readings_received": g.readings_received,
                "duplicates": g.duplicates,
                "rejected_batches": g.rejected_batches,
                "acked_seq": g.acked_seq,
                "lag_ms": g.lag_ms,
                "devices": h.map(|h| h.devices.clone()).unwrap_or_default(),
            })
        })
        .collect();
    Json(Value::Array(list))
}

/// `from`/`to`: epoch ms, RFC 3339, or relative to now like `-1h`, `-15m`.
pub fn parse_time(name: &str, s: &str, now: i64) -> Result<i64, ApiError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(rel) = s.strip_prefix('-') {
        if let Ok(d) = humantime::parse_duration(rel) {
            return Ok(now - d.as_millis() as i64);
        }
    }
    if s == "now" {
        return Ok(now);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| bad(format!("`{name}={s}` is not epoch ms, RFC 3339 (2026-11-23T08:00:00Z) or relative (-1h)")))
}

/// Raw points returned at most; a larger window needs a `step`.
pub const MAX_RAW_POINTS: usize = 100_000;

async fn series(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let sensor = q.get("sensor").filter(|s| !s.is_empty()).ok_or_else(|| bad("`sensor` is required"))?;
    let metric = q.get("metric").filter(|s| !s.is_empty()).ok_or_else(|| bad("`metric` is required"))?;
    for k in q.keys() {
        if !["sensor", "metric", "from", "to", "step", "agg"].contains(&k.as_str()) {
            return Err(bad(format!("unknown parameter `{k}`; use sensor, metric, from, to, step, agg")));
        }
    }
    let now = shared::now_ms();
    let to = q.get("to").map(|s| parse_time("to", s, now)).transpose()?.unwrap_or(now);
    let from = q.get("from").map(|s| parse_time("from", s, now)).transpose()?.unwrap_or(to - 3_600_000);
    if from > to {
        return Err(bad(format!("`from` ({from}) is after `to` ({to})")));
    }
    let agg = q.get("agg").map(|a| Agg::parse(a).map_err(bad)).transpose()?;
    let step_ms = match q.get("step") {
        None => None,
        Some(s) => {
            let ms = match s.parse::<i64>() {
                Ok(ms) => ms,
                Err(_) => humantime::parse_duration(s).map_err(|_| bad(format!("`step={s}` is not a duration (10s, 1m) or ms")))?.as_millis() as i64,
            };
            if ms <= 0 {
                return Err(bad("`step` must be positive"));
            }
            Some(ms)
        }
    };
    if agg.is_some() && step_ms.is_none() {
        return Err(bad("`agg` needs a `step`"));
    }
    let level = step_ms.map_or(Level::Raw, Level::for_step);
    let (store, s, m) = (st.store.clone(), sensor.clone(), metric.clone());
    let read = tokio::task::spawn_blocking(move || match level {
        Level::Raw => store.query(&s, &m, from, to, if step_ms.is_some() { usize::MAX } else { MAX_RAW_POINTS + 1 }).map(Read::Raw),
        // Whole buckets: the one holding `from` counts in full.
        _ => store.roll_up().and_then(|_| store.rollups(&s, &m, level, from - from.rem_euclid(level.bucket_ms()), to)).map(Read::Rollups),
    });
    let read = read
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "query failed".into()))?
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let resolution = match level {
        Level::Raw => "raw",
        Level::Minute => "1m",
        Level::Hour => "1h",
    };
    let body = match (step_ms, read) {
        (None, Read::Raw(samples)) => {
            if samples.len() > MAX_RAW_POINTS {
                return Err(bad(format!("more than {MAX_RAW_POINTS} raw points in this window; give a `step`")));
            }
            json!({"sensor": sensor, "metric": metric, "from": from, "to": to, "resolution": resolution, "points": samples})
        }
        (Some(step), read) => {
            let agg = agg.unwrap_or(Agg::Mean);
            let buckets = match read {
                Read::Raw(samples) => aggregate(&samples, step, agg),
                Read::Rollups(r) => aggregate_rollups(&r, step, agg),
            };
            let points: Vec<Value> = buckets.into_iter().map(|(ts, v)| json!({"ts_ms": ts, "value": v})).collect();
            json!({"sensor": sensor, "metric": metric, "from": from, "to": to, "step_ms": step, "agg": format!("{agg:?}").to_lowercase(), "resolution": resolution, "points": points})
        }
        (None, Read::Rollups(_)) => unreachable!("rollups are read only for a step"),
    };
    Ok(Json(body))
}

async fn alerts(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Vec<crate::rules::Alert>>, ApiError> {
    for k in q.keys() {
        if !["state", "severity", "sensor"].contains(&k.as_str()) {
            return Err(bad(format!("unknown parameter `{k}`; use state, severity, sensor")));
        }
    }
    let state = q.get("state").map(|s| match s.as_str() {
        "firing" => Ok(vec![crate::rules::State::Firing]),
        "acknowledged" => Ok(vec![crate::rules::State::Acknowledged]),
        "resolved" => Ok(vec![crate::rules::State::Resolved]),
        "open" => Ok(vec![crate::rules::State::Firing, crate::rules::State::Acknowledged]),
        other => Err(bad(format!("state `{other}` is not firing, acknowledged, resolved or open"))),
    });
    let state = state.transpose()?;
    let severity = q
        .get("severity")
        .map(|s| serde_json::from_value::<crate::rules::Severity>(Value::String(s.clone())).map_err(|_| bad(format!("severity `{s}` is not info, warning, critical or emergency"))))
        .transpose()?;
    let sensor = q.get("sensor").cloned();
    Ok(Json(st.alerting.alerts(|a| {
        state.as_ref().is_none_or(|s| s.contains(&a.state)) && severity.is_none_or(|s| a.severity == s) && sensor.as_ref().is_none_or(|s| &a.sensor == s)
    })))
}

fn alert_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError(StatusCode::NOT_FOUND, format!("no alert `{id}`")))
}

fn lifecycle_error(e: String) -> ApiError {
    if e.starts_with("no alert") {
        ApiError(StatusCode::NOT_FOUND, e)
    } else {
        ApiError(StatusCode::CONFLICT, e)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: String,
    note: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    by: Option<String>,
    note: Option<String>,
}

/// A JSON body, with a 400 that says what is wrong instead of axum's default.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("body: {e}")))
}

async fn ack(State(st): State<AppState>, Path(id): Path<String>, bytes: axum::body::Bytes) -> Result<Json<crate::rules::Alert>, ApiError> {
    let id = alert_id(&id)?;
    let b: AckBody = body(&bytes)?;
    if b.by.trim().is_empty() {
        return Err(bad("`by` must name who acknowledges"));
    }
    st.alerting.ack(id, b.by, b.note).map(Json).map_err(lifecycle_error)
}

async fn resolve(State(st): State<AppState>, Path(id): Path<String>, bytes: axum::body::Bytes) -> Result<Json<crate::rules::Alert>, ApiError> {
    let id = alert_id(&id)?;
    let b: ResolveBody = if bytes.is_empty() { ResolveBody::default() } else { body(&bytes)? };
    st.alerting.resolve(id, b.by, b.note).map(Json).map_err(lifecycle_error)
}

/// `GET /api/v1/audit?limit=N&from=T`: API writes, newest first.
async fn audit(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Vec<crate::audit::AuditEntry>>, ApiError> {
    if let Some(k) = q.keys().find(|k| !["limit", "from"].contains(&k.as_str())) {
        return Err(bad(format!("unknown parameter `{k}`; use limit, from")));
    }
    let limit = q.get("limit").map(|l| l.parse::<usize>().map_err(|_| bad(format!("limit `{l}` is not a number")))).transpose()?.unwrap_or(100);
    let from = q.get("from").map(|s| parse_time("from", s, shared::now_ms())).transpose()?.unwrap_or(i64::MIN);
    st.audit.recent(limit, from).map(Json).map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))
}

async fn rules(State(st): State<AppState>) -> Json<Vec<crate::rules::Rule>> {
    Json(st.alerting.rules())
}

async fn add_rule(State(st): State<AppState>, bytes: axum::body::Bytes) -> Result<(StatusCode, Json<crate::rules::Rule>), ApiError> {
    let rule: crate::rules::Rule = body(&bytes)?;
    let problems = rule.validate();
    if !problems.is_empty() {
        let text: Vec<String> = problems.into_iter().map(|(f, m)| format!("{f}: {m}")).collect();
        return Err(bad(text.join("; ")));
    }
    st.alerting.add_rule(rule.clone()).map_err(|e| ApiError(StatusCode::CONFLICT, e))?;
    Ok((StatusCode::CREATED, Json(rule)))
}

async fn delete_rule(State(st): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    match st.alerting.delete_rule(&id) {
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no rule `{id}`"))),
        Some(Err(e)) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e)),
        Some(Ok(())) => Ok(StatusCode::NO_CONTENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time("from", "1700000000000", now).ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("from", "2023-11-14T22:13:20Z", now).ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("from", "-1h", now).ok(), Some(now - 3_600_000));
        assert!(parse_time("from", "yesterday", now).is_err());
    }
}
