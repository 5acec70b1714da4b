//! The incident service: takes fired and cleared alerts off the feed bus (and
//! from the alert store after a restart or a lag, by alert id, so none is
//! missed or taken twice), groups them into incidents, runs the deadline
//! timers on the collector's clock, applies operators' actions, and persists
//! every change before announcing it on the bus and to departments' webhooks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use shared::clock::SharedClock;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::department::{DepartmentView, Departments};
use super::grouping::{self, Decision, Facts};
use super::performance::{self, Performance};
use super::settings::IncidentsConfig;
use super::silence::{Silence, SilenceSpec};
use super::sla::{self, Due};
use super::state::{self, Action};
use super::store::IncidentStore;
use super::work::{self, IncidentKey, Work, Worked};
use super::{Entry, EventKind, Incident, IncidentError, IncidentEvent, Status};
use crate::alert::{Alert, Change, Severity};
use crate::catalogue::SensorEntry;
use crate::feed::webhook::Outbox;
use crate::messages::{Bus, FeedEvent, IncidentNews};
use crate::rules::alerting::Alerting;

/// On whose behalf an action is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// Command (or admin): every department's incidents, assignment, rating.
    Command,
    /// An operator of this department: its own incidents only.
    Department(String),
    /// An operator whose token names no department.
    None,
}

#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub authority: Authority,
}

/// An incident as the API shows it: with the deadline it is past, if any.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: Incident,
    pub overdue: Option<&'static str>,
}

/// What a list of incidents is narrowed by.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<Vec<Status>>,
    pub department: Option<String>,
    pub overdue: Option<bool>,
    pub severity: Option<Severity>,
    pub district: Option<String>,
}

/// What the catalogue says about a sensor, for grouping and ownership.
#[derive(Debug, Clone, Default)]
struct SensorFacts {
    kind: Option<String>,
    district: Option<String>,
    gateway: Option<String>,
    owner: Option<String>,
}

#[derive(Default)]
struct Book {
    incidents: BTreeMap<u64, Incident>,
    silences: BTreeMap<u64, Silence>,
    /// Deleted silences, by who made them and when (`work::is_silence`).
    deleted: std::collections::HashSet<(String, i64)>,
    next_id: u64,
    next_silence: u64,
    last_alert: u64,
}

/// Department webhooks: the shared outbox and the index of each department's hook in it.
pub struct Hooks {
    pub outbox: Arc<Outbox>,
    pub index: HashMap<String, usize>,
}

/// Where operators' work goes once done here (cluster mode).
pub type Share = Arc<dyn Fn(Worked) + Send + Sync>;

pub struct Incidents {
    book: Mutex<Book>,
    share: std::sync::OnceLock<Share>,
    work_ids: work::WorkIds,
    store: Arc<dyn IncidentStore>,
    departments: Departments,
    settings: IncidentsConfig,
    sensors: HashMap<String, SensorFacts>,
    alerting: Arc<Alerting>,
    feed: Bus,
    hooks: Option<Hooks>,
    clock: SharedClock,
}

