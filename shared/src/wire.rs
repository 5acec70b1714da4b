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
    /// The agent's config: when the running one was loaded, and a refused
    /// reload (absent from agents that predate it). Collectors that predate
    /// it ignore it: `Health` takes unknown fields, so the wire may grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigHealth>,
}

/// What an agent says of its config in `health/`, so that a reload refused
/// at the cabinet is seen by the operations centre too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigHealth {
    /// When the running config was loaded, by the agent's clock (epoch ms).
    pub loaded_ms: i64,
    /// The last SIGHUP reload, when it was refused (the agent kept running
    /// the config loaded at `loaded_ms`); None when it was accepted or none
    /// was tried since the agent started.
    pub reload_refused: Option<RefusedReload>,
}

/// A refused reload, bounded for the wire and the dashboard: the first
/// `MAX_REASONS` reasons, each cut to `MAX_REASON_CHARS`. `citysense-agent
/// status` at the cabinet has them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedReload {
    /// When the reload was refused, by the agent's clock (epoch ms).
    pub at_ms: i64,
    /// Why, one `FILE:LINE: path: message` each.
    pub reasons: Vec<String>,
    /// Reasons left out beyond the first `MAX_REASONS`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasons_omitted: u64,
}

impl RefusedReload {
    pub const MAX_REASONS: usize = 5;
    pub const MAX_REASON_CHARS: usize = 300;

    /// The refusal at `at_ms` for `reasons`, bounded.
    pub fn new(at_ms: i64, reasons: Vec<String>) -> RefusedReload {
        RefusedReload { at_ms, reasons, reasons_omitted: 0 }.bounded()
    }

    /// Within the bounds, whoever made it (the collector applies them again
    /// to what an agent sends); the reasons cut say so with `…`.
    pub fn bounded(mut self) -> RefusedReload {
        if self.reasons.len() > Self::MAX_REASONS {
            self.reasons_omitted = self.reasons_omitted.saturating_add((self.reasons.len() - Self::MAX_REASONS) as u64);
            self.reasons.truncate(Self::MAX_REASONS);
        }
        for r in &mut self.reasons {
            // Longer than the bound: its first MAX - 1 characters and `…`.
            if r.char_indices().nth(Self::MAX_REASON_CHARS).is_some() {
                let cut = r.char_indices().nth(Self::MAX_REASON_CHARS - 1).map_or(r.len(), |(i, _)| i);
                r.truncate(cut);
                r.push('…');
            }
        }
        self
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_reload_keeps_five_reasons_of_at_most_300_characters() {
        let long = format!("/etc/citysense/agent.toml:3: modbus[0].unit: {}", "é".repeat(400));
        let mut reasons = vec![long.clone()];
        reasons.extend((1..8).map(|i| format!("agent.toml:{i}: x: bad")));
        let r = RefusedReload::new(7, reasons);
        assert_eq!((r.reasons.len(), r.reasons_omitted), (5, 3));
        assert_eq!(r.reasons[0].chars().count(), RefusedReload::MAX_REASON_CHARS);
        assert!(r.reasons[0].starts_with("/etc/citysense/agent.toml:3: modbus[0].unit: éé") && r.reasons[0].ends_with("é…"), "{}", r.reasons[0]);
        assert_eq!(r.reasons[1], "agent.toml:1: x: bad", "short reasons are kept whole");
        assert_eq!(r.clone().bounded(), r, "bounding again changes nothing");
        let exactly = "a".repeat(RefusedReload::MAX_REASON_CHARS);
        assert_eq!(RefusedReload::new(7, vec![exactly.clone()]).reasons, [exactly]);
    }

    /// `Health` as collectors before `config` read it (the struct of the
    /// commit before, serde's defaults: unknown fields ignored).
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct HealthBefore {
        ts_ms: i64,
        buffer_depth: u64,
        buffer_bytes: u64,
        oldest_age_ms: i64,
        readings_per_s: f64,
        dropped: u64,
        devices: Vec<DeviceHealth>,
        #[serde(default)]
        clock: Option<ClockState>,
    }

    #[test]
    fn health_with_a_refused_reload_is_read_by_collectors_old_and_new() {
        let h = Health {
            ts_ms: 5,
            buffer_depth: 2,
            config: Some(ConfigHealth { loaded_ms: 1, reload_refused: Some(RefusedReload::new(4, vec!["agent.toml:1: gateway: changed".into()])) }),
            ..Default::default()
        };
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains(r#""config":{"loaded_ms":1,"reload_refused":{"at_ms":4,"reasons":["agent.toml:1: gateway: changed"]}}"#), "{json}");
        let old: HealthBefore = serde_json::from_str(&json).unwrap();
        assert_eq!((old.ts_ms, old.buffer_depth), (5, 2));
        assert_eq!(serde_json::from_str::<Health>(&json).unwrap(), h);
        // An older agent's health has no config; a newer one's may carry fields this one does not know.
        let before = r#"{"ts_ms":5,"buffer_depth":0,"buffer_bytes":0,"oldest_age_ms":0,"readings_per_s":0.0,"dropped":0,"devices":[]}"#;
        assert_eq!(serde_json::from_str::<Health>(before).unwrap().config, None);
        let after = r#"{"ts_ms":5,"buffer_depth":0,"buffer_bytes":0,"oldest_age_ms":0,"readings_per_s":0.0,"dropped":0,"devices":[],"config":{"loaded_ms":1,"reload_refused":null,"next":1},"next":{}}"#;
        assert_eq!(serde_json::from_str::<Health>(after).unwrap().config, Some(ConfigHealth { loaded_ms: 1, reload_refused: None }));
    }
}
