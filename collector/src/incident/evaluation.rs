//! Evaluation (好差评): once resolved, the requester or commander rates the
//! handling good or bad; a bad rating needs a reason and opens a
//! rectification task for the department that handled it, tracked until the
//! department reports it done. Pure.

use serde::{Deserialize, Serialize};

use super::{Entry, EventKind, Incident, IncidentError, Status};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    pub good: bool,
    pub reason: Option<String>,
    pub by: String,
    pub ts_ms: i64,
    /// The department whose handling was rated.
    pub department: Option<String>,
}

/// The follow-up a bad rating requires (整改).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rectification {
    /// What must be put right: the bad rating's reason.
    pub task: String,
    pub department: Option<String>,
    pub opened_ms: i64,
    pub done_ms: Option<i64>,
    pub done_by: Option<String>,
    /// What was done to put it right.
    pub result: Option<String>,
}

impl Rectification {
    pub fn is_open(&self) -> bool {
        self.done_ms.is_none()
    }
}

/// Rates the handling of a resolved or closed incident, once per resolution.
pub fn rate(i: &mut Incident, good: bool, reason: Option<String>, by: &str, now: i64) -> Result<Entry, IncidentError> {
    if !matches!(i.status, Status::Resolved | Status::Closed) {
        return Err(IncidentError::Transition { id: i.id, status: i.status.as_str(), action: "rate" });
    }
    if i.rating.is_some() {
        return Err(IncidentError::Transition { id: i.id, status: "already rated", action: "rate" });
    }
    let reason = reason.filter(|r| !r.trim().is_empty());
    if !good && reason.is_none() {
        return Err(IncidentError::Invalid("a bad rating needs a `reason`: it becomes the rectification task".into()));
    }
    i.rating = Some(Rating { good, reason: reason.clone(), by: by.into(), ts_ms: now, department: i.department.clone() });
    let mut e = Entry::new(now, EventKind::Rated).by(by).text(match &reason {
        Some(r) => format!("{}: {r}", if good { "good" } else { "bad" }),
        None => "good".into(),
    });
    if let Some(d) = &i.department {
        e = e.department(d.clone());
    }
    if !good {
        i.rectification = Some(Rectification { task: reason.unwrap_or_default(), department: i.department.clone(), opened_ms: now, done_ms: None, done_by: None, result: None });
    }
    i.timeline.push(e.clone());
    Ok(e)
}

/// The department reports its rectification done.
pub fn rectify(i: &mut Incident, result: String, by: &str, now: i64) -> Result<Entry, IncidentError> {
    if result.trim().is_empty() {
        return Err(IncidentError::Invalid("`result` must say what was put right".into()));
    }
    let Some(r) = i.rectification.as_mut().filter(|r| r.is_open()) else {
        return Err(IncidentError::Transition { id: i.id, status: "without an open rectification", action: "rectify" });
    };
    r.done_ms = Some(now);
    r.done_by = Some(by.into());
    r.result = Some(result.clone());
    let mut e = Entry::new(now, EventKind::Rectified).by(by).text(result);
    if let Some(d) = &r.department {
        e = e.department(d.clone());
    }
    i.timeline.push(e.clone());
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::state::{apply, tests::*, Action};

    #[test]
    fn a_bad_rating_needs_a_reason_and_opens_a_rectification_until_done() {
        let mut i = incident(1, &facts());
        assert!(rate(&mut i, true, None, "cmd", 1).is_err(), "not resolved yet");
        for a in [Action::Assign { department: "water".into() }, Action::Acknowledge { note: None }, Action::Resolve { action: "pumped".into() }] {
            apply(&mut i, &a, "li", 2).unwrap();
        }
        assert!(matches!(rate(&mut i, false, Some(" ".into()), "cmd", 3), Err(IncidentError::Invalid(_))));
        assert!(rectify(&mut i, "done".into(), "li", 3).is_err(), "nothing to rectify");
        rate(&mut i, false, Some("crew came without pumps".into()), "cmd", 4).unwrap();
        let r = i.rectification.clone().unwrap();
        assert_eq!((r.task.as_str(), r.department.as_deref(), r.is_open()), ("crew came without pumps", Some("water"), true));
        assert!(rate(&mut i, true, None, "cmd", 5).is_err(), "rated once");
        assert!(rectify(&mut i, "".into(), "li", 6).is_err());
        rectify(&mut i, "pumps on every crew van".into(), "li", 7).unwrap();
        assert_eq!(i.rectification.as_ref().map(|r| (r.done_ms, r.result.as_deref())), Some((Some(7), Some("pumps on every crew van"))));
        assert!(rectify(&mut i, "again".into(), "li", 8).is_err());
    }
}
