//! The incident lifecycle as a pure state machine:
//! new → assigned → acknowledged → in_progress → resolved → closed, with
//! transfer (back to assigned, to another department, with a reason) and
//! reopen (from resolved or closed). Each accepted action appends its
//! timeline entry; a refused one changes nothing. No I/O, no clock: the
//! caller gives the time and who acts.

use super::grouping::Facts;
use super::{Entry, EventKind, Incident, IncidentError, Status};

/// What an operator or commander asks of an incident.
/// Serialized as the cluster shares it (`super::work`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Action {
    Assign { department: String },
    Acknowledge { note: Option<String> },
    Start,
    Transfer { department: String, reason: String },
    Note { text: String },
    Resolve { action: String },
    Close { note: Option<String> },
    Reopen { reason: String },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Assign { .. } => "assign",
            Action::Acknowledge { .. } => "acknowledge",
            Action::Start => "start",
            Action::Transfer { .. } => "transfer",
            Action::Note { .. } => "note",
            Action::Resolve { .. } => "resolve",
            Action::Close { .. } => "close",
            Action::Reopen { .. } => "reopen",
        }
    }
}

fn required(what: &str, text: &str) -> Result<(), IncidentError> {
    if text.trim().is_empty() {
        return Err(IncidentError::Invalid(format!("`{what}` must not be empty")));
    }
    Ok(())
}

/// A new incident opened by the alert `f`, in state `new`.
pub fn open(id: u64, group: String, f: &Facts) -> Incident {
    let title = match (&f.district, &f.kind) {
        (Some(d), Some(k)) => format!("{k} in {d}: {}", f.rule),
        _ => format!("{} on {}", f.rule, f.sensor),
    };
    Incident {
        id,
        status: Status::New,
        department: None,
        severity: f.severity,
        group,
        title,
        district: f.district.clone(),
        alerts: vec![f.link()],
        sensors: vec![f.sensor.clone()],
        merged: Vec::new(),
        opened_ms: f.ts_ms,
        last_alert_ms: f.ts_ms,
        acknowledged_ms: None,
        resolved_ms: None,
        closed_ms: None,
        deadlines: Default::default(),
        reminded_ack: false,
        reminded_resolve: false,
        escalation_level: 0,
        ack_breaches: 0,
        resolve_breaches: 0,
        action: None,
        rating: None,
        rectification: None,
        timeline: vec![Entry::new(f.ts_ms, EventKind::Opened).alert(f.alert).text(format!("{} {} on {}", f.rule, f.metric, f.sensor))],
    }
}

/// An alert joining an open incident.
pub fn join(i: &mut Incident, f: &Facts) -> Entry {
    i.alerts.push(f.link());
    if !i.sensors.contains(&f.sensor) {
        i.sensors.push(f.sensor.clone());
    }
    i.severity = i.severity.max(f.severity);
    i.last_alert_ms = i.last_alert_ms.max(f.ts_ms);
    let e = owned(Entry::new(f.ts_ms, EventKind::AlertJoined).alert(f.alert).text(format!("{} {} on {}", f.rule, f.metric, f.sensor)), i);
    i.timeline.push(e.clone());
    e
}

/// The entry, addressed to the current owner.
fn owned(e: Entry, i: &Incident) -> Entry {
    match &i.department {
        Some(d) => e.department(d.clone()),
        None => e,
    }
}

/// A fresh assignment: the timers start over (the caller sets new deadlines).
fn reset_timers(i: &mut Incident) {
    i.reminded_ack = false;
    i.reminded_resolve = false;
    i.escalation_level = 0;
}

