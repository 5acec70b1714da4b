//! `/api/v1/departments`: departments with their escalation chains, and
//! performance per department and period (`…/performance?from&to`, JSON or
//! `format=csv`; with `step`, one set of figures per period of that length:
//! the trend); `/api/v1/departments/performance` is the league table.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::query::{parse_time, Params};
use super::{bad, ApiError, AppState};
use crate::incident::department::DepartmentView;
use crate::incident::performance::{csv, Performance};
use crate::incident::IncidentError;

pub async fn list(State(st): State<AppState>) -> Json<Vec<DepartmentView>> {
    Json(st.incidents.departments())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    step: Option<String>,
}

/// At most this many periods in a trend.
const MAX_PERIODS: i64 = 1000;

const DAY_MS: i64 = 86_400_000;

/// The period, by default the last 30 days up to now; and whether CSV was asked for.
fn period(st: &AppState, q: &PeriodQuery) -> Result<(i64, i64, bool), ApiError> {
    let now = st.incidents.now();
    let to = q.to.as_deref().map(|s| parse_time("to", s, now)).transpose()?.unwrap_or(now + 1);
    let from = q.from.as_deref().map(|s| parse_time("from", s, now)).transpose()?.unwrap_or(to - 30 * DAY_MS);
    if from >= to {
        return Err(bad(format!("`from` ({from}) must be before `to` ({to})")));
    }
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(bad(format!("format `{other}` is not json or csv"))),
    };
    Ok((from, to, csv))
}

/// CSV (one row per department), else JSON: one department's figures or the league's list.
fn answer(rows: Vec<Performance>, as_csv: bool) -> Response {
    if as_csv {
        return ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv(&rows)).into_response();
    }
    Json(rows).into_response()
}

pub async fn performance(State(st): State<AppState>, Path(id): Path<String>, Params(q): Params<PeriodQuery>) -> Result<Response, ApiError> {
    let (from, to, as_csv) = period(&st, &q)?;
    let figures = |from, to| {
        st.incidents.performance(&id, from, to).map_err(|e| match e {
            IncidentError::NoDepartment(d) => ApiError(StatusCode::NOT_FOUND, format!("no department `{d}` (GET /api/v1/departments)")),
            other => other.into(),
        })
    };
    if let Some(step) = q.step.as_deref() {
        let step = super::query::parse_step(step)?;
        if (to - from + step - 1) / step > MAX_PERIODS {
            return Err(bad(format!("`step` makes more than {MAX_PERIODS} periods between `from` and `to`; take a longer step")));
        }
        let starts = (0..).map(|n| from + n * step).take_while(|s| *s < to);
        let rows = starts.map(|s| figures(s, (s + step).min(to))).collect::<Result<Vec<_>, _>>()?;
        return Ok(answer(rows, as_csv));
    }
    let p = figures(from, to)?;
    Ok(if as_csv { answer(vec![p], true) } else { Json(p).into_response() })
}

pub async fn league(State(st): State<AppState>, Params(q): Params<PeriodQuery>) -> Result<Response, ApiError> {
    if q.step.is_some() {
        return Err(bad("`step` is for one department's trend: /api/v1/departments/{id}/performance?step=1d"));
    }
    let (from, to, as_csv) = period(&st, &q)?;
    Ok(answer(st.incidents.league(from, to), as_csv))
}
