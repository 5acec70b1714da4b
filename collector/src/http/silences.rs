//! `/api/v1/silences`: maintenance windows and silences (list, create,
//! read, delete). The creator is the token's name; the guard audits each write.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;

use super::auth::Caller;
use super::{body, ApiError, AppState};
use crate::incident::silence::{Silence, SilenceSpec};
use crate::incident::IncidentError;

#[derive(Serialize)]
pub struct SilenceView {
    #[serde(flatten)]
    silence: Silence,
    active: bool,
}

pub async fn list(State(st): State<AppState>) -> Json<Vec<SilenceView>> {
    Json(st.incidents.silences().into_iter().map(|(silence, active)| SilenceView { silence, active }).collect())
}

fn silence_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError(StatusCode::NOT_FOUND, format!("no silence `{id}`")))
}

pub async fn one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<SilenceView>, ApiError> {
    let n = silence_id(&id)?;
    let found = st.incidents.silences().into_iter().find(|(s, _)| s.id == n).ok_or(IncidentError::NoSilence(n))?;
    Ok(Json(SilenceView { silence: found.0, active: found.1 }))
}

pub async fn create(State(st): State<AppState>, caller: Option<Extension<Caller>>, bytes: axum::body::Bytes) -> Result<(StatusCode, Json<Silence>), ApiError> {
    let spec: SilenceSpec = body(&bytes)?;
    let by = caller.map(|Extension(c)| c.name).unwrap_or_else(|| "(unknown)".into());
    Ok((StatusCode::CREATED, Json(st.incidents.add_silence(spec, &by)?)))
}

pub async fn delete(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Silence>, ApiError> {
    Ok(Json(st.incidents.delete_silence(silence_id(&id)?)?))
}
