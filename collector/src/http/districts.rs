//! The city view (`crate::district`) over HTTP, shaped so a browser never
//! pulls 10,000 full sensor objects: `GET /api/v1/districts` (per-district
//! aggregates and indicators, worst first, with the city's), `GET /api/v1/map`
//! (every sensor as columns of arrays, names interned), `GET
//! /api/v1/map/boundaries` (the configured district shapes) and `GET
//! /api/v1/sensors/page` (the sensors table, filtered, sorted and paged here).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::query::{NoQuery, Params};
use super::sensors::default_unit;
use super::{bad, ApiError, AppState};
use crate::district::{severity_code, DistrictView, SensorNow, Status};

#[derive(Serialize)]
pub struct Districts {
    now_ms: i64,
    city: DistrictView,
    /// Worst first.
    districts: Vec<DistrictView>,
}

pub async fn districts(State(st): State<AppState>, Params(_): Params<NoQuery>) -> Json<Districts> {
    let snap = st.city.snapshot();
    Json(Districts { now_ms: snap.now_ms, city: snap.city.clone(), districts: snap.districts.clone() })
}

/// Names as indexes into a list, -1 for none: 10,000 sensors in ten
/// districts carry ten strings, not ten thousand.
#[derive(Default)]
struct Interner {
    names: Vec<String>,
    index: HashMap<String, i32>,
}

impl Interner {
    fn id(&mut self, name: Option<&str>) -> i32 {
        let Some(n) = name else { return -1 };
        if let Some(&i) = self.index.get(n) {
            return i;
        }
        let i = self.names.len() as i32;
        self.names.push(n.to_string());
        self.index.insert(n.to_string(), i);
        i
    }
}

fn round5(v: Option<f64>) -> Option<f64> {
    v.map(|x| (x * 1e5).round() / 1e5)
}

/// Columns, one entry per sensor in catalogue order (then the uncatalogued):
/// `s` is the state (0 ok, 1 alerting, 2 stale, 3 offline) and `sev` the worst
/// open alert (0 none, 1 info … 4 emergency). Serialized straight from these
/// vectors: a JSON tree of 100,000 values would cost more than the answer.
#[derive(Serialize)]
pub struct MapView<'a> {
    now_ms: i64,
    districts: Vec<String>,
    kinds: Vec<String>,
    gateways: Vec<String>,
    id: Vec<&'a str>,
    lat: Vec<Option<f64>>,
    lon: Vec<Option<f64>>,
    d: Vec<i32>,
    k: Vec<i32>,
    g: Vec<i32>,
    s: Vec<u8>,
    sev: Vec<u8>,
    c: Vec<u8>,
    tiles: Option<Value>,
    boundaries: bool,
}

pub async fn map(State(st): State<AppState>, Params(_): Params<NoQuery>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let snap = st.city.snapshot();
    let n = snap.sensors.len();
    let (mut districts, mut kinds, mut gateways) = (Interner::default(), Interner::default(), Interner::default());
    // Districts in league order, so index 0 is the worst off.
    for dv in &snap.districts {
        districts.id(Some(&dv.name));
    }
    let cfg = &st.city.config;
    let mut v = MapView {
        now_ms: snap.now_ms,
        districts: Vec::new(),
        kinds: Vec::new(),
        gateways: Vec::new(),
        id: Vec::with_capacity(n),
        lat: Vec::with_capacity(n),
        lon: Vec::with_capacity(n),
        d: Vec::with_capacity(n),
        k: Vec::with_capacity(n),
        g: Vec::with_capacity(n),
        s: Vec::with_capacity(n),
        sev: Vec::with_capacity(n),
        c: Vec::with_capacity(n),
        tiles: cfg.tile_url.as_ref().map(|u| json!({ "url": u, "attribution": cfg.tile_attribution })),
        boundaries: st.city.boundaries.is_some(),
    };
    for x in snap.sensors.iter() {
        v.id.push(x.id.as_str());
        v.lat.push(round5(x.entry.as_ref().and_then(|e| e.lat)));
        v.lon.push(round5(x.entry.as_ref().and_then(|e| e.lon)));
        v.d.push(districts.id(x.district()));
        v.k.push(kinds.id(x.kind()));
        v.g.push(gateways.id(x.gateway.as_deref()));
        v.s.push(x.status.code());
        v.sev.push(severity_code(x.severity));
        v.c.push(u8::from(x.entry.is_some()));
    }
    (v.districts, v.kinds, v.gateways) = (districts.names, kinds.names, gateways.names);
    Json(v).into_response()
}

