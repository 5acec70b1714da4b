//! Incidents (闭环处置): alerts gathered into incidents owned by a department,
//! handled within deadlines, chased when overdue, closed with the action
//! taken and rated, and the handling measured per department.
//!
//! Downstream of `rules` (it consumes alert changes, never changes an alert)
//! and upstream of `http`. The pure parts take time as an argument:
//! `grouping` (alerts → incidents), `state` (the lifecycle), `sla`
//! (deadlines, working hours), `silence` (maintenance windows), `evaluation`
//! (rating, rectification), `performance` (figures per department),
//! `department` (departments and their escalation chain), and `work`
//! (operators' work as the collectors of a cluster share it). `store` keeps
//! incidents and silences durable; `service` is the task that runs them on
//! the collector's clock; `feed` publishes incident events on MQTT.

pub mod department;
pub mod evaluation;
pub mod feed;
pub mod grouping;
pub mod performance;
pub mod service;
pub mod settings;
pub mod silence;
pub mod sla;
pub mod state;
pub mod store;
pub mod work;

use serde::{Deserialize, Serialize};

use crate::alert::Severity;

/// Where an incident is in its handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Assigned,
    Acknowledged,
    InProgress,
    Resolved,
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Assigned => "assigned",
            Status::Acknowledged => "acknowledged",
            Status::InProgress => "in_progress",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    /// Still being handled: neither resolved nor closed.
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Resolved | Status::Closed)
    }
}

/// What happened to an incident: one timeline entry, and the `event` its feeds carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Opened,
    AlertJoined,
    AlertCleared,
    Assigned,
    Acknowledged,
    Started,
    Transferred,
    Note,
    /// A deadline passed: the owner is reminded.
    Overdue,
    /// Still unacknowledged after the reminder: the next level of the chain is told.
    Escalated,
    Resolved,
    Closed,
    Reopened,
    Rated,
    Rectified,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::AlertJoined => "alert_joined",
            EventKind::AlertCleared => "alert_cleared",
            EventKind::Assigned => "assigned",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Started => "started",
            EventKind::Transferred => "transferred",
            EventKind::Note => "note",
            EventKind::Overdue => "overdue",
            EventKind::Escalated => "escalated",
            EventKind::Resolved => "resolved",
            EventKind::Closed => "closed",
            EventKind::Reopened => "reopened",
            EventKind::Rated => "rated",
            EventKind::Rectified => "rectified",
        }
    }
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub ts_ms: i64,
    pub event: EventKind,
    /// Who did it (a token's name); None for what the collector did itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The department it concerns: the new owner of an assignment or
    /// transfer, the level told of an escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// The department it came from (transfer, escalation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Reason, note, action taken, alert id: what the entry says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<u64>,
    /// The operator's work that made it, named the same on every collector
    /// of a cluster: what tells work read again from work not done yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_id: Option<String>,
}

impl Entry {
    pub fn new(ts_ms: i64, event: EventKind) -> Entry {
        Entry { ts_ms, event, by: None, department: None, from: None, text: None, alert: None, work_id: None }
    }
    pub fn by(mut self, by: impl Into<String>) -> Entry {
        self.by = Some(by.into());
        self
    }
    pub fn department(mut self, d: impl Into<String>) -> Entry {
        self.department = Some(d.into());
        self
    }
    pub fn from(mut self, d: impl Into<String>) -> Entry {
        self.from = Some(d.into());
        self
    }
    pub fn text(mut self, t: impl Into<String>) -> Entry {
        self.text = Some(t.into());
        self
    }
    pub fn alert(mut self, id: u64) -> Entry {
        self.alert = Some(id);
        self
    }
}

/// The deadlines of the current assignment (absolute ms, from `sla`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadlines {
    pub ack_due_ms: Option<i64>,
    pub resolve_due_ms: Option<i64>,
}

