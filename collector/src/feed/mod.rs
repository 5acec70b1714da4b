//! Live feeds for operations centres and emergency command: every stored
//! reading, alert change and gateway change goes onto one broadcast bus, from
//! which the MQTT feed and each SSE client take what they want. A slow
//! consumer misses events (and is told so); it never slows ingest.

pub mod mqtt;
pub mod sse;
pub mod webhook;

use std::sync::Arc;

use serde::Serialize;
use shared::Reading;

use crate::rules::{Alert, Change};

#[derive(Debug, Clone)]
pub enum FeedEvent {
    Readings(Arc<Vec<Reading>>),
    Alert(AlertEvent),
    Gateway { id: String, status: &'static str, ts_ms: i64 },
}

/// An alert change as every feed carries it: the alert JSON plus what happened.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEvent {
    pub event: Change,
    #[serde(flatten)]
    pub alert: Alert,
}

pub type Bus = tokio::sync::broadcast::Sender<FeedEvent>;

pub fn bus() -> Bus {
    tokio::sync::broadcast::channel(4096).0
}
