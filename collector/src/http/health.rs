//! `GET /healthz`: whether the collector can serve, for load balancers and
//! systemd; public, no token needed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

pub async fn healthz(State(st): State<AppState>) -> Response {
    match st.store.progress() {
        Ok(_) => Json(json!({"status": "ok", "uptime_s": st.started.elapsed().as_secs()})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "error": e.to_string()}))).into_response(),
    }
}
