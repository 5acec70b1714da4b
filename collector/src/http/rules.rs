//! `/api/v1/rules`: list, add and delete alert rules.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::{bad, body, ApiError, AppState};
use crate::rules::Rule;

pub async fn rules(State(st): State<AppState>) -> Json<Vec<Rule>> {
    Json(st.alerting.rules())
}

pub async fn add_rule(State(st): State<AppState>, bytes: axum::body::Bytes) -> Result<(StatusCode, Json<Rule>), ApiError> {
    let rule: Rule = body(&bytes)?;
    let problems = rule.validate();
    if !problems.is_empty() {
        let text: Vec<String> = problems.into_iter().map(|(f, m)| format!("{f}: {m}")).collect();
        return Err(bad(text.join("; ")));
    }
    st.alerting.add_rule(rule.clone())?;
    Ok((StatusCode::CREATED, Json(rule)))
}

pub async fn delete_rule(State(st): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    st.alerting.delete_rule(&id)?;
    Ok(StatusCode::NO_CONTENT)
}
