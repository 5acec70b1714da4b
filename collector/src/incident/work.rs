//! Operators' work on incidents and silences, in the form the collectors of
//! a cluster share it (`crate::cluster::handling`): each collector groups
//! the same alerts into incidents of its own, with ids of its own, so the
//! work names its incident by an alert the incident holds, and a silence by
//! who made it and when. Pure: finding the incident and telling a repeat.

use serde::{Deserialize, Serialize};

use super::grouping::AlertLink;
use super::silence::{Silence, SilenceSpec};
use super::state::{self, Action};
use super::{evaluation, Entry, Incident, IncidentError};

/// An incident, named as every collector can find it: by its first alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentKey {
    pub rule: String,
    pub sensor: String,
    pub metric: String,
    /// The reading that fired the alert; without one (absence, gateway
    /// rules, fired by each collector's clock) the newest incident holding
    /// such an alert fired before the work was done is meant.
    pub reading_ts_ms: Option<i64>,
}

impl IncidentKey {
    pub fn of(i: &Incident) -> IncidentKey {
        let first = &i.alerts[0];
        IncidentKey { rule: first.rule.clone(), sensor: first.sensor.clone(), metric: first.metric.clone(), reading_ts_ms: first.reading_ts_ms }
    }

    fn holds(&self, l: &AlertLink, at_ms: i64) -> bool {
        l.rule == self.rule
            && l.sensor == self.sensor
            && l.metric == self.metric
            && match self.reading_ts_ms {
                Some(t) => l.reading_ts_ms == Some(t),
                None => l.ts_ms <= at_ms,
            }
    }

    /// The id of the incident meant, among these (oldest first); None while
    /// this collector has not grouped that alert yet.
    pub fn find<'a>(&self, incidents: impl DoubleEndedIterator<Item = &'a Incident>, at_ms: i64) -> Option<u64> {
        incidents.rev().find(|i| i.alerts.iter().any(|l| self.holds(l, at_ms))).map(|i| i.id)
    }
}

/// What was done to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "snake_case")]
pub enum Work {
    Act { action: Action },
    Rate { good: bool, reason: Option<String> },
    Rectify { result: String },
}

/// One piece of operators' work, as the cluster carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum Worked {
    Incident { id: String, incident: IncidentKey, work: Work, by: String, at_ms: i64 },
    Silenced { spec: SilenceSpec, by: String, at_ms: i64 },
    Unsilenced { created_by: String, created_ms: i64, at_ms: i64 },
}

impl Worked {
    /// When it was done, on the collector where it was.
    pub fn at_ms(&self) -> i64 {
        match self {
            Worked::Incident { at_ms, .. } | Worked::Silenced { at_ms, .. } | Worked::Unsilenced { at_ms, .. } => *at_ms,
        }
    }
}

impl Work {
    /// Does it to `i` as `by` at `now`: the timeline entry it adds, or why not.
    pub fn apply(&self, i: &mut Incident, by: &str, now: i64) -> Result<Entry, IncidentError> {
        match self {
            Work::Act { action } => state::apply(i, action, by, now),
            Work::Rate { good, reason } => evaluation::rate(i, *good, reason.clone(), by, now),
            Work::Rectify { result } => evaluation::rectify(i, result.clone(), by, now),
        }
    }
}

/// Whether the incident's timeline already has the entry of work `id`: the
/// work came back to where it was done, or was read again after a restart.
pub fn done_already(i: &Incident, id: &str) -> bool {
    i.timeline.iter().any(|e: &Entry| e.work_id.as_deref() == Some(id))
}

/// Names each piece of work this process does: a random prefix per process
/// (collectors and restarts apart) and a count.
pub struct WorkIds {
    prefix: u64,
    next: std::sync::atomic::AtomicU64,
}

impl Default for WorkIds {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // std's hasher keys are random per process: no rand crate for one number.
        let prefix = std::collections::hash_map::RandomState::new().build_hasher().finish();
        WorkIds { prefix, next: std::sync::atomic::AtomicU64::new(1) }
    }
}

impl WorkIds {
    pub fn next(&self) -> String {
        format!("{:016x}-{}", self.prefix, self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// The silence that work names: made by `created_by` at `created_ms`.
pub fn is_silence(s: &Silence, created_by: &str, created_ms: i64) -> bool {
    s.created_by == created_by && s.created_ms == created_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::grouping::Facts;
    use crate::incident::state::tests::{facts, incident};

    #[test]
    fn an_incident_is_found_by_the_reading_that_fired_its_alert_whatever_its_id() {
        let mut f = facts();
        f.reading_ts_ms = Some(5_000);
        let older = incident(3, &Facts { reading_ts_ms: Some(1_000), ..f.clone() });
        let meant = incident(7, &f);
        let key = IncidentKey::of(&meant);
        assert_eq!(key.find([&older, &meant].into_iter(), 0), Some(7));
        // Not grouped here yet: none, though an older incident has the same rule and sensor.
        assert_eq!(key.find([&older].into_iter(), i64::MAX), None);
        // Without a reading: the newest holding such an alert fired before the work.
        let clocked = |id, ts| incident(id, &Facts { reading_ts_ms: None, ts_ms: ts, ..f.clone() });
        let key = IncidentKey::of(&clocked(1, 0));
        assert_eq!(key.find([&clocked(1, 1_000), &clocked(2, 2_000), &clocked(4, 9_000)].into_iter(), 5_000), Some(2));
    }

    #[test]
    fn work_goes_through_json_unchanged() {
        let key = IncidentKey::of(&incident(1, &facts()));
        for work in [
            Work::Act { action: Action::Transfer { department: "roads".into(), reason: "a drain, not the river".into() } },
            Work::Act { action: Action::Start },
            Work::Rate { good: false, reason: Some("slow".into()) },
            Work::Rectify { result: "pumps serviced".into() },
        ] {
            let w = Worked::Incident { id: WorkIds::default().next(), incident: key.clone(), work, by: "li".into(), at_ms: 9 };
            assert_eq!(serde_json::from_str::<Worked>(&serde_json::to_string(&w).unwrap()).unwrap(), w);
        }
    }
}
