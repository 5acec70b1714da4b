//! `/api/v1/incidents`: list (filters incl. `overdue`), one with its
//! timeline, and the actions `POST /api/v1/incidents/{id}/{action}`.
//! Operators act on their department's incidents, command on all; the
//! guard audits every action.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::query::Params;
use super::role::Role;
use super::{bad, body, ApiError, AppState};
use crate::alert::Severity;
use crate::incident::service::{Actor, Authority, Filter, IncidentView};
use crate::incident::state::Action;
use crate::incident::{IncidentError, Status};

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> ApiError {
        let status = match &e {
            IncidentError::NotFound(_) | IncidentError::NoSilence(_) => StatusCode::NOT_FOUND,
            IncidentError::NoDepartment(_) | IncidentError::Invalid(_) => StatusCode::BAD_REQUEST,
            IncidentError::Transition { .. } => StatusCode::CONFLICT,
            IncidentError::NotYours { .. } | IncidentError::Forbidden(_) => StatusCode::FORBIDDEN,
            IncidentError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

/// Who acts, from the caller the guard let through.
pub fn actor(caller: Option<Extension<Caller>>) -> Actor {
    match caller {
        Some(Extension(c)) if c.role >= Role::Command => Actor { name: c.name, authority: Authority::Command },
        Some(Extension(c)) => Actor { authority: c.department.map_or(Authority::None, Authority::Department), name: c.name },
        None => Actor { name: "(unknown)".into(), authority: Authority::None },
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsQuery {
    status: Option<String>,
    department: Option<String>,
    overdue: Option<String>,
    severity: Option<String>,
    district: Option<String>,
}

fn status(s: &str) -> Result<Vec<Status>, ApiError> {
    let mut out = Vec::new();
    for one in s.split(',').map(str::trim) {
        match one {
            "open" => out.extend([Status::New, Status::Assigned, Status::Acknowledged, Status::InProgress]),
            other => out.push(
                serde_json::from_value::<Status>(Value::String(other.into()))
                    .map_err(|_| bad(format!("status `{other}` is not new, assigned, acknowledged, in_progress, resolved, closed or open")))?,
            ),
        }
    }
    Ok(out)
}

pub async fn list(State(st): State<AppState>, Params(q): Params<IncidentsQuery>) -> Result<Json<Vec<IncidentView>>, ApiError> {
    let overdue = q
        .overdue
        .map(|o| match o.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(bad(format!("overdue `{other}` is not true or false"))),
        })
        .transpose()?;
    let severity = q
        .severity
        .map(|s| serde_json::from_value::<Severity>(Value::String(s.clone())).map_err(|_| bad(format!("severity `{s}` is not info, warning, critical or emergency"))))
        .transpose()?;
    if let Some(d) = q.department.as_deref().filter(|d| !st.incidents.has_department(d)) {
        return Err(bad(format!("department `{d}` is not a [[department]] id (GET /api/v1/departments)")));
    }
    let filter = Filter { status: q.status.as_deref().map(status).transpose()?, department: q.department, overdue, severity, district: q.district };
    Ok(Json(st.incidents.list(&filter)))
}

fn incident_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError(StatusCode::NOT_FOUND, format!("no incident `{id}`")))
}

pub async fn one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<IncidentView>, ApiError> {
    let n = incident_id(&id)?;
    st.incidents.get(n).map(Json).ok_or_else(|| IncidentError::NotFound(n).into())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Body {
    department: Option<String>,
    reason: Option<String>,
    note: Option<String>,
    text: Option<String>,
    action: Option<String>,
    rating: Option<String>,
    result: Option<String>,
}

/// Each action and the body fields it takes.
const ACTIONS: &str = "assign {department}, acknowledge {note?}, start, transfer {department, reason}, note {text}, resolve {action}, close {note?}, reopen {reason}, rate {rating: good|bad, reason}, rectify {result}";

fn need(v: Option<String>, field: &str, action: &str) -> Result<String, ApiError> {
    v.filter(|s| !s.trim().is_empty()).ok_or_else(|| bad(format!("{action} needs `{field}` in the body")))
}

pub async fn act(
    State(st): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    caller: Option<Extension<Caller>>,
    bytes: axum::body::Bytes,
) -> Result<Json<IncidentView>, ApiError> {
    let id = incident_id(&id)?;
    let b: Body = if bytes.iter().all(|c| c.is_ascii_whitespace()) { Body::default() } else { body(&bytes)? };
    let who = actor(caller);
    let a = action.as_str();
    let step = match a {
        "assign" => Action::Assign { department: need(b.department, "department", a)? },
        "acknowledge" => Action::Acknowledge { note: b.note },
        "start" => Action::Start,
        "transfer" => Action::Transfer { department: need(b.department, "department", a)?, reason: need(b.reason, "reason", a)? },
        "note" => Action::Note { text: need(b.text, "text", a)? },
        "resolve" => Action::Resolve { action: need(b.action, "action", a)? },
        "close" => Action::Close { note: b.note },
        "reopen" => Action::Reopen { reason: need(b.reason, "reason", a)? },
        "rate" => {
            let good = match need(b.rating, "rating", a)?.as_str() {
                "good" => true,
                "bad" => false,
                other => return Err(bad(format!("rating `{other}` is not good or bad"))),
            };
            return Ok(Json(st.incidents.rate(id, good, b.reason, &who)?));
        }
        "rectify" => return Ok(Json(st.incidents.rectify(id, need(b.result, "result", a)?, &who)?)),
        other => return Err(ApiError(StatusCode::NOT_FOUND, format!("no incident action `{other}`; actions: {ACTIONS}"))),
    };
    Ok(Json(st.incidents.act(id, step, &who)?))
}
