//! The simulator's control endpoint, for forcing anomalies on demand:
//!
//! - `POST /force?sensor=aq-001&metric=pm25&value=180`: hold a value
//! - `POST /clear?sensor=aq-001[&metric=pm25]`: back to natural values
//! - `POST /silent?sensor=tr-002&on=true|false`: stop answering / publishing
//! - `POST /drop?sensor=wl-001&on=true|false`: off the network
//! - `GET /`: what is forced right now
//!
//! Bound to loopback: it is a test and demo tool, not a production interface.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::Control;

type Reply = (StatusCode, Json<Value>);

fn need<'a>(q: &'a HashMap<String, String>, key: &str) -> Result<&'a str, Reply> {
    q.get(key).map(String::as_str).filter(|v| !v.is_empty()).ok_or_else(|| (StatusCode::BAD_REQUEST, Json(json!({"error": format!("`{key}` is required")}))))
}

fn flag(q: &HashMap<String, String>) -> Result<bool, Reply> {
    match q.get("on").map(String::as_str) {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err((StatusCode::BAD_REQUEST, Json(json!({"error": format!("on=`{other}` is not true or false")})))),
    }
}

async fn force(State(c): State<Arc<Control>>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, Reply> {
    let (sensor, metric) = (need(&q, "sensor")?, need(&q, "metric")?);
    let value: f64 = need(&q, "value")?.parse().map_err(|_| (StatusCode::BAD_REQUEST, Json(json!({"error": "`value` is not a number"}))))?;
    c.force(sensor, metric, value);
    Ok(Json(c.snapshot()))
}

async fn clear(State(c): State<Arc<Control>>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, Reply> {
    let sensor = need(&q, "sensor")?;
    match q.get("metric") {
        Some(m) => c.clear(sensor, m),
        None => c.clear_all(sensor),
    }
    Ok(Json(c.snapshot()))
}

async fn silent(State(c): State<Arc<Control>>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, Reply> {
    c.set_silent(need(&q, "sensor")?, flag(&q)?);
    Ok(Json(c.snapshot()))
}

async fn drop_device(State(c): State<Arc<Control>>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, Reply> {
    c.set_dropped(need(&q, "sensor")?, flag(&q)?);
    Ok(Json(c.snapshot()))
}

/// Serves the control endpoint on `addr` (port 0 for any); returns the bound address.
pub async fn serve(addr: SocketAddr, control: Arc<Control>) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/", get(|State(c): State<Arc<Control>>| async move { Json(c.snapshot()) }))
        .route("/force", post(force))
        .route("/clear", post(clear))
        .route("/silent", post(silent))
        .route("/drop", post(drop_device))
        .with_state(control);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}
