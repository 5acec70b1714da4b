//! JSON messages on the control topics (ack, state, health, live).

use serde::{Deserialize, Serialize};

/// `ack/{gateway}`: every reading up to and including `seq` of outbox epoch
/// `epoch` is durably stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: crate::Seq,
    /// Absent (0) for outboxes made before epochs existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// With per-gateway batch keys: hex HMAC over `ack/{gateway}/{seq}` (see `auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The collector's clock when it sent the ack (epoch ms), from which the
    /// agent learns its own clock offset. Not covered by `mac`: the agent
    /// only reports it, it never sets its clock by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Offline,
}

/// `state/{gateway}`, retained; the agent's last will carries `offline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub ts_ms: i64,
}

/// `health/{gateway}`, periodic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub ts_ms: i64,
    pub buffer_depth: u64,
    pub buffer_bytes: u64,
    /// Age of the oldest buffered reading, 0 when the buffer is empty.
    pub oldest_age_ms: i64,
    pub readings_per_s: f64,
    /// Readings the `when_full` policy discarded since the agent started.
    pub dropped: u64,
    pub devices: Vec<DeviceHealth>,
    /// The agent's own clock (absent from agents that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockState>,
}

/// What an agent knows of its own clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockState {
    /// Its clock's reading (epoch ms).
    pub now_ms: i64,
    /// False while the clock reads a time before the agent was built: it has
    /// never been set (a real-time clock reset to 1970, NTP not yet synced).
    pub synced: bool,
    /// The collector's clock minus this one, as learned from the last ack
    /// (less the ack's transit time); None before the first ack that says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceHealth {
    pub sensor: String,
    pub polls: u64,
    pub errors: u64,
    pub last_poll_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// `live/{sensor}/{metric}`: the reading's time, value and quality.
pub type Live = crate::Sample;

fn is_zero(n: &u64) -> bool {
    *n == 0
}
