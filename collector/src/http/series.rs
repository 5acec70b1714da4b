//! `GET /api/v1/series`: one series over a time range, raw or in buckets
//! (answered from rollups when the step allows).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::query::{parse_time, Params};
use super::{bad, ApiError, AppState};
use crate::store::{aggregate, aggregate_rollups, Agg, Level, Rollup, Sample};

enum Read {
    Raw(Vec<Sample>),
    Rollups(Vec<Rollup>),
}

/// Raw points returned at most; a larger window needs a `step`.
pub const MAX_RAW_POINTS: usize = 100_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    sensor: Option<String>,
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
    agg: Option<String>,
}

pub async fn series(State(st): State<AppState>, Params(q): Params<SeriesQuery>) -> Result<Json<Value>, ApiError> {
    let sensor = q.sensor.filter(|s| !s.is_empty()).ok_or_else(|| bad("`sensor` is required"))?;
    let metric = q.metric.filter(|s| !s.is_empty()).ok_or_else(|| bad("`metric` is required"))?;
    let now = st.clock.now_ms();
    let to = q.to.map(|s| parse_time("to", &s, now)).transpose()?.unwrap_or(now);
    let from = q.from.map(|s| parse_time("from", &s, now)).transpose()?.unwrap_or(to - 3_600_000);
    if from > to {
        return Err(bad(format!("`from` ({from}) is after `to` ({to})")));
    }
    let agg = q.agg.map(|a| Agg::parse(&a).map_err(|e| bad(e.to_string()))).transpose()?;
    let step_ms = match q.step {
        None => None,
        Some(s) => {
            let ms = match s.parse::<i64>() {
                Ok(ms) => ms,
                Err(_) => humantime::parse_duration(&s).map_err(|_| bad(format!("`step={s}` is not a duration (10s, 1m) or ms")))?.as_millis() as i64,
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
    let read = read.await.map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "query failed".into()))?.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
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
