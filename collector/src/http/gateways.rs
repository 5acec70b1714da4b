//! `/api/v1/gateways`: each gateway's state, health and delivery counters;
//! `/api/v1/gateways/{id}/progress`: its delivery progress per outbox epoch,
//! and the operator's reset of it; `PUT /api/v1/sensors/{id}/gateway`: an
//! operator's move of an uncatalogued sensor to another gateway.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::query::{NoQuery, Params};
use super::{bad, body, ApiError, AppState};
use crate::messages::{IngestControl, MoveRefused, SeqSpaceView};

/// `?known=false` lists the gateway ids heard from that are neither a
/// `[[gateway]]` nor named by the catalogue (in open mode anyone can make
/// one up); `?known=true` the others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaysQuery {
    known: Option<String>,
}

pub async fn gateways(State(st): State<AppState>, Params(q): Params<GatewaysQuery>) -> Result<Json<Value>, ApiError> {
    let only = match q.known.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => return Err(bad(format!("known `{v}` is not true or false"))),
    };
    let list: Vec<Value> = st
        .registry
        .gateways()
        .into_iter()
        .map(|g| (st.known_gateways.contains(g.id.as_str()), g))
        .filter(|(known, _)| only.is_none_or(|k| k == *known))
        .map(|(known, g)| {
            let h = g.health.as_ref();
            json!({
                "id": g.id,
                "status": g.status,
                // `refusing` while its batches are refused, whatever its connection says.
                "delivery": if g.refusing.is_some() { "refusing" } else { "ok" },
                "refusing": g.refusing,
                "last_seen_ms": g.last_seen_ms,
                "buffer_depth": h.map(|h| h.buffer_depth),
                "oldest_buffered_age_ms": h.map(|h| h.oldest_age_ms),
                "dropped_at_gateway": h.map(|h| h.dropped),
                "readings_received": g.readings_received,
                "duplicates": g.duplicates,
                "rejected_batches": g.rejected_batches,
                "acked_seq": g.acked_seq,
                "epoch": g.epoch,
                "lag_ms": g.lag_ms,
                "devices": h.map(|h| h.devices.clone()).unwrap_or_default(),
                // Devices whose polls all fail (`registry::failing_now`); the dashboard shows the gateway `degraded`.
                "failing_devices": g.failing,
                // A [[gateway]] or a gateway the catalogue names.
                "known": known,
                // Readings refused: it does not own their sensor (ingest::ownership).
                "refused_readings": g.refused_readings,
                "last_refused": g.last_refused,
                // Receive time minus its clock at sending (ingest::clock).
                "clock_offset_ms": g.clock_offset_ms,
                // `skewed` beyond [ingest.clock] max_offset; null before it was measured.
                "clock_state": g.clock_offset_ms.map(|_| if g.clock_beyond_max { "skewed" } else { "ok" }),
                "clock_skewed_readings": g.clock_skewed,
                // What the agent says of its own clock (its health/ report).
                "agent_clock": h.and_then(|h| h.clock),
                // Its running config's load time and a refused last reload
                // (its health/ report; null from agents that predate it).
                "config": h.and_then(|h| h.config.clone()),
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    gateway: String,
}

/// `PUT /api/v1/sensors/{id}/gateway` `{"gateway": "gw-x"}` (admin, audited):
/// bind an uncatalogued sensor to another gateway. A catalogued sensor's
/// gateways are the config's (409).
pub async fn move_sensor(State(st): State<AppState>, Path(id): Path<String>, Params(_): Params<NoQuery>, bytes: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    if !shared::topics::valid_id(&id) {
        return Err(bad(format!("`{}` is not a sensor id", id.chars().take(64).collect::<String>())));
    }
    let MoveBody { gateway } = body(&bytes)?;
    let gateway = gateway_id(&gateway)?;
    let (reply, answer) = oneshot::channel();
    st.ingest.send(IngestControl::MoveSensor { sensor: id.as_str().into(), gateway: gateway.clone(), reply }).await.map_err(|_| ingest_gone())?;
    match answer.await.map_err(|_| ingest_gone())? {
        Ok(before) => Ok(Json(json!({ "sensor": id, "gateway": gateway, "before": before }))),
        Err(MoveRefused::Invalid(e)) => Err(ApiError(StatusCode::CONFLICT, e)),
        Err(MoveRefused::Store(e)) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

fn gateway_id(id: &str) -> Result<shared::GatewayId, ApiError> {
    if shared::topics::valid_id(id) {
        Ok(id.into())
    } else {
        Err(bad(format!("`{id}` is not a gateway id")))
    }
}

fn ingest_gone() -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, "ingest is not running".into())
}

/// `GET /api/v1/gateways/{id}/progress`: each outbox epoch's ack, newest first.
pub async fn progress(State(st): State<AppState>, Path(id): Path<String>, Params(_): Params<NoQuery>) -> Result<Json<Vec<SeqSpaceView>>, ApiError> {
    let gateway = gateway_id(&id)?;
    let (reply, answer) = oneshot::channel();
    st.ingest.send(IngestControl::Progress { gateway, reply }).await.map_err(|_| ingest_gone())?;
    let spaces = answer.await.map_err(|_| ingest_gone())?;
    if spaces.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no delivery progress for gateway `{id}`")));
    }
    Ok(Json(spaces))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetQuery {
    epoch: Option<String>,
}

/// `DELETE /api/v1/gateways/{id}/progress[?epoch=N]` (admin, audited): forget
/// the progress of one epoch (or all), so the gateway's next batch starts it
/// anew. For a gateway that restarted its seqs without a new epoch (a restored
/// disk image) and is now refused (`seq_jump`) or taken for replays.
pub async fn reset_progress(State(st): State<AppState>, Path(id): Path<String>, Params(q): Params<ResetQuery>) -> Result<Json<Value>, ApiError> {
    let gateway = gateway_id(&id)?;
    let epoch = q.epoch.map(|e| e.parse::<u64>().map_err(|_| bad(format!("epoch `{e}` is not a number")))).transpose()?;
    let (reply, answer) = oneshot::channel();
    st.ingest.send(IngestControl::Forget { gateway, epoch, reply }).await.map_err(|_| ingest_gone())?;
    match answer.await.map_err(|_| ingest_gone())? {
        Ok(0) => Err(ApiError(StatusCode::NOT_FOUND, format!("no delivery progress for gateway `{id}`{}", epoch.map(|e| format!(" in epoch {e}")).unwrap_or_default()))),
        Ok(n) => Ok(Json(json!({ "gateway": id, "forgotten": n }))),
        Err(e) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}
