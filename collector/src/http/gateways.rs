//! `GET /api/v1/gateways`: each gateway's state, health and delivery counters.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

pub async fn gateways(State(st): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = st
        .registry
        .gateways()
        .into_iter()
        .map(|g| {
            let h = g.health.as_ref();
            json!({
                "id": g.id,
                "status": g.status,
                "last_seen_ms": g.last_seen_ms,
                "buffer_depth": h.map(|h| h.buffer_depth),
                "oldest_buffered_age_ms": h.map(|h| h.oldest_age_ms),
                "dropped_at_gateway": h.map(|h| h.dropped),
                "readings_received": g.readings_received,
                "duplicates": g.duplicates,
                "rejected_batches": g.rejected_batches,
                "acked_seq": g.acked_seq,
                "lag_ms": g.lag_ms,
                "devices": h.map(|h| h.devices.clone()).unwrap_or_default(),
            })
        })
        .collect();
    Json(Value::Array(list))
}
