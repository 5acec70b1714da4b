//! `GET /api/v1/sensors`: the catalogue joined with what the live view has
//! heard, catalogued or not.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::query::Params;
use super::{bad, ApiError, AppState};
use shared::{GatewayId, SensorId};

use crate::catalogue::SensorEntry;

#[derive(Serialize)]
pub struct MetricView {
    metric: String,
    unit: Option<String>,
    ts_ms: Option<i64>,
    value: Option<f64>,
    quality: Option<shared::Quality>,
}

#[derive(Serialize)]
pub struct SensorView {
    id: SensorId,
    kind: Option<String>,
    name: Option<String>,
    district: Option<String>,
    owner: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    installed: Option<String>,
    gateway: Option<GatewayId>,
    /// False for a sensor that sends data but is missing from the catalogue.
    catalogued: bool,
    last_seen_ms: Option<i64>,
    /// `ok`, or `stale` when nothing arrived for `stale_after_ms` (a sensor
    /// never heard from is `stale`); the dashboard applies the same rule.
    state: &'static str,
    /// Three of its usual intervals, clamped to 10–60 s (60 s until known).
    stale_after_ms: i64,
    /// Its usual time between deliveries, once two have arrived.
    interval_ms: Option<i64>,
    metrics: Vec<MetricView>,
}

/// `?catalogued=false` lists the sensors that send data but are not in the
/// catalogue, for an operator to add them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorsQuery {
    catalogued: Option<String>,
}

pub async fn sensors(State(st): State<AppState>, Params(q): Params<SensorsQuery>) -> Result<Json<Vec<SensorView>>, ApiError> {
    let only = match q.catalogued.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => return Err(bad(format!("catalogued `{v}` is not true or false"))),
    };
    let mut seen = st.registry.sensors();
    // The registry's clock, the one its arrival times were taken with.
    let now = st.clock.now_ms();
    let mut out: Vec<SensorView> = Vec::new();
    let view = |id: &str, entry: Option<&SensorEntry>, seen: Option<crate::registry::SensorSeen>| {
        let seen = seen.unwrap_or_default();
        let (state, stale_after_ms, interval_ms) = (if seen.stale(now) { "stale" } else { "ok" }, seen.stale_after_ms(), seen.interval_ms);
        let mut metrics: BTreeMap<String, MetricView> = BTreeMap::new();
        if let Some(e) = entry {
            for (m, u) in &e.units {
                metrics.insert(m.clone(), MetricView { metric: m.clone(), unit: Some(u.clone()), ts_ms: None, value: None, quality: None });
            }
        }
        for (m, l) in seen.latest {
            let unit = entry.and_then(|e| e.units.get(m.as_str()).cloned()).or_else(|| default_unit(&m).map(str::to_string));
            metrics.insert(m.to_string(), MetricView { metric: m.into_string(), unit, ts_ms: Some(l.ts_ms), value: Some(l.value), quality: Some(l.quality) });
        }
        SensorView {
            id: id.into(),
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
            state,
            stale_after_ms,
            interval_ms,
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