/// One incident: its alerts and sensors, its owner, its state and timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub status: Status,
    /// The owning department's id; None while nobody owns it (`new`).
    pub department: Option<String>,
    pub severity: Severity,
    /// The grouping key's values, e.g. `district=Xihu kind=water_level`.
    pub group: String,
    pub title: String,
    pub district: Option<String>,
    pub alerts: Vec<grouping::AlertLink>,
    pub sensors: Vec<String>,
    /// Near-simultaneous duplicates folded into an alert already here (alert ids).
    #[serde(default)]
    pub merged: Vec<u64>,
    pub opened_ms: i64,
    pub last_alert_ms: i64,
    /// The first acknowledgement (time to acknowledge is measured to it).
    pub acknowledged_ms: Option<i64>,
    pub resolved_ms: Option<i64>,
    pub closed_ms: Option<i64>,
    #[serde(default)]
    pub deadlines: Deadlines,
    /// Timer state, kept so a restart neither repeats nor skips a reminder.
    #[serde(default)]
    pub reminded_ack: bool,
    #[serde(default)]
    pub reminded_resolve: bool,
    /// How many levels up the chain it has been escalated in this assignment.
    #[serde(default)]
    pub escalation_level: u32,
    /// Deadlines missed (at most one of each kind per assignment).
    #[serde(default)]
    pub ack_breaches: u32,
    #[serde(default)]
    pub resolve_breaches: u32,
    /// Closing record: what was done.
    pub action: Option<String>,
    pub rating: Option<evaluation::Rating>,
    pub rectification: Option<evaluation::Rectification>,
    pub timeline: Vec<Entry>,
}

impl Incident {
    /// Which deadline it is past at `now`, if any: `acknowledge` or `resolve`.
    pub fn overdue(&self, now: i64) -> Option<&'static str> {
        sla::overdue(self, now)
    }

    pub fn count(&self, kind: EventKind) -> usize {
        self.timeline.iter().filter(|e| e.event == kind).count()
    }
}

/// An incident change as the feeds carry it: the incident plus what happened
/// (the timeline's last entry is the event's detail).
#[derive(Debug, Clone, Serialize)]
pub struct IncidentEvent {
    pub event: EventKind,
    /// The department the event is addressed to (the owner, or the level escalated to).
    pub to: Option<String>,
    pub overdue: Option<&'static str>,
    #[serde(flatten)]
    pub incident: Incident,
}

/// Why a request on an incident or silence was refused.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("no incident {0}")]
    NotFound(u64),
    #[error("no silence {0}")]
    NoSilence(u64),
    #[error("no department `{0}`")]
    NoDepartment(String),
    #[error("incident {id} is {status}: cannot {action} it")]
    Transition { id: u64, status: &'static str, action: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("incident {id} belongs to {department}; token `{who}` acts for {own}")]
    NotYours { id: u64, department: String, who: String, own: String },
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] store::IncidentStoreError),
}

/// Builds the service from the config, in the alert store's database and
/// beside the webhook outbox; returns it and every webhook the outbox
/// delivers to (the config's `[[webhook]]`s, then the departments').
pub fn start(
    config: &crate::config::CollectorConfig,
    store: std::sync::Arc<dyn store::IncidentStore>,
    alerting: std::sync::Arc<crate::rules::alerting::Alerting>,
    feed: crate::messages::Bus,
    outbox: std::sync::Arc<crate::feed::webhook::Outbox>,
    clock: shared::clock::SharedClock,
) -> Result<(std::sync::Arc<service::Incidents>, Vec<crate::feed::webhook::WebhookConfig>), IncidentError> {
    let mut hooks = config.webhook.clone();
    let mut index = std::collections::HashMap::new();
    for d in &config.department {
        if let Some(url) = &d.webhook {
            index.insert(d.id.clone(), hooks.len());
            hooks.push(crate::feed::webhook::WebhookConfig { url: url.clone(), min_severity: None });
        }
    }
    let service = service::Incidents::open(
        config.incidents.clone(),
        department::Departments::new(config.department.clone()),
        &config.sensor,
        store,
        alerting.clone(),
        feed,
        Some(service::Hooks { outbox, index }),
        clock,
    )?;
    let service = std::sync::Arc::new(service);
    // A weak link: the alerting task must not keep the incident service alive.
    let weak = std::sync::Arc::downgrade(&service);
    alerting.set_hold(std::sync::Arc::new(move |a| weak.upgrade().is_some_and(|s| s.hold(a))));
    Ok((service, hooks))
}