type Out = Vec<(EventKind, Vec<String>, Incident)>;

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Incidents {
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        settings: IncidentsConfig,
        departments: Departments,
        catalogue: &[SensorEntry],
        store: Arc<dyn IncidentStore>,
        alerting: Arc<Alerting>,
        feed: Bus,
        hooks: Option<Hooks>,
        clock: SharedClock,
    ) -> Result<Incidents, IncidentError> {
        let mut book = Book { next_id: 1, next_silence: 1, last_alert: store.last_alert()?, ..Default::default() };
        for i in store.incidents()? {
            book.next_id = book.next_id.max(i.id + 1);
            book.incidents.insert(i.id, i);
        }
        for s in store.silences()? {
            book.next_silence = book.next_silence.max(s.id + 1);
            if s.deleted_ms.is_some() {
                book.deleted.insert((s.created_by, s.created_ms));
            } else {
                book.silences.insert(s.id, s);
            }
        }
        let sensors = catalogue
            .iter()
            .map(|s| {
                let gateway = s.owners().first().map(|g| g.to_string());
                (s.id.to_string(), SensorFacts { kind: Some(s.kind.clone()), district: s.district.clone(), gateway, owner: s.owner.clone() })
            })
            .collect();
        Ok(Incidents {
            book: Mutex::new(book),
            share: std::sync::OnceLock::new(),
            work_ids: Default::default(),
            store,
            departments,
            settings,
            sensors,
            alerting,
            feed,
            hooks,
            clock,
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Cluster mode: each action, rating, rectification and silence made here is told to `share`.
    pub fn set_share(&self, share: Share) {
        let _ = self.share.set(share);
    }

    fn shared(&self, w: Worked) {
        if let Some(share) = self.share.get() {
            share(w);
        }
    }

    /// Consumes alert changes and runs the timers until `shutdown`.
    pub async fn run(self: Arc<Self>, tick: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut rx = self.feed.subscribe();
        self.catch_up();
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(FeedEvent::Alert(a)) => match a.event {
                        Change::Fired => self.take(&[a.alert]),
                        Change::Resolved => self.cleared(&a.alert),
                        _ => {}
                    },
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!("incidents fell {n} feed events behind; catching up from the alert store");
                        self.catch_up();
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = ticker.tick() => self.tick(),
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Takes every stored alert not taken yet, oldest first.
    pub fn catch_up(&self) {
        let last = self.book.lock().unwrap().last_alert;
        let mut missed = self.alerting.alerts(|a| a.id > last);
        missed.sort_by_key(|a| a.id);
        self.take(&missed);
        for a in missed.iter().filter(|a| !a.is_open()) {
            self.cleared(a);
        }
    }

    fn facts(&self, a: &Alert) -> Facts {
        let rule = self.alerting.rules().into_iter().find(|r| r.id == a.rule);
        let per_gateway = rule.as_ref().is_some_and(|r| r.kind.is_gateway());
        let s = if per_gateway { SensorFacts::default() } else { self.sensors.get(&a.sensor).cloned().unwrap_or_default() };
        let department = rule
            .and_then(|r| r.department)
            .filter(|d| self.departments.get(d).is_some())
            .or_else(|| s.owner.as_deref().and_then(|o| self.departments.for_owner(o)).map(|d| d.id.clone()))
            .or_else(|| self.settings.default_department.clone());
        Facts {
            alert: a.id,
            rule: a.rule.clone(),
            sensor: a.sensor.clone(),
            metric: a.metric.clone(),
            severity: a.severity,
            ts_ms: a.started_ts_ms,
            reading_ts_ms: a.reading_ts_ms,
            district: s.district,
            kind: s.kind,
            gateway: if per_gateway { Some(a.sensor.clone()) } else { s.gateway },
            department,
        }
    }

    /// New deadlines for the incident's current assignment, counted from `from`.
    fn set_deadlines(&self, i: &mut Incident, from: i64) {
        let dept = i.department.as_deref().and_then(|d| self.departments.get(d));
        let calendar = dept.filter(|d| d.working_hours).and(self.settings.working_hours.as_ref());
        i.deadlines = sla::deadlines(self.departments.sla(i.department.as_deref(), i.severity, &self.settings.sla), from, calendar);
    }

    fn owner(i: &Incident) -> Vec<String> {
        i.department.iter().cloned().collect()
    }

    /// Groups fired alerts (those not taken yet), persisting and announcing.
    fn take(&self, alerts: &[Alert]) {
        let mut out: Out = Vec::new();
        {
            let mut book = self.book.lock().unwrap();
            for a in alerts {
                if a.id <= book.last_alert {
                    continue;
                }
                let f = self.facts(a);
                book.last_alert = a.id;
                if let Some(s) = book.silences.values_mut().find(|s| s.active(f.ts_ms) && s.matches(&f)) {
                    if !s.held.contains(&a.id) {
                        s.held.push(a.id);
                    }
                    tracing::info!(alert = a.id, silence = s.id, "alert held by a silence: recorded, not raised");
                    self.persist_silence(s);
                } else {
                    let key = grouping::key(&self.settings.group_by, &f);
                    let window = ms(self.settings.group_window.0);
                    match grouping::decide(book.incidents.values(), &key, &f, window, ms(self.settings.merge_within.0)) {
                        Decision::Merge(id) => {
                            let i = book.incidents.get_mut(&id).expect("decided among these");
                            i.merged.push(a.id);
                            self.persist(i);
                        }
                        Decision::Join(id) => {
                            let i = book.incidents.get_mut(&id).expect("decided among these");
                            state::join(i, &f);
                            self.persist(i);
                            out.push((EventKind::AlertJoined, Self::owner(i), i.clone()));
                        }
                        Decision::Open => {
                            let id = book.next_id;
                            book.next_id += 1;
                            let mut i = state::open(id, key, &f);
                            self.set_deadlines(&mut i, f.ts_ms);
                            out.push((EventKind::Opened, f.department.iter().cloned().collect(), i.clone()));
                            if let Some(d) = f.department.clone() {
                                state::apply(&mut i, &Action::Assign { department: d }, "citysense", f.ts_ms).expect("a new incident can be assigned");
                                self.set_deadlines(&mut i, f.ts_ms);
                                out.push((EventKind::Assigned, Self::owner(&i), i.clone()));
                            }
                            self.persist(&i);
                            book.incidents.insert(id, i);
                        }
                    }
                }
                if let Err(e) = self.store.set_last_alert(a.id) {
                    tracing::error!("{e}");
                }
            }
        }
        self.announce(out);
    }

    /// Whether an active silence holds this alert back (the alerting task
    /// asks before announcing it); records it on the silence. The alert is
    /// taken in order later (`take`), where the same silence holds it again.
    pub fn hold(&self, a: &Alert) -> bool {
        let f = self.facts(a);
        let at = if a.state == crate::alert::State::Firing && !a.escalated { f.ts_ms } else { self.now() };
        let mut book = self.book.lock().unwrap();
        let Some(s) = book.silences.values_mut().find(|s| s.active(at) && s.matches(&f)) else { return false };
        if !s.held.contains(&a.id) {
            s.held.push(a.id);
            self.persist_silence(s);
        }
        true
    }

    /// An alert's condition cleared: noted on its incident.
    fn cleared(&self, a: &Alert) {
        let mut out: Out = Vec::new();
        {
            let mut book = self.book.lock().unwrap();
            if let Some(i) = book.incidents.values_mut().find(|i| i.alerts.iter().any(|l| l.id == a.id && l.cleared_ms.is_none())) {
                let ts = a.resolved_ts_ms.unwrap_or(a.updated_ts_ms);
                if let Some(l) = i.alerts.iter_mut().find(|l| l.id == a.id) {
                    l.cleared_ms = Some(ts);
                }
                let mut e = Entry::new(ts, EventKind::AlertCleared).alert(a.id).text(format!("{} {} on {} cleared", a.rule, a.metric, a.sensor));
                if let Some(d) = &i.department {
                    e = e.department(d.clone());
                }
                i.timeline.push(e);
                self.persist(i);
                out.push((EventKind::AlertCleared, Self::owner(i), i.clone()));
            }
        }
        self.announce(out);
    }

    /// Fires every timer due at the clock's now: reminders to the owner, then
    /// escalation up its chain; each entry is stamped with the instant it came due.
    pub fn tick(&self) {
        let now = self.now();
        let mut out: Out = Vec::new();
        {
            let mut book = self.book.lock().unwrap();
            let every = ms(self.settings.escalate_after.0);
            let silences: Vec<Silence> = book.silences.values().filter(|s| s.active(now)).cloned().collect();
            for i in book.incidents.values_mut().filter(|i| i.status.is_open()) {
                // A maintenance window over all its sensors holds its reminders
                // and escalations back until it ends (they fire then, stamped
                // when they came due).
                if !silences.is_empty() && self.silenced(i, &silences) {
                    continue;
                }
                let chain = i.department.as_deref().map(|d| self.departments.chain(d)).unwrap_or_default();
                let due = sla::due(i, now, every, chain.len() as u32);
                if due.is_empty() {
                    continue;
                }
                for d in due {
                    match d {
                        Due::AckOverdue => {
                            let at = i.deadlines.ack_due_ms.unwrap_or(now);
                            i.reminded_ack = true;
                            i.ack_breaches += 1;
                            let mut e = Entry::new(at, EventKind::Overdue).text("acknowledge");
                            if let Some(o) = &i.department {
                                e = e.department(o.clone());
                            }
                            i.timeline.push(e);
                            out.push((EventKind::Overdue, Self::owner(i), i.clone()));
                        }
                        Due::ResolveOverdue => {
                            let at = i.deadlines.resolve_due_ms.unwrap_or(now);
                            i.reminded_resolve = true;
                            i.resolve_breaches += 1;
                            let mut e = Entry::new(at, EventKind::Overdue).text("resolve");
                            if let Some(o) = &i.department {
                                e = e.department(o.clone());
                            }
                            i.timeline.push(e);
                            out.push((EventKind::Overdue, Self::owner(i), i.clone()));
                        }
                        Due::Escalate(level) => {
                            let at = i.deadlines.ack_due_ms.unwrap_or(now).saturating_add(every.saturating_mul(level as i64));
                            let target = chain[level as usize - 1].clone();
                            i.escalation_level = level;
                            let owner = i.department.clone().unwrap_or_default();
                            i.timeline.push(
                                Entry::new(at, EventKind::Escalated).from(owner.clone()).department(target.clone()).text(format!("not acknowledged; level {level} of the chain")),
                            );
                            out.push((EventKind::Escalated, vec![target, owner], i.clone()));
                        }
                    }
                }
                self.persist(i);
            }
        }
        self.announce(out);
    }

    /// Whether active silences cover every alert of the incident.
    fn silenced(&self, i: &Incident, silences: &[Silence]) -> bool {
        let rules = self.alerting.rules();
        i.alerts.iter().all(|l| {
            let per_gateway = rules.iter().any(|r| r.id == l.rule && r.kind.is_gateway());
            let s = if per_gateway { SensorFacts::default() } else { self.sensors.get(&l.sensor).cloned().unwrap_or_default() };
            let f = Facts {
                alert: l.id,
                rule: l.rule.clone(),
                sensor: l.sensor.clone(),
                metric: l.metric.clone(),
                severity: i.severity,
                ts_ms: l.ts_ms,
                reading_ts_ms: l.reading_ts_ms,
                district: s.district,
                kind: s.kind,
                gateway: if per_gateway { Some(l.sensor.clone()) } else { s.gateway },
                department: i.department.clone(),
            };
            silences.iter().any(|s| s.matches(&f))
        })
    }

    fn check(&self, i: &Incident, actor: &Actor, action: &str) -> Result<(), IncidentError> {
        let owner = i.department.clone().unwrap_or_else(|| "nobody".into());
        match &actor.authority {
            Authority::Command => Ok(()),
            Authority::None => {
                Err(IncidentError::Forbidden(format!("token `{}` names no department: it cannot {action} incidents (add department = \"…\" to its [[auth.token]])", actor.name)))
            }
            Authority::Department(d) if i.department.as_deref() == Some(d.as_str()) => Ok(()),
            Authority::Department(d) => Err(IncidentError::NotYours { id: i.id, department: owner, who: actor.name.clone(), own: d.clone() }),
        }
    }

    fn known(&self, d: &str) -> Result<(), IncidentError> {
        self.departments.get(d).map(|_| ()).ok_or_else(|| IncidentError::NoDepartment(d.to_string()))
    }

    /// An operator's or commander's action on incident `id`.
    pub fn act(&self, id: u64, action: Action, actor: &Actor) -> Result<IncidentView, IncidentError> {
        self.tick();
        let now = self.now();
        if let Action::Assign { department } | Action::Transfer { department, .. } = &action {
            self.known(department)?;
        }
        let mut out: Out = Vec::new();
        let view = {
            let mut book = self.book.lock().unwrap();
            let i = book.incidents.get_mut(&id).ok_or(IncidentError::NotFound(id))?;
            if matches!(action, Action::Assign { .. }) && actor.authority != Authority::Command {
                return Err(IncidentError::Forbidden(format!("token `{}`: assigning across departments is for command", actor.name)));
            }
            self.check(i, actor, action.name())?;
            let work = Work::Act { action };
            let id = self.work_ids.next();
            let next = self.perform(i, &work, &id, &actor.name, now, &mut out)?;
            self.shared(Worked::Incident { id, incident: IncidentKey::of(&next), work, by: actor.name.clone(), at_ms: now });
            IncidentView { overdue: next.overdue(now), incident: next }
        };
        self.announce(out);
        Ok(view)
    }

    /// Does `work` (named `id`) to `i` as `by` at `now`: saved, then queued
    /// in `out` to be announced. Assignment, transfer and reopening start new deadlines.
    fn perform(&self, i: &mut Incident, work: &Work, id: &str, by: &str, now: i64, out: &mut Out) -> Result<Incident, IncidentError> {
        let mut next = i.clone();
        let entry = work.apply(&mut next, by, now)?;
        if let Some(e) = next.timeline.last_mut() {
            e.work_id = Some(id.to_string());
        }
        if matches!(entry.event, EventKind::Assigned | EventKind::Transferred | EventKind::Reopened) {
            self.set_deadlines(&mut next, now);
        }
        self.store.save_incident(&next)?;
        *i = next.clone();
        let to = match (work, &entry.event, &entry.from) {
            (Work::Act { .. }, EventKind::Transferred, Some(from)) => vec![entry.department.clone().unwrap_or_default(), from.clone()],
            (Work::Act { .. }, _, _) => Self::owner(&next),
            _ => entry.department.iter().cloned().collect(),
        };
        out.push((entry.event, to, next.clone()));
        Ok(next)
    }

    /// Another collector's work, done here as it was there (by whom, when).
    /// `None` while this collector has not grouped the incident it names
    /// (it is behind in the log); else whether anything changed: work that
    /// came back here, or read again after a restart, changes nothing, and
    /// work this incident's state refuses here is logged and let go.
    pub fn worked_elsewhere(&self, w: &Worked) -> Option<bool> {
        let mut out: Out = Vec::new();
        let changed = {
            let mut book = self.book.lock().unwrap();
            match w {
                Worked::Incident { id: work_id, incident, work, by, at_ms } => {
                    let id = incident.find(book.incidents.values(), *at_ms)?;
                    let i = book.incidents.get_mut(&id).expect("found among these");
                    if work::done_already(i, work_id) {
                        return Some(false);
                    }
                    match self.perform(i, work, work_id, by, *at_ms, &mut out) {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!(incident = id, by = %by, "work on this incident done on another collector cannot be done here: {e}");
                            false
                        }
                    }
                }
                Worked::Silenced { spec, by, at_ms } => {
                    if book.silences.values().any(|s| work::is_silence(s, by, *at_ms)) || book.deleted.contains(&(by.clone(), *at_ms)) {
                        return Some(false);
                    }
                    if let Err(e) = Self::make_silence(&mut book, &*self.store, spec.clone(), by, *at_ms) {
                        tracing::error!("a silence made on another collector: {e}");
                        return Some(false);
                    }
                    true
                }
                Worked::Unsilenced { created_by, created_ms, at_ms } => {
                    let Some(id) = book.silences.values().find(|s| work::is_silence(s, created_by, *created_ms)).map(|s| s.id) else { return Some(false) };
                    if let Err(e) = Self::delete(&mut book, &*self.store, id, *at_ms) {
                        tracing::error!("a silence deleted on another collector: {e}");
                        return Some(false);
                    }
                    true
                }
            }
        };
        self.announce(out);
        Some(changed)
    }

    /// The requester's or commander's rating of a resolved incident.
    pub fn rate(&self, id: u64, good: bool, reason: Option<String>, actor: &Actor) -> Result<IncidentView, IncidentError> {
        if actor.authority != Authority::Command {
            return Err(IncidentError::Forbidden(format!("token `{}`: rating the handling is for command (the requester)", actor.name)));
        }
        self.evaluate(id, Work::Rate { good, reason }, actor)
    }

    /// The department reports the rectification a bad rating asked for.
    pub fn rectify(&self, id: u64, result: String, actor: &Actor) -> Result<IncidentView, IncidentError> {
        {
            let book = self.book.lock().unwrap();
            let i = book.incidents.get(&id).ok_or(IncidentError::NotFound(id))?;
            let mut as_owner = i.clone();
            as_owner.department = i.rectification.as_ref().and_then(|r| r.department.clone()).or(as_owner.department);
            self.check(&as_owner, actor, "rectify")?;
        }
        self.evaluate(id, Work::Rectify { result }, actor)
    }

    fn evaluate(&self, id: u64, work: Work, actor: &Actor) -> Result<IncidentView, IncidentError> {
        let now = self.now();
        let mut out: Out = Vec::new();
        let view = {
            let mut book = self.book.lock().unwrap();
            let i = book.incidents.get_mut(&id).ok_or(IncidentError::NotFound(id))?;
            let id = self.work_ids.next();
            let next = self.perform(i, &work, &id, &actor.name, now, &mut out)?;
            self.shared(Worked::Incident { id, incident: IncidentKey::of(&next), work, by: actor.name.clone(), at_ms: now });
            IncidentView { overdue: next.overdue(now), incident: next }
        };
        self.announce(out);
        Ok(view)
    }

    fn persist(&self, i: &Incident) {
        if let Err(e) = self.store.save_incident(i) {
            tracing::error!(incident = i.id, "cannot persist incident: {e}");
        }
    }

    fn persist_silence(&self, s: &Silence) {
        if let Err(e) = self.store.save_silence(s) {
            tracing::error!(silence = s.id, "cannot persist silence: {e}");
        }
    }

    /// Announces persisted changes: the bus (MQTT, SSE) and the departments' webhooks.
    fn announce(&self, out: Out) {
        let now = self.now();
        for (event, mut to, incident) in out {
            to.dedup();
            to.retain(|d| !d.is_empty());
            tracing::info!(incident = incident.id, event = event.as_str(), to = ?to, "incident {}", event.as_str());
            let id = incident.id;
            let ev = IncidentEvent { event, to: to.first().cloned(), overdue: incident.overdue(now), incident };
            let json = Arc::new(serde_json::to_string(&ev).expect("incident serializes"));
            if let Some(h) = &self.hooks {
                for d in &to {
                    if let Some(&hook) = h.index.get(d) {
                        // The timeline grows by one entry per change: with the id, it names the change.
                        let key = format!("incident-{id}-{}-{}", event.as_str(), ev.incident.timeline.len());
                        if let Err(e) = h.outbox.enqueue(hook, key, json.to_string()) {
                            tracing::error!(department = %d, "cannot queue incident webhook: {e}");
                        }
                    }
                }
            }
            let _ = self.feed.send(FeedEvent::Incident(IncidentNews { id, departments: to, json }));
        }
    }

    pub fn get(&self, id: u64) -> Option<IncidentView> {
        let now = self.now();
        self.book.lock().unwrap().incidents.get(&id).map(|i| IncidentView { overdue: i.overdue(now), incident: i.clone() })
    }

    /// Incidents, newest first, filtered.
    pub fn list(&self, f: &Filter) -> Vec<IncidentView> {
        let now = self.now();
        let book = self.book.lock().unwrap();
        book.incidents
            .values()
            .rev()
            .filter(|i| f.status.as_ref().is_none_or(|s| s.contains(&i.status)))
            .filter(|i| f.department.as_ref().is_none_or(|d| i.department.as_ref() == Some(d)))
            .filter(|i| f.severity.is_none_or(|s| i.severity == s))
            .filter(|i| f.district.as_ref().is_none_or(|d| i.district.as_ref() == Some(d)))
            .map(|i| IncidentView { overdue: i.overdue(now), incident: i.clone() })
            .filter(|v| f.overdue.is_none_or(|o| v.overdue.is_some() == o))
            .collect()
    }

    pub fn add_silence(&self, spec: SilenceSpec, by: &str) -> Result<Silence, IncidentError> {
        let problems = spec.validate();
        if !problems.is_empty() {
            return Err(IncidentError::Invalid(problems.join("; ")));
        }
        let mut book = self.book.lock().unwrap();
        let s = Self::make_silence(&mut book, &*self.store, spec, by, self.now())?;
        self.shared(Worked::Silenced { spec: s.spec.clone(), by: s.created_by.clone(), at_ms: s.created_ms });
        Ok(s)
    }

    pub fn delete_silence(&self, id: u64) -> Result<Silence, IncidentError> {
        let mut book = self.book.lock().unwrap();
        let s = book.silences.get(&id).cloned().ok_or(IncidentError::NoSilence(id))?;
        let now = self.now();
        Self::delete(&mut book, &*self.store, id, now)?;
        self.shared(Worked::Unsilenced { created_by: s.created_by.clone(), created_ms: s.created_ms, at_ms: now });
        Ok(s)
    }

    /// Makes a silence of `spec` by `by` at `at_ms`, stored, then kept.
    fn make_silence(book: &mut Book, store: &dyn IncidentStore, spec: SilenceSpec, by: &str, at_ms: i64) -> Result<Silence, IncidentError> {
        let s = Silence { id: book.next_silence, spec, created_by: by.into(), created_ms: at_ms, held: Vec::new(), deleted_ms: None };
        store.save_silence(&s)?;
        book.next_silence += 1;
        book.silences.insert(s.id, s.clone());
        Ok(s)
    }

    /// Deletes silence `id`, kept in the store marked deleted at `at_ms`.
    fn delete(book: &mut Book, store: &dyn IncidentStore, id: u64, at_ms: i64) -> Result<(), IncidentError> {
        let Some(s) = book.silences.get(&id) else { return Err(IncidentError::NoSilence(id)) };
        store.save_silence(&Silence { deleted_ms: Some(at_ms), ..s.clone() })?;
        let s = book.silences.remove(&id).expect("got above");
        book.deleted.insert((s.created_by, s.created_ms));
        Ok(())
    }

    /// Silences with whether each is active now.
    pub fn silences(&self) -> Vec<(Silence, bool)> {
        let now = self.now();
        self.book.lock().unwrap().silences.values().map(|s| (s.clone(), s.active(now))).collect()
    }

    pub fn departments(&self) -> Vec<DepartmentView> {
        self.departments.all()
    }

    pub fn has_department(&self, id: &str) -> bool {
        self.departments.get(id).is_some()
    }

    pub fn performance(&self, department: &str, from: i64, to: i64) -> Result<Performance, IncidentError> {
        self.known(department)?;
        let book = self.book.lock().unwrap();
        Ok(performance::compute(department, book.incidents.values(), from, to, self.now()))
    }

    /// Every department's figures: the league table.
    pub fn league(&self, from: i64, to: i64) -> Vec<Performance> {
        let book = self.book.lock().unwrap();
        let now = self.now();
        self.departments.ids().map(|d| performance::compute(d, book.incidents.values(), from, to, now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::department::DepartmentConfig;
    use crate::incident::sla::{Calendar, Day, SlaEntry};
    use crate::incident::store::SledIncidentStore;
    use crate::rules::store::{AlertStore, SledAlertStore};
    use crate::rules::{Engine, State as AlertState};
    use shared::clock::ManualClock;

    const M: i64 = 60_000;

    fn dept(id: &str, up: Option<&str>, owner: &str) -> DepartmentConfig {
        DepartmentConfig {
            id: id.into(),
            name: id.into(),
            owners: vec![owner.into()],
            contacts: vec![],
            webhook: None,
            escalate_to: up.map(|s| s.into()),
            working_hours: false,
            sla: vec![SlaEntry { severity: Some(Severity::Critical), acknowledge: Some("10m".into()), resolve: Some("2h".into()) }],
        }
    }

    fn catalogue() -> Vec<SensorEntry> {
        toml::from_str::<toml::Table>(
            r#"[[sensor]]
id = "wl-001"
kind = "water_level"
district = "Xihu"
owner = "Water Resources Bureau"
[[sensor]]
id = "wl-002"
kind = "water_level"
district = "Xihu"
owner = "Water Resources Bureau""#,
        )
        .unwrap()["sensor"]
            .clone()
            .try_into()
            .unwrap()
    }

    struct Rig {
        dir: tempfile::TempDir,
        clock: Arc<ManualClock>,
        feed: Bus,
    }

    impl Rig {
        fn new(start: i64) -> Rig {
            Rig { dir: tempfile::tempdir().unwrap(), clock: ManualClock::at(start), feed: crate::messages::bus() }
        }

        /// The service over the rig's store: a second call is a restart.
        fn service(&self, departments: Vec<DepartmentConfig>, settings: IncidentsConfig) -> Incidents {
            let path = self.dir.path().join("alerts");
            let side = SledAlertStore::open(&path).unwrap();
            let outbox = Arc::new(Outbox::open(side.db()).unwrap());
            let store = Arc::new(SledIncidentStore::open(side.db()).unwrap());
            let alerts: Arc<dyn AlertStore> = Arc::new(side);
            let engine = Engine::new(vec![], HashMap::new(), vec![], 0);
            let alerting = Arc::new(Alerting::new(engine, alerts, self.feed.clone(), (vec![], outbox), self.clock.clone()));
            Incidents::open(settings, Departments::new(departments), &catalogue(), store, alerting, self.feed.clone(), None, self.clock.clone()).unwrap()
        }
    }

    fn alert(id: u64, sensor: &str, ts: i64) -> Alert {
        Alert {
            id,
            rule: "river-high".into(),
            sensor: sensor.into(),
            metric: "water_level_m".into(),
            severity: Severity::Critical,
            state: AlertState::Firing,
            value: Some(3.2),
            threshold: Some(3.0),
            started_ts_ms: ts,
            updated_ts_ms: ts,
            acked_by: None,
            note: None,
            escalated: false,
            resolved_ts_ms: None,
            resolved_by: None,
            reading_ts_ms: None,
        }
    }

    fn chain() -> Vec<DepartmentConfig> {
        vec![dept("water", Some("xihu-command"), "Water Resources Bureau"), dept("xihu-command", Some("city-command"), "-"), dept("city-command", None, "-")]
    }

    fn settings() -> IncidentsConfig {
        IncidentsConfig { escalate_after: shared::config::HumanDuration(Duration::from_secs(300)), ..Default::default() }
    }

    fn events(i: &Incident) -> Vec<(&'static str, i64, Option<String>)> {
        i.timeline.iter().map(|e| (e.event.as_str(), e.ts_ms, e.department.clone())).collect()
    }

    fn command() -> Actor {
        Actor { name: "cmd".into(), authority: Authority::Command }
    }

    #[test]
    fn overdue_reminds_then_escalates_up_the_chain_on_time_and_survives_a_restart() {
        let rig = Rig::new(0);
        let s = rig.service(chain(), settings());
        s.take(&[alert(1, "wl-001", 0), alert(2, "wl-002", 30_000)]);
        let i = s.get(1).unwrap().incident;
        assert_eq!(
            (i.status, i.department.as_deref(), i.alerts.len(), i.deadlines.ack_due_ms, i.deadlines.resolve_due_ms),
            (Status::Assigned, Some("water"), 2, Some(10 * M), Some(120 * M))
        );
        rig.clock.set(10 * M - 1);
        s.tick();
        assert!(s.get(1).unwrap().overdue.is_none());
        rig.clock.set(10 * M);
        s.tick();
        assert_eq!(s.get(1).unwrap().overdue, Some("acknowledge"));
        assert_eq!(s.list(&Filter { overdue: Some(true), ..Default::default() }).len(), 1);
        rig.clock.set(15 * M - 1);
        s.tick();
        // A restart: the timers are on the stored incident, nothing repeats.
        drop(s);
        let s = rig.service(chain(), settings());
        s.tick();
        let i = s.get(1).unwrap().incident;
        assert_eq!(i.count(EventKind::Overdue), 1);
        assert_eq!(i.count(EventKind::Escalated), 0);
        rig.clock.set(21 * M);
        s.tick();
        let i = s.get(1).unwrap().incident;
        let esc: Vec<_> = i.timeline.iter().filter(|e| e.event == EventKind::Escalated).map(|e| (e.ts_ms, e.department.clone().unwrap())).collect();
        assert_eq!(esc, [(15 * M, "xihu-command".to_string()), (20 * M, "city-command".to_string())], "each level at the deadline + n × escalate_after");
        rig.clock.set(60 * M);
        s.tick();
        assert_eq!(s.get(1).unwrap().incident.count(EventKind::Escalated), 2, "the chain ends at city command");
        s.take(&[alert(2, "wl-002", 30_000)]);
        assert_eq!(s.get(1).unwrap().incident.alerts.len(), 2, "an alert is taken once, across restarts too");
    }

    /// Two collectors of a cluster, each with incidents of its own ids: the
    /// work done on one, done on the other, leaves both the same but for ids.
    #[test]
    fn work_done_on_one_collector_is_done_alike_on_another_once() {
        const T0: i64 = 600 * M;
        let (here, there) = (Rig::new(T0), Rig::new(T0));
        let (a, b) = (here.service(chain(), settings()), there.service(chain(), settings()));
        let told = Arc::new(Mutex::new(Vec::new()));
        let t = told.clone();
        a.set_share(Arc::new(move |w| t.lock().unwrap().push(w)));
        let fired = |id, ts| Alert { reading_ts_ms: Some(ts), ..alert(id, "wl-001", ts) };
        // `b` has an older incident from the same gauge first: its ids differ.
        a.take(&[fired(1, T0)]);
        b.take(&[fired(1, 0), fired(2, T0)]);
        // Behind in the log: the work waits for an incident `b` has not grouped.
        let water = Actor { name: "water-op".into(), authority: Authority::Department("water".into()) };
        here.clock.set(T0 + M);
        a.act(1, Action::Acknowledge { note: Some("crew sent".into()) }, &water).unwrap();
        a.add_silence(
            SilenceSpec {
                matcher: crate::incident::silence::Matcher { district: Some("Xihu".into()), ..Default::default() },
                schedule: crate::incident::silence::Schedule::Once { from_ms: T0, until_ms: T0 + M },
                comment: "sluice work".into(),
            },
            "water-op",
        )
        .unwrap();
        here.clock.set(T0 + 2 * M);
        a.act(1, Action::Note { text: "pump 2 running".into() }, &water).unwrap();
        a.act(1, Action::Transfer { department: "xihu-command".into(), reason: "the district's drains".into() }, &command()).unwrap();
        here.clock.set(T0 + 3 * M);
        a.act(1, Action::Acknowledge { note: None }, &command()).unwrap();
        a.act(1, Action::Resolve { action: "drains cleared".into() }, &command()).unwrap();
        a.rate(1, false, Some("two hours late".into()), &command()).unwrap();
        a.rectify(1, "night shift added".into(), &command()).unwrap();
        a.delete_silence(1).unwrap();
        let work = told.lock().unwrap().clone();
        assert_eq!(work.len(), 9, "{work:?}");
        let mut rx = there.feed.subscribe();
        for w in &work {
            b.worked_elsewhere(w);
        }
        let (ours, theirs) = (a.get(1).unwrap().incident, b.get(2).unwrap().incident);
        assert_eq!(b.get(1).unwrap().incident.timeline.len(), 2, "the older incident is left alone");
        let but_ids = |i: &Incident| Incident {
            id: 0,
            alerts: i.alerts.iter().map(|l| crate::incident::grouping::AlertLink { id: 0, ..l.clone() }).collect(),
            timeline: i.timeline.iter().map(|e| Entry { alert: None, ..e.clone() }).collect(),
            ..i.clone()
        };
        assert_eq!(but_ids(&theirs), but_ids(&ours));
        assert_eq!(theirs.timeline.len(), 9, "opened, assigned and the seven pieces of work: {:?}", events(&theirs));
        assert!(b.silences().is_empty(), "the silence made and deleted there is gone here too");
        let mut announced = 0;
        while let Ok(ev) = rx.try_recv() {
            announced += usize::from(matches!(ev, FeedEvent::Incident(_)));
        }
        assert_eq!(announced, 7, "each change announced here once");
        // Read again (a restart reads the stream from its start), or back where it was done: nothing changes.
        for w in &work {
            assert_ne!(b.worked_elsewhere(w), Some(true), "{w:?} done twice");
            assert_ne!(a.worked_elsewhere(w), Some(true), "{w:?} done twice where it was done");
        }
        assert_eq!(b.get(2).unwrap().incident, theirs);
        assert_eq!(a.get(1).unwrap().incident, ours);
    }

    #[test]
    fn acknowledging_halts_escalation_and_operators_keep_to_their_department() {
        let rig = Rig::new(0);
        let s = rig.service(chain(), settings());
        s.take(&[alert(1, "wl-001", 0)]);
        rig.clock.set(12 * M);
        let roads = Actor { name: "roads-op".into(), authority: Authority::Department("roads".into()) };
        assert!(matches!(s.act(1, Action::Acknowledge { note: None }, &roads), Err(IncidentError::NotYours { .. })));
        let nobody = Actor { name: "op".into(), authority: Authority::None };
        assert!(matches!(s.act(1, Action::Acknowledge { note: None }, &nobody), Err(IncidentError::Forbidden(_))));
        let water = Actor { name: "water-op".into(), authority: Authority::Department("water".into()) };
        assert!(matches!(s.act(1, Action::Assign { department: "xihu-command".into() }, &water), Err(IncidentError::Forbidden(_))));
        let v = s.act(1, Action::Acknowledge { note: None }, &water).unwrap();
        assert_eq!(v.incident.count(EventKind::Overdue), 1, "the reminder due before the late ack fired first");
        assert_eq!(v.incident.ack_breaches, 1);
        rig.clock.set(60 * M);
        s.tick();
        assert_eq!(s.get(1).unwrap().incident.count(EventKind::Escalated), 0, "acknowledged: no escalation");
        assert!(matches!(s.rate(1, true, None, &water), Err(IncidentError::Forbidden(_))));
        assert!(matches!(s.act(1, Action::Transfer { department: "nowhere".into(), reason: "x".into() }, &command()), Err(IncidentError::NoDepartment(_))));
    }

    #[test]
    fn working_hours_deadlines_and_a_transfer_restart_the_clock() {
        // Friday 17:00 at +08:00; acknowledge within 2 working hours: Monday 10:00.
        let fri_17 = 1_795_737_600_000 - 8 * 3_600_000 + 17 * 3_600_000;
        let rig = Rig::new(fri_17);
        let mut depts = chain();
        depts[0].working_hours = true;
        depts[0].sla = vec![SlaEntry { severity: None, acknowledge: Some("2h".into()), resolve: None }];
        depts.push(dept("roads", None, "Roads"));
        let mut set = settings();
        set.working_hours =
            Some(Calendar { days: vec![Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri], start: "09:00".into(), end: "18:00".into(), utc_offset: "+08:00".into() });
        let s = rig.service(depts, set);
        s.take(&[alert(1, "wl-001", fri_17)]);
        let monday_10 = fri_17 + 3 * 86_400_000 - 7 * 3_600_000;
        assert_eq!(s.get(1).unwrap().incident.deadlines.ack_due_ms, Some(monday_10));
        rig.clock.set(monday_10 - 1);
        s.tick();
        assert!(s.get(1).unwrap().overdue.is_none(), "the weekend does not count");
        let v = s.act(1, Action::Transfer { department: "roads".into(), reason: "a burst main".into() }, &command()).unwrap();
        assert_eq!(v.incident.deadlines.ack_due_ms, Some(monday_10 - 1 + 10 * M), "roads counts on the clock from the transfer");
        let t = v.incident.timeline.last().unwrap();
        assert_eq!((t.from.as_deref(), t.department.as_deref(), t.text.as_deref()), (Some("water"), Some("roads"), Some("a burst main")));
        assert_eq!(events(&v.incident).iter().map(|e| e.0).collect::<Vec<_>>(), ["opened", "assigned", "transferred"]);
    }

    #[test]
    fn a_maintenance_window_over_an_open_incident_holds_its_escalation_until_it_ends() {
        let rig = Rig::new(0);
        let s = rig.service(chain(), settings());
        s.take(&[alert(1, "wl-001", 0)]);
        let spec: SilenceSpec =
            serde_json::from_value(serde_json::json!({"match": {"district": "Xihu"}, "schedule": {"type": "once", "from_ms": 5 * M, "until_ms": 30 * M}, "comment": "dredging"}))
                .unwrap();
        s.add_silence(spec, "li").unwrap();
        rig.clock.set(29 * M);
        s.tick();
        assert_eq!(s.get(1).unwrap().incident.count(EventKind::Overdue), 0, "held during the window");
        rig.clock.set(30 * M);
        s.tick();
        let i = s.get(1).unwrap().incident;
        let due: Vec<(&str, i64)> = i.timeline.iter().filter(|e| matches!(e.event, EventKind::Overdue | EventKind::Escalated)).map(|e| (e.event.as_str(), e.ts_ms)).collect();
        assert_eq!(due, [("overdue", 10 * M), ("escalated", 15 * M), ("escalated", 20 * M)], "after it, each stamped when it came due");
    }

    #[test]
    fn a_silenced_alert_is_recorded_but_opens_no_incident() {
        let rig = Rig::new(1_000);
        let s = rig.service(chain(), settings());
        let spec: SilenceSpec = serde_json::from_value(
            serde_json::json!({"match": {"sensor": "wl-001"}, "schedule": {"type": "once", "from_ms": 0, "until_ms": 10_000}, "comment": "gauge recalibration"}),
        )
        .unwrap();
        let sil = s.add_silence(spec, "li").unwrap();
        assert_eq!((sil.created_by.as_str(), sil.created_ms), ("li", 1_000));
        s.take(&[alert(1, "wl-001", 2_000), alert(2, "wl-002", 2_000), alert(3, "wl-001", 10_000)]);
        let all = s.list(&Filter::default());
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].incident.alerts.iter().map(|a| a.id).collect::<Vec<_>>(), [2, 3], "held during the window, taken after it");
        assert_eq!(s.silences()[0].0.held, [1]);
        drop(s);
        let s = rig.service(chain(), settings());
        assert_eq!(s.silences()[0].0.held, [1], "the record survives a restart");
        assert!(s.delete_silence(1).is_ok() && s.delete_silence(1).is_err());
    }
}