/// Applies `action` by `by` at `now`; returns the entry appended. A refused
/// action (wrong state, missing reason) leaves the incident as it was.
/// After `Assigned`, `Transferred` and `Reopened` the caller sets the new deadlines.
pub fn apply(i: &mut Incident, action: &Action, by: &str, now: i64) -> Result<Entry, IncidentError> {
    use Status::*;
    let refuse = |i: &Incident| IncidentError::Transition { id: i.id, status: i.status.as_str(), action: action.name() };
    let entry = match action {
        Action::Assign { department } => {
            if !matches!(i.status, New | Assigned | Acknowledged | InProgress) {
                return Err(refuse(i));
            }
            if i.department.as_deref() == Some(department.as_str()) {
                return Err(IncidentError::Invalid(format!("incident {} is already assigned to {department}", i.id)));
            }
            let mut e = Entry::new(now, EventKind::Assigned).by(by).department(department.clone());
            if let Some(old) = i.department.replace(department.clone()) {
                e = e.from(old);
            }
            i.status = Assigned;
            reset_timers(i);
            e
        }
        Action::Acknowledge { note } => {
            if i.status != Assigned {
                return Err(refuse(i));
            }
            i.status = Acknowledged;
            i.acknowledged_ms.get_or_insert(now);
            let e = owned(Entry::new(now, EventKind::Acknowledged).by(by), i);
            match note {
                Some(n) => e.text(n.clone()),
                None => e,
            }
        }
        Action::Start => {
            if i.status != Acknowledged {
                return Err(refuse(i));
            }
            i.status = InProgress;
            owned(Entry::new(now, EventKind::Started).by(by), i)
        }
        Action::Transfer { department, reason } => {
            required("reason", reason)?;
            if !matches!(i.status, Assigned | Acknowledged | InProgress) {
                return Err(refuse(i));
            }
            let Some(old) = i.department.clone() else { return Err(refuse(i)) };
            if &old == department {
                return Err(IncidentError::Invalid(format!("incident {} already belongs to {department}", i.id)));
            }
            i.department = Some(department.clone());
            i.status = Assigned;
            reset_timers(i);
            Entry::new(now, EventKind::Transferred).by(by).from(old).department(department.clone()).text(reason.clone())
        }
        Action::Note { text } => {
            required("text", text)?;
            owned(Entry::new(now, EventKind::Note).by(by).text(text.clone()), i)
        }
        Action::Resolve { action } => {
            required("action", action)?;
            if !matches!(i.status, Acknowledged | InProgress) {
                return Err(refuse(i));
            }
            i.status = Resolved;
            i.resolved_ms = Some(now);
            i.action = Some(action.clone());
            owned(Entry::new(now, EventKind::Resolved).by(by).text(action.clone()), i)
        }
        Action::Close { note } => {
            if i.status != Resolved {
                return Err(refuse(i));
            }
            i.status = Closed;
            i.closed_ms = Some(now);
            let e = owned(Entry::new(now, EventKind::Closed).by(by), i);
            match note {
                Some(n) => e.text(n.clone()),
                None => e,
            }
        }
        Action::Reopen { reason } => {
            required("reason", reason)?;
            if !matches!(i.status, Resolved | Closed) {
                return Err(refuse(i));
            }
            i.status = if i.department.is_some() { Assigned } else { New };
            i.resolved_ms = None;
            i.closed_ms = None;
            i.rating = None;
            reset_timers(i);
            owned(Entry::new(now, EventKind::Reopened).by(by).text(reason.clone()), i)
        }
    };
    i.timeline.push(entry.clone());
    Ok(entry)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alert::Severity;

    pub(crate) fn incident(id: u64, f: &Facts) -> Incident {
        open(id, "g".into(), f)
    }

    pub(crate) fn facts() -> Facts {
        Facts {
            alert: 1,
            rule: "river-high".into(),
            sensor: "wl-001".into(),
            metric: "water_level_m".into(),
            severity: Severity::Critical,
            ts_ms: 1_000,
            reading_ts_ms: None,
            district: Some("Xihu".into()),
            kind: Some("water_level".into()),
            gateway: None,
            department: Some("water".into()),
        }
    }

    fn act(i: &mut Incident, a: Action, t: i64) -> Result<Entry, IncidentError> {
        apply(i, &a, "li", t)
    }

    #[test]
    fn the_whole_lifecycle_in_order_with_its_timeline() {
        let mut i = incident(1, &facts());
        assert_eq!(i.status, Status::New);
        act(&mut i, Action::Assign { department: "water".into() }, 1_000).unwrap();
        act(&mut i, Action::Acknowledge { note: None }, 2_000).unwrap();
        act(&mut i, Action::Start, 3_000).unwrap();
        act(&mut i, Action::Note { text: "pumps on".into() }, 4_000).unwrap();
        act(&mut i, Action::Resolve { action: "sandbags laid".into() }, 5_000).unwrap();
        act(&mut i, Action::Close { note: None }, 6_000).unwrap();
        assert_eq!((i.status, i.acknowledged_ms, i.resolved_ms, i.closed_ms, i.action.as_deref()), (Status::Closed, Some(2_000), Some(5_000), Some(6_000), Some("sandbags laid")));
        let events: Vec<&str> = i.timeline.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(events, ["opened", "assigned", "acknowledged", "started", "note", "resolved", "closed"]);
        assert!(i.timeline[2..].iter().all(|e| e.department.as_deref() == Some("water") && e.by.as_deref() == Some("li")));
        act(&mut i, Action::Reopen { reason: "water back".into() }, 7_000).unwrap();
        assert_eq!((i.status, i.resolved_ms, i.closed_ms), (Status::Assigned, None, None));
        assert_eq!(i.acknowledged_ms, Some(2_000), "time to acknowledge keeps the first");
    }

    #[test]
    fn refused_actions_name_the_state_and_change_nothing() {
        let mut i = incident(1, &facts());
        let before = i.clone();
        for a in [Action::Acknowledge { note: None }, Action::Start, Action::Resolve { action: "x".into() }, Action::Close { note: None }, Action::Reopen { reason: "x".into() }] {
            let e = act(&mut i, a.clone(), 2_000).unwrap_err();
            assert_eq!(e.to_string(), format!("incident 1 is new: cannot {} it", a.name()));
        }
        assert!(act(&mut i, Action::Transfer { department: "roads".into(), reason: "theirs".into() }, 2_000).is_err(), "nothing to transfer from");
        assert_eq!(i, before);
        act(&mut i, Action::Assign { department: "water".into() }, 2_000).unwrap();
        assert!(matches!(act(&mut i, Action::Transfer { department: "roads".into(), reason: " ".into() }, 3_000), Err(IncidentError::Invalid(m)) if m.contains("reason")));
        assert!(matches!(act(&mut i, Action::Note { text: String::new() }, 3_000), Err(IncidentError::Invalid(_))));
        act(&mut i, Action::Acknowledge { note: None }, 3_000).unwrap();
        assert!(matches!(act(&mut i, Action::Resolve { action: "".into() }, 4_000), Err(IncidentError::Invalid(m)) if m.contains("action")));
        assert!(act(&mut i, Action::Acknowledge { note: None }, 4_000).is_err(), "twice");
    }

    #[test]
    fn a_transfer_hands_over_with_its_reason_and_restarts_the_timers() {
        let mut i = incident(1, &facts());
        act(&mut i, Action::Assign { department: "water".into() }, 1_000).unwrap();
        act(&mut i, Action::Acknowledge { note: None }, 2_000).unwrap();
        i.reminded_resolve = true;
        i.escalation_level = 1;
        let e = act(&mut i, Action::Transfer { department: "roads".into(), reason: "a burst main under the road".into() }, 3_000).unwrap();
        assert_eq!((e.from.as_deref(), e.department.as_deref(), e.text.as_deref()), (Some("water"), Some("roads"), Some("a burst main under the road")));
        assert_eq!((i.status, i.department.as_deref(), i.reminded_resolve, i.escalation_level), (Status::Assigned, Some("roads"), false, 0));
        assert!(act(&mut i, Action::Transfer { department: "roads".into(), reason: "x".into() }, 4_000).is_err(), "to itself");
    }
}
