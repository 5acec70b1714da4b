//! `GET /api/v1/series`: one series over a time range, raw or in buckets
//! (answered from rollups when the step allows).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::query::{parse_step, parse_time, Params, TIME_RANGE};
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
    pub sensor: Option<String>,
    pub metric: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub step: Option<String>,
    pub agg: Option<String>,
}

/// Raw samples read at most to answer a `step` that rollups cannot (not a
/// whole minute): a finer step over a longer window needs narrowing.
pub const MAX_STEP_SAMPLES: usize = 5_000_000;

/// What a series query asks for, checked: every number bounded, so reading
/// and bucketing it can neither overflow nor allocate without limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub sensor: String,
    pub metric: String,
    pub from: i64,
    pub to: i64,
    pub step_ms: Option<i64>,
    pub agg: Option<Agg>,
}

impl Plan {
    pub fn parse(q: SeriesQuery, now: i64) -> Result<Plan, ApiError> {
        let sensor = q.sensor.filter(|s| !s.is_empty()).ok_or_else(|| bad("`sensor` is required"))?;
        let metric = q.metric.filter(|s| !s.is_empty()).ok_or_else(|| bad("`metric` is required"))?;
        let to = q.to.map(|s| parse_time("to", &s, now)).transpose()?.unwrap_or(now.clamp(*TIME_RANGE.start(), *TIME_RANGE.end()));
        let from = q.from.map(|s| parse_time("from", &s, now)).transpose()?.unwrap_or(to.saturating_sub(3_600_000).max(0));
        if from > to {
            return Err(bad(format!("`from` ({from}) is after `to` ({to})")));
        }
        let agg = q.agg.map(|a| Agg::parse(&a).map_err(|e| bad(e.to_string()))).transpose()?;
        let step_ms = q.step.map(|s| parse_step(&s)).transpose()?;
        if agg.is_some() && step_ms.is_none() {
            return Err(bad("`agg` needs a `step`"));
        }
        Ok(Plan { sensor, metric, from, to, step_ms, agg })
    }
}

pub async fn series(State(st): State<AppState>, Params(q): Params<SeriesQuery>) -> Result<Json<Value>, ApiError> {
    let Plan { sensor, metric, from, to, step_ms, agg } = Plan::parse(q, st.clock.now_ms())?;
    let level = step_ms.map_or(Level::Raw, Level::for_step);
    let (store, s, m) = (st.store.clone(), sensor.clone(), metric.clone());
    let read = tokio::task::spawn_blocking(move || match level {
        Level::Raw => store.query(&s, &m, from, to, if step_ms.is_some() { MAX_STEP_SAMPLES + 1 } else { MAX_RAW_POINTS + 1 }).map(Read::Raw),
        // Whole buckets: the one holding `from` counts in full.
        _ => store.roll_up_series(&s, &m).and_then(|_| store.rollups(&s, &m, level, from - from.rem_euclid(level.bucket_ms()), to)).map(Read::Rollups),
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
        (Some(_), Read::Raw(samples)) if samples.len() > MAX_STEP_SAMPLES => {
            return Err(bad(format!("more than {MAX_STEP_SAMPLES} raw points to bucket in this window; narrow it, or give a `step` of whole minutes (answered from rollups)")));
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
