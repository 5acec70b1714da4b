//! `GET /api/v1/export`: a time range of raw series as CSV or InfluxDB line
//! protocol, for sharing with other departments. Catalogue fields travel with
//! every row so the file stands on its own.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::query::{parse_time, Params};
use super::{bad, ApiError, AppState};
use shared::{GatewayId, SensorId};

use crate::catalogue::SensorEntry;
use crate::sink::lineproto::{self, Scheme};

/// Samples in one export at most: beyond it, narrow the range or the series.
pub const MAX_EXPORT_POINTS: usize = 5_000_000;

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Csv,
    Line,
}

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn rfc3339(ts_ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ts_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    sensor: Option<String>,
    metric: Option<String>,
}

pub async fn export(State(st): State<AppState>, Params(q): Params<ExportQuery>) -> Result<Response, ApiError> {
    let format = match q.format.as_deref() {
        None | Some("csv") => Format::Csv,
        Some("line") => Format::Line,
        Some(f) => return Err(bad(format!("format `{f}` is not csv or line"))),
    };
    let now = st.clock.now_ms();
    let from = q.from.map(|s| parse_time("from", &s, now)).transpose()?.ok_or_else(|| bad("`from` is required (epoch ms, RFC 3339 or relative like -24h)"))?;
    let to = q.to.map(|s| parse_time("to", &s, now)).transpose()?.unwrap_or(now);
    if from > to {
        return Err(bad(format!("`from` ({from}) is after `to` ({to})")));
    }
    let (sensor, metric) = (q.sensor, q.metric);
    let catalogue: HashMap<SensorId, SensorEntry> = st.catalogue.iter().map(|e| (e.id.clone(), e.clone())).collect();
    let gateways: HashMap<SensorId, GatewayId> = st.registry.sensors().into_iter().filter_map(|(id, s)| s.gateway.map(|g| (id, g))).collect();
    let store = st.store.clone();
    let body = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let mut out = String::new();
        if format == Format::Csv {
            out.push_str("sensor,kind,district,owner,metric,unit,time,ts_ms,value,quality\n");
        }
        let mut total = 0;
        let wanted = store.series().into_iter().filter(|(s, m)| sensor.as_ref().is_none_or(|x| x == s) && metric.as_ref().is_none_or(|x| x == m));
        for (s, m) in wanted {
            let samples = store.query(&s, &m, from, to, MAX_EXPORT_POINTS + 1 - total).map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
            total += samples.len();
            if total > MAX_EXPORT_POINTS {
                return Err(bad(format!("more than {MAX_EXPORT_POINTS} points; narrow the time range or pick a sensor or metric")));
            }
            let entry = catalogue.get(&s);
            for smp in samples {
                match format {
                    Format::Csv => {
                        // As /api/v1/sensors shows it: the catalogue's unit, else the well-known one.
                        let unit = entry.and_then(|e| e.units.get(m.as_str())).map(String::as_str).or_else(|| super::sensors::default_unit(&m)).unwrap_or("");
                        for f in [
                            s.as_str(),
                            entry.map_or("", |e| e.kind.as_str()),
                            entry.and_then(|e| e.district.as_deref()).unwrap_or(""),
                            entry.and_then(|e| e.owner.as_deref()).unwrap_or(""),
                            m.as_str(),
                            unit,
                        ] {
                            csv_field(&mut out, f);
                            out.push(',');
                        }
                        let _ = writeln!(out, "{},{},{:?},{}", rfc3339(smp.ts_ms), smp.ts_ms, smp.value, smp.quality.as_str());
                    }
                    Format::Line => {
                        let r = shared::Reading { seq: shared::Seq::ZERO, sensor: s.clone(), metric: m.clone(), ts_ms: smp.ts_ms, value: smp.value, quality: smp.quality };
                        lineproto::line(&mut out, Scheme::Metric, &r, gateways.get(&s).map(GatewayId::as_str), entry);
                    }
                }
            }
        }
        Ok(out)
    })
    .await
    .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "export failed".into()))??;
    let (ctype, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Line => ("text/plain; charset=utf-8", "lp"),
    };
    let disposition = format!("attachment; filename=\"citysense-{from}-{to}.{ext}\"");
    Ok(([(header::CONTENT_TYPE, ctype.to_string()), (header::CONTENT_DISPOSITION, disposition)], body).into_response())
}
