//! `GET /healthz`: whether the collector is doing its job, for load balancers
//! and systemd; public, no token needed. 200 when every component runs and
//! keeps up; 503 naming each one that stopped, fails or has stalled with
//! work waiting (see `liveness`), and when the store cannot be read.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

pub async fn healthz(State(st): State<AppState>) -> Response {
    let mut failing: Vec<serde_json::Value> = st.liveness.problems().into_iter().map(|(component, problem)| json!({"component": component, "problem": problem})).collect();
    if let Err(e) = st.store.progress() {
        failing.push(json!({"component": "store", "problem": e.to_string()}));
    }
    let components = st.liveness.names();
    if failing.is_empty() {
        Json(json!({"status": "ok", "uptime_s": st.started.elapsed().as_secs(), "components": components})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "failing": failing, "components": components}))).into_response()
    }
}
