//! The messages components exchange, defined apart from both ends so that a
//! producer never depends on its consumer: the MQTT link hands `Incoming`
//! batches to ingest; ingest and the MQTT link tell the rule engine what they
//! heard (`RuleInput`); ingest, the rule engine and the MQTT link put
//! `FeedEvent`s on the feed `Bus`. Data flows one way through them.

use std::sync::Arc;

use serde::Serialize;
use shared::{GatewayId, Reading, Seq};
use tokio::sync::oneshot;

use crate::alert::{Alert, Change};

/// One `up/{gateway}` message as it came off the broker, or off the
/// cluster's batch log.
pub struct Incoming {
    pub gateway: String,
    pub payload: bytes::Bytes,
    /// From the batch log: told once the batch's fate is final (stored and
    /// synced, or refused for good), so the log may let it go. Dropped
    /// untold when a store failure leaves it to be delivered again.
    pub settled: Option<oneshot::Sender<()>>,
    /// From the batch log: when the log took the batch (ms since the epoch).
    /// Ingest judges the batch by this time, not its own clock, so every
    /// collector reading the log, and one replaying it onto an empty disk,
    /// decides the same about it.
    pub logged_ms: Option<i64>,
}

/// What an operator asks of ingest about a gateway's delivery progress.
pub enum IngestControl {
    /// Each outbox epoch's ack and state.
    Progress { gateway: GatewayId, reply: oneshot::Sender<Vec<SeqSpaceView>> },
    /// Forget the progress of one epoch (or all): the next batch starts that
    /// sequence anew. For a gateway that legitimately restarted its seqs in
    /// the same epoch (a restored disk image).
    Forget { gateway: GatewayId, epoch: Option<u64>, reply: oneshot::Sender<Result<usize, crate::store::StoreError>> },
    /// Bind an uncatalogued sensor to another gateway; the reply names the
    /// gateway(s) it was bound to before.
    MoveSensor { sensor: shared::SensorId, gateway: GatewayId, reply: oneshot::Sender<Result<Vec<GatewayId>, MoveRefused>> },
    /// Delivery progress another collector left for gateways this one now
    /// reads (`crate::cluster::progress`): taken where it is further on.
    Adopt { progress: Vec<(crate::store::SeqSpace, crate::store::Progress)>, reply: oneshot::Sender<()> },
    /// Sensor bindings the cluster keeps (`crate::cluster::bindings`): taken
    /// where they differ from this collector's.
    Bound { bindings: Vec<(shared::SensorId, GatewayId)> },
}

/// Why a sensor was not moved.
#[derive(Debug)]
pub enum MoveRefused {
    /// The operator asked for something the ownership rules do not allow.
    Invalid(String),
    /// The store could not keep the binding.
    Store(String),
}

/// One outbox epoch of a gateway, as ingest tracks it.
#[derive(Debug, Clone, Serialize)]
pub struct SeqSpaceView {
    pub epoch: u64,
    pub acked_seq: Seq,
    /// Seqs stored above the ack, waiting for the gap below them.
    pub waiting: usize,
    pub heard_ms: i64,
}

/// What the rule engine hears about, in arrival order. `GatewayClock` is a
/// gateway's clock offset, measured on one of its batches.
pub enum RuleInput {
    Readings { gateway: String, readings: Arc<Vec<Reading>> },
    GatewayState { gateway: String, online: bool },
    GatewayHeard { gateway: String },
    GatewayClock { gateway: String, offset_ms: i64 },
}

/// Everything the live feeds carry.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    Readings(Arc<Vec<Reading>>),
    /// Readings another collector sharing the batch log stored (`cluster::view`):
    /// for this collector's live stream, not for the feeds it publishes.
    Elsewhere(Arc<Vec<Reading>>),
    Alert(AlertEvent),
    /// An alert change another collector sharing the batch log made, as the
    /// cluster keeps it (`cluster::alerts`): for this collector's live stream only.
    AlertElsewhere(AlertEvent),
    Gateway {
        id: String,
        status: &'static str,
        ts_ms: i64,
    },
    Incident(IncidentNews),
}

/// An incident change (`crate::incident`), already in its JSON form, and the
/// departments it is addressed to (the owner; a transfer's both ends; the
/// level an escalation tells).
#[derive(Debug, Clone)]
pub struct IncidentNews {
    pub id: u64,
    pub departments: Vec<String>,
    pub json: Arc<String>,
}

/// An alert change as every feed carries it: the alert JSON plus what happened.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEvent {
    pub event: Change,
    #[serde(flatten)]
    pub alert: Alert,
}

/// The live feeds' broadcast bus: a slow consumer misses events (and is told
/// so); it never slows ingest.
pub type Bus = tokio::sync::broadcast::Sender<FeedEvent>;

pub fn bus() -> Bus {
    tokio::sync::broadcast::channel(4096).0
}