pub async fn boundaries(State(st): State<AppState>, Params(_): Params<NoQuery>) -> Result<Json<Value>, ApiError> {
    match &st.city.boundaries {
        Some(b) => Ok(Json(b.to_geojson())),
        None => Err(ApiError(StatusCode::NOT_FOUND, "no district boundaries configured ([map] boundaries in the collector config)".into())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Words that must all appear in the id, name, kind, district or gateway.
    q: Option<String>,
    district: Option<String>,
    kind: Option<String>,
    state: Option<String>,
    /// One sensor by id (the detail panel).
    id: Option<String>,
    /// `state` (worst first, the default), `id`, `district`, `kind` or `last_seen`.
    sort: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
}

pub const MAX_PAGE: usize = 500;

#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    name: Option<&'a str>,
    kind: Option<&'a str>,
    district: Option<&'a str>,
    gateway: Option<&'a str>,
    catalogued: bool,
    state: Status,
    severity: Option<crate::rules::Severity>,
    last_seen_ms: Option<i64>,
    metrics: Vec<Value>,
}

fn row(x: &SensorNow) -> Row<'_> {
    let e = x.entry.as_deref();
    let metrics = x
        .latest
        .iter()
        .map(|(m, l)| {
            let unit = e.and_then(|e| e.units.get(m.as_str()).cloned()).or_else(|| default_unit(m).map(str::to_string));
            json!({ "metric": m.as_str(), "value": l.value, "ts_ms": l.ts_ms, "quality": l.quality, "unit": unit })
        })
        .collect();
    Row {
        id: &x.id,
        name: e.and_then(|e| e.name.as_deref()),
        kind: x.kind(),
        district: x.district(),
        gateway: x.gateway.as_deref(),
        catalogued: e.is_some(),
        state: x.status,
        severity: x.severity,
        last_seen_ms: x.last_seen_ms,
        metrics,
    }
}

fn number(name: &str, v: Option<&str>, default: usize) -> Result<usize, ApiError> {
    v.map_or(Ok(default), |v| v.parse().map_err(|_| bad(format!("{name} `{v}` is not a whole number"))))
}

pub async fn page(State(st): State<AppState>, Params(q): Params<PageQuery>) -> Result<Json<Value>, ApiError> {
    let offset = number("offset", q.offset.as_deref(), 0)?;
    let limit = number("limit", q.limit.as_deref(), 50)?;
    if limit == 0 || limit > MAX_PAGE {
        return Err(bad(format!("limit {limit} must be 1 to {MAX_PAGE}")));
    }
    let state =
        q.state.as_deref().filter(|s| !s.is_empty()).map(|s| Status::parse(s).ok_or_else(|| bad(format!("state `{s}` is not ok, alerting, stale or offline")))).transpose()?;
    let sort = q.sort.as_deref().unwrap_or("state");
    if !["state", "id", "district", "kind", "last_seen"].contains(&sort) {
        return Err(bad(format!("sort `{sort}` is not state, id, district, kind or last_seen")));
    }
    let words: Vec<String> = q.q.as_deref().unwrap_or("").split_whitespace().map(str::to_lowercase).collect();
    let snap = st.city.snapshot();
    let empty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
    let (district, kind) = (empty(&q.district), empty(&q.kind));
    let mut hits: Vec<&SensorNow> = snap
        .sensors
        .iter()
        .filter(|x| q.id.as_deref().is_none_or(|i| x.id == i))
        .filter(|x| district.as_deref().is_none_or(|d| x.district() == Some(d)))
        .filter(|x| kind.as_deref().is_none_or(|k| x.kind() == Some(k)))
        .filter(|x| state.is_none_or(|s| x.status == s))
        .filter(|x| {
            words.is_empty() || {
                let e = x.entry.as_deref();
                let hay = [Some(x.id.as_str()), e.and_then(|e| e.name.as_deref()), x.kind(), x.district(), x.gateway.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase();
                words.iter().all(|w| hay.contains(w.as_str()))
            }
        })
        .collect();
    match sort {
        "state" => hits.sort_by(|a, b| b.rank().cmp(&a.rank()).then_with(|| a.id.cmp(&b.id))),
        "id" => hits.sort_by(|a, b| a.id.cmp(&b.id)),
        "district" => hits.sort_by(|a, b| a.district().cmp(&b.district()).then_with(|| a.id.cmp(&b.id))),
        "kind" => hits.sort_by(|a, b| a.kind().cmp(&b.kind()).then_with(|| a.id.cmp(&b.id))),
        _ => hits.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then_with(|| a.id.cmp(&b.id))),
    }
    let total = hits.len();
    let rows: Vec<Row> = hits.into_iter().skip(offset).take(limit).map(row).collect();
    Ok(Json(json!({ "now_ms": snap.now_ms, "total": total, "offset": offset, "limit": limit, "rows": rows })))
}

/// With `[map] tile_url`, the page may load images from that tile server too
/// (and nothing else new): the one widening of the dashboard's CSP.
pub async fn allow_tiles(origin: Option<String>, req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let mut r = next.run(req).await;
    if let Some(o) = origin {
        let h = r.headers_mut();
        let widened =
            h.get(axum::http::header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()).map(|v| v.replacen("img-src 'self' data:", &format!("img-src 'self' data: {o}"), 1));
        if let Some(v) = widened.and_then(|v| axum::http::HeaderValue::from_str(&v).ok()) {
            h.insert(axum::http::header::CONTENT_SECURITY_POLICY, v);
        }
    }
    r
}
