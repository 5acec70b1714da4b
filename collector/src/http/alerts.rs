//! `/api/v1/alerts`: list, acknowledge, resolve.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::query::Params;
use super::{bad, body, ApiError, AppState};
use crate::rules::{Alert, Severity, State as AlertState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    state: Option<String>,
    severity: Option<String>,
    sensor: Option<String>,
}

pub async fn alerts(State(st): State<AppState>, Params(q): Params<AlertsQuery>) -> Result<Json<Vec<Alert>>, ApiError> {
    let state = q.state.map(|s| match s.as_str() {
        "firing" => Ok(vec![AlertState::Firing]),
        "acknowledged" => Ok(vec![AlertState::Acknowledged]),
        "resolved" => Ok(vec![AlertState::Resolved]),
        "open" => Ok(vec![AlertState::Firing, AlertState::Acknowledged]),
        other => Err(bad(format!("state `{other}` is not firing, acknowledged, resolved or open"))),
    });
    let state = state.transpose()?;
    let severity = q
        .severity
        .map(|s| serde_json::from_value::<Severity>(Value::String(s.clone())).map_err(|_| bad(format!("severity `{s}` is not info, warning, critical or emergency"))))
        .transpose()?;
    let sensor = q.sensor;
    Ok(Json(
        st.alerting.alerts(|a| state.as_ref().is_none_or(|s| s.contains(&a.state)) && severity.is_none_or(|s| a.severity == s) && sensor.as_ref().is_none_or(|s| &a.sensor == s)),
    ))
}

fn alert_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError(StatusCode::NOT_FOUND, format!("no alert `{id}`")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: String,
    note: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    by: Option<String>,
    note: Option<String>,
}

pub async fn ack(State(st): State<AppState>, Path(id): Path<String>, bytes: axum::body::Bytes) -> Result<Json<Alert>, ApiError> {
    let id = alert_id(&id)?;
    let b: AckBody = body(&bytes)?;
    if b.by.trim().is_empty() {
        return Err(bad("`by` must name who acknowledges"));
    }
    Ok(Json(st.alerting.ack(id, b.by, b.note)?))
}

pub async fn resolve(State(st): State<AppState>, Path(id): Path<String>, bytes: axum::body::Bytes) -> Result<Json<Alert>, ApiError> {
    let id = alert_id(&id)?;
    let b: ResolveBody = if bytes.is_empty() { ResolveBody::default() } else { body(&bytes)? };
    Ok(Json(st.alerting.resolve(id, b.by, b.note)?))
}
