//! `Alert`: one open problem per (rule, sensor, metric), how bad it is, and
//! its lifecycle firing → acknowledged → resolved (by the condition clearing,
//! or by hand). The rule engine makes alerts; feeds, the store and the API
//! carry them, so the record lives below all of them.

use serde::{Deserialize, Serialize};

/// How bad: decides who is woken and which feed topic carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    Emergency,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Emergency => "emergency",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Firing,
    Acknowledged,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Acknowledged => "acknowledged",
            State::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: u64,
    pub rule: String,
    /// The sensor, or the gateway for `gateway_offline`.
    pub sensor: String,
    /// Empty for alerts about a whole sensor or gateway.
    pub metric: String,
    pub severity: Severity,
    pub state: State,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub started_ts_ms: i64,
    pub updated_ts_ms: i64,
    pub acked_by: Option<String>,
    pub note: Option<String>,
    /// Sent again because nobody acknowledged it within `escalate_after`.
    pub escalated: bool,
    pub resolved_ts_ms: Option<i64>,
    /// Who resolved it by hand; None when the condition cleared.
    pub resolved_by: Option<String>,
    /// `threshold` and `rate`: the time of the reading that fired or cleared
    /// it. Readings of the series not newer than it were evaluated already:
    /// resent after a collector crash, they must not clear it or fire again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading_ts_ms: Option<i64>,
}

impl Alert {
    pub fn is_open(&self) -> bool {
        self.state != State::Resolved
    }

    pub fn key(&self) -> (String, String, String) {
        (self.rule.clone(), self.sensor.clone(), self.metric.clone())
    }
}

/// What happened to an alert, as the feeds announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Fired,
    Acknowledged,
    Resolved,
    Escalated,
}
