//! The alerting task: feeds the engine with stored readings, gateway news and
//! the clock, persists every change before announcing it, and serves the API's
//! rule and alert operations.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::clock::SharedClock;

use crate::liveness::Heartbeat;
use tokio::sync::{mpsc, watch};

use crate::feed::webhook::{self, WebhookConfig};
use crate::messages::{AlertEvent, Bus, FeedEvent, RuleInput as Input};
use crate::rules::engine::Changes;
use crate::rules::store::AlertStore;
use crate::rules::{Alert, AlertError, Change, Engine, Rule};

/// Whether a firing (or escalation) is held back: stored, not announced.
/// Set by the incident service from its silences (`crate::incident::silence`).
pub type Hold = Arc<dyn Fn(&Alert) -> bool + Send + Sync>;

/// An operator's acknowledgement or resolution, as other collectors of a
/// cluster hear of it (`crate::cluster::handling`). Alert ids are each
/// collector's own: the alert is named by its key and by what fired it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Handled {
    pub action: Handling,
    pub rule: String,
    pub sensor: String,
    pub metric: String,
    /// The reading that fired it (`threshold`, `rate`): the same on every collector.
    pub reading_ts_ms: Option<i64>,
    pub by: Option<String>,
    pub note: Option<String>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handling {
    Acknowledged,
    Resolved,
}

/// Where an operator's handling goes once done here.
pub type Share = Arc<dyn Fn(Handled) + Send + Sync>;

/// Where each change of an alert this collector answers for goes once
/// stored, with the gateway it is about (`Engine::gateway_of_alert`): the
/// cluster's copy, when collectors share the log by partition
/// (`crate::cluster::alerts`).
pub type Replicate = Arc<dyn Fn(&Alert, Option<&str>) + Send + Sync>;

pub struct Alerting {
    engine: Mutex<Engine>,
    hold: std::sync::OnceLock<Hold>,
    share: std::sync::OnceLock<Share>,
    replicate: std::sync::OnceLock<Replicate>,
    /// With the log shared by partition: the city's open alerts as the
    /// cluster keeps them (`crate::cluster::alerts`), by key.
    elsewhere: Mutex<HashMap<String, Alert>>,
    store: Arc<dyn AlertStore>,
    feed: Bus,
    webhooks: Vec<WebhookConfig>,
    pub outbox: Arc<webhook::Outbox>,
    clock: SharedClock,
    /// Readings the engine has evaluated: with ingest's lagged readings, what
    /// tells a benchmark (or an operator) that the rules have caught up.
    pub evaluated: AtomicU64,
}

impl Alerting {
    pub fn new(engine: Engine, store: Arc<dyn AlertStore>, feed: Bus, webhooks: (Vec<WebhookConfig>, Arc<webhook::Outbox>), clock: SharedClock) -> Alerting {
        let (webhooks, outbox) = webhooks;
        Alerting {
            engine: Mutex::new(engine),
            hold: std::sync::OnceLock::new(),
            share: std::sync::OnceLock::new(),
            replicate: std::sync::OnceLock::new(),
            elsewhere: Mutex::new(HashMap::new()),
            store,
            feed,
            webhooks,
            outbox,
            clock,
            evaluated: AtomicU64::new(0),
        }
    }

    /// Silences: a fired or escalated alert `hold` says yes to is stored but not announced.
    pub fn set_hold(&self, hold: Hold) {
        let _ = self.hold.set(hold);
    }

    /// Cluster mode with the log shared by partition: what this collector answers for.
    pub fn set_scope(&self, scope: Arc<dyn crate::rules::Scope>) {
        self.engine.lock().unwrap().set_scope(scope);
    }

    /// Cluster mode with the log shared by partition: each change of an alert this collector answers for goes to `replicate`.
    pub fn set_replicate(&self, replicate: Replicate) {
        let _ = self.replicate.set(replicate);
    }

    /// Numbers new alerts from `base` on (`Engine::with_id_range`).
    pub fn number_from(&self, base: u64) {
        let mut engine = self.engine.lock().unwrap();
        *engine = std::mem::take(&mut *engine).with_id_range(base);
    }

    /// An open alert as the cluster keeps it under `key` (`None`: resolved,
    /// gone). A change another collector made goes to this collector's live
    /// stream (`FeedEvent::AlertElsewhere`); its own were there when made.
    pub fn heard_elsewhere(&self, key: &str, alert: Option<Alert>) {
        let before = {
            let mut elsewhere = self.elsewhere.lock().unwrap();
            match &alert {
                Some(a) => elsewhere.insert(key.to_string(), a.clone()),
                None => elsewhere.remove(key),
            }
        };
        let Some(ev) = news_of(before, alert, self.clock.now_ms()) else { return };
        let own = self.engine.lock().unwrap().alerts().any(|a| a.id == ev.alert.id && a.state == ev.alert.state);
        if !own {
            let _ = self.feed.send(FeedEvent::AlertElsewhere(ev));
        }
    }

    /// Alerts another collector had open for the subjects `moved` selects
    /// (by the gateway each is about), now this collector's to judge
    /// (`Engine::take_over`): stored, not announced. Returns how many changed.
    pub fn take_over(&self, theirs: Vec<Alert>, moved: &dyn Fn(Option<&str>) -> bool) -> usize {
        let changed = self.engine.lock().unwrap().take_over(theirs, moved, self.clock.now_ms());
        for a in &changed {
            if let Err(e) = self.store.save_alert(a) {
                tracing::error!(alert = a.id, "cannot persist an alert taken over: {e}");
            }
        }
        changed.len()
    }

    /// Cluster mode: each acknowledgement and resolution made here is told to `share`.
    pub fn set_share(&self, share: Share) {
        let _ = self.share.set(share);
    }

    fn shared(&self, action: Handling, alert: &Alert) {
        if let Some(share) = self.share.get() {
            share(Handled {
                action,
                rule: alert.rule.clone(),
                sensor: alert.sensor.clone(),
                metric: alert.metric.clone(),
                reading_ts_ms: alert.reading_ts_ms,
                by: if action == Handling::Acknowledged { alert.acked_by.clone() } else { alert.resolved_by.clone() },
                note: alert.note.clone(),
                at_ms: alert.updated_ts_ms,
            });
        }
    }

    /// Another collector's handling of an alert, applied to ours when we have
    /// it open, fired by the same reading (or, for kinds without one, before
    /// the handling). `None` while we have no such alert open (not fired
    /// yet here, or closed already); else whether anything changed.
    pub fn handled_elsewhere(&self, h: &Handled) -> Option<bool> {
        let change = {
            let mut engine = self.engine.lock().unwrap();
            let a = engine.open_alert(&h.rule, &h.sensor, &h.metric)?;
            let same = match (a.reading_ts_ms, h.reading_ts_ms) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => a.started_ts_ms <= h.at_ms,
            };
            if !same {
                return None;
            }
            if h.action == Handling::Acknowledged && a.state != super::State::Firing {
                return Some(false);
            }
            let id = a.id;
            match h.action {
                Handling::Acknowledged => engine.ack(id, h.by.clone().unwrap_or_default(), h.note.clone(), h.at_ms),
                Handling::Resolved => engine.resolve(id, h.by.clone(), h.note.clone(), h.at_ms),
            }
        };
        match change {
            Ok(change) => {
                self.apply(vec![change]);
                Some(true)
            }
            Err(_) => Some(false),
        }
    }

    /// Persists, then announces: an alert on a feed is one that survives a
    /// restart. Its webhook deliveries are written first and made durable by
    /// the same sync as the alert: a crash keeps both or neither (with a sync
    /// each, one between them left an alert whose change no webhook got).
    fn apply(&self, changes: Changes) {
        for (event, alert) in changes {
            let (ours, gateway) = {
                let engine = self.engine.lock().unwrap();
                let gateway = engine.gateway_of_alert(&alert);
                (engine.answers_for_place(gateway), gateway.map(str::to_string))
            };
            if !ours {
                // A copy left from when this collector held its partition
                // (an operator's handling of it): stored here; the holder,
                // told through the cluster, announces it.
                if let Err(e) = self.store.save_alert(&alert) {
                    tracing::error!(alert = alert.id, "cannot persist alert: {e}");
                }
                continue;
            }
            let held = matches!(event, Change::Fired | Change::Escalated) && self.hold.get().is_some_and(|h| h(&alert));
            let ev = AlertEvent { event, alert };
            let mut queued = None;
            if !held {
                // One change of one alert: what a webhook receiver deduplicates on.
                let key = format!("alert-{}-{}-{}", ev.alert.id, serde_json::to_value(event).expect("change serializes").as_str().unwrap_or_default(), ev.alert.updated_ts_ms);
                for (i, hook) in self.webhooks.iter().enumerate() {
                    if hook.min_severity.is_none_or(|m| ev.alert.severity >= m) {
                        match self.outbox.queue(i, key.clone(), serde_json::to_string(&ev).expect("alert serializes")) {
                            Ok(k) => queued = Some(k),
                            Err(e) => tracing::error!(url = %hook.url, "cannot queue webhook delivery: {e}"),
                        }
                    }
                }
            }
            let alert = &ev.alert;
            if let Err(e) = self.store.save_alert(alert) {
                tracing::error!(alert = alert.id, "cannot persist alert: {e}");
            }
            if let Some(replicate) = self.replicate.get() {
                replicate(alert, gateway.as_deref());
            }
            if held {
                tracing::info!(alert = alert.id, rule = %alert.rule, sensor = %alert.sensor, "alert {event:?} held by a silence: stored, not announced");
                continue;
            }
            if let Some(k) = queued {
                self.outbox.release(k);
            }
            tracing::info!(alert = alert.id, rule = %alert.rule, sensor = %alert.sensor, state = alert.state.as_str(), "alert {event:?}");
            let _ = self.feed.send(FeedEvent::Alert(ev));
        }
    }

    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Input>, tick: Duration, beat: Arc<Heartbeat>, mut shutdown: watch::Receiver<bool>) {
        let _alive = beat.alive();
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = self.clock.now_ms();
            let changes = tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Readings { gateway, readings }) => {
                        let changes = self.engine.lock().unwrap().on_readings(&gateway, &readings, now);
                        self.evaluated.fetch_add(readings.len() as u64, Relaxed);
                        changes
                    }
                    Some(Input::GatewayState { gateway, online }) => self.engine.lock().unwrap().on_gateway_state(&gateway, online, now),
                    Some(Input::GatewayHeard { gateway }) => self.engine.lock().unwrap().on_gateway_heard(&gateway, now),
                    Some(Input::GatewayClock { gateway, offset_ms }) => self.engine.lock().unwrap().on_gateway_clock(&gateway, offset_ms, now),
                    None => return,
                },
                _ = ticker.tick() => self.engine.lock().unwrap().tick(now),
                _ = shutdown.changed() => return,
            };
            self.apply(changes);
            beat.progress();
            beat.pending(!rx.is_empty());
        }
    }

    pub fn rules(&self) -> Vec<Rule> {
        self.engine.lock().unwrap().rules().to_vec()
    }

    pub fn add_rule(&self, rule: Rule) -> Result<(), AlertError> {
        self.engine.lock().unwrap().add_rule(rule.clone())?;
        Ok(self.store.save_rule(&rule)?)
    }

    pub fn delete_rule(&self, id: &str) -> Result<(), AlertError> {
        let changes = self.engine.lock().unwrap().remove_rule(id, self.clock.now_ms()).ok_or_else(|| AlertError::NoRule(id.to_string()))?;
        self.apply(changes);
        Ok(self.store.delete_rule(id)?)
    }

    /// Alerts, newest first, filtered. With the log shared by partition, the
    /// city's: this collector's, and the open alerts of the partitions other
    /// collectors hold, as the cluster keeps them (an open copy here of one
    /// whose partition moved on is theirs to show).
    pub fn alerts(&self, keep: impl Fn(&Alert) -> bool) -> Vec<Alert> {
        let engine = self.engine.lock().unwrap();
        if self.replicate.get().is_none() {
            return engine.alerts().filter(|a| keep(a)).cloned().collect();
        }
        let mut out: Vec<Alert> = engine.alerts().filter(|a| (!a.is_open() || engine.answers_for_place(engine.gateway_of_alert(a))) && keep(a)).cloned().collect();
        let shown: HashSet<u64> = out.iter().map(|a| a.id).collect();
        out.extend(self.elsewhere.lock().unwrap().values().filter(|a| a.is_open() && !shown.contains(&a.id) && keep(a)).cloned());
        out.sort_by(|a, b| b.started_ts_ms.cmp(&a.started_ts_ms).then(b.id.cmp(&a.id)));
        out
    }

    /// An open alert another collector holds: its handling goes to that
    /// collector (through `share`), which applies and announces it; what is
    /// returned is the alert as it will be.
    fn handled_by_holder(&self, id: u64, action: Handling, by: Option<String>, note: Option<String>) -> Option<Alert> {
        let mut a = self.elsewhere.lock().unwrap().values().find(|a| a.id == id && a.is_open())?.clone();
        let share = self.share.get()?;
        let now = self.clock.now_ms();
        match action {
            Handling::Acknowledged => (a.state, a.acked_by) = (super::State::Acknowledged, by.clone()),
            Handling::Resolved => (a.state, a.resolved_by, a.resolved_ts_ms) = (super::State::Resolved, by.clone(), Some(now)),
        }
        if note.is_some() {
            a.note = note.clone();
        }
        a.updated_ts_ms = now;
        share(Handled { action, rule: a.rule.clone(), sensor: a.sensor.clone(), metric: a.metric.clone(), reading_ts_ms: a.reading_ts_ms, by, note, at_ms: now });
        Some(a)
    }

    pub fn ack(&self, id: u64, by: String, note: Option<String>) -> Result<Alert, AlertError> {
        let change = match self.engine.lock().unwrap().ack(id, by.clone(), note.clone(), self.clock.now_ms()) {
            Err(AlertError::NotFound(_)) => return self.handled_by_holder(id, Handling::Acknowledged, Some(by), note).ok_or(AlertError::NotFound(id)),
            other => other?,
        };
        let alert = change.1.clone();
        self.apply(vec![change]);
        self.shared(Handling::Acknowledged, &alert);
        Ok(alert)
    }

    pub fn resolve(&self, id: u64, by: Option<String>, note: Option<String>) -> Result<Alert, AlertError> {
        let change = match self.engine.lock().unwrap().resolve(id, by.clone(), note.clone(), self.clock.now_ms()) {
            Err(AlertError::NotFound(_)) => {
                return self.handled_by_holder(id, Handling::Resolved, Some(by.unwrap_or_else(|| "operator".into())), note).ok_or(AlertError::NotFound(id))
            }
            other => other?,
        };
        let alert = change.1.clone();
        self.apply(vec![change]);
        self.shared(Handling::Resolved, &alert);
        Ok(alert)
    }

    pub fn alert(&self, id: u64) -> Option<Alert> {
        self.engine.lock().unwrap().alert(id).cloned()
    }
}

/// What a change of an alert kept on the cluster announces: none for a
/// write that changed nothing a stream shows (a takeover rewrites it as it was).
fn news_of(before: Option<Alert>, after: Option<Alert>, now_ms: i64) -> Option<AlertEvent> {
    let (event, alert) = match (before, after) {
        (None, Some(a)) => (if a.state == crate::alert::State::Acknowledged { Change::Acknowledged } else { Change::Fired }, a),
        (Some(b), Some(a)) if a.state != b.state && a.state == crate::alert::State::Acknowledged => (Change::Acknowledged, a),
        (Some(b), Some(a)) if a.escalated && !b.escalated => (Change::Escalated, a),
        (Some(mut b), None) => {
            b.state = crate::alert::State::Resolved;
            b.resolved_ts_ms = Some(now_ms);
            b.updated_ts_ms = now_ms;
            (Change::Resolved, b)
        }
        _ => return None,
    };
    Some(AlertEvent { event, alert })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use shared::{Quality, Reading};

    use super::*;
    use crate::feed::webhook::Outbox;
    use crate::rules::store::SledAlertStore;
    use crate::rules::State;

    fn collector(dir: &std::path::Path) -> Alerting {
        let side = SledAlertStore::open(dir).unwrap();
        let outbox = Arc::new(Outbox::open(side.db()).unwrap());
        let rule: Rule = serde_json::from_str(r#"{"id":"hot","kind":"threshold","metric":"t","op":">","value":30.0,"severity":"warning"}"#).unwrap();
        let engine = Engine::new(vec![rule], HashMap::new(), vec![], 0);
        Alerting::new(engine, Arc::new(side), crate::messages::bus(), (vec![], outbox), shared::clock::system())
    }

    fn reading(ts: i64, value: f64) -> Reading {
        Reading { seq: shared::Seq(0), sensor: "s1".into(), metric: "t".into(), ts_ms: ts, value, quality: Quality::Good }
    }

    fn fire(a: &Alerting, ts: i64) {
        let changes = a.engine.lock().unwrap().on_readings("gw", &[reading(ts, 35.0)], ts);
        a.apply(changes);
    }

    #[test]
    fn a_handling_made_on_one_collector_applies_to_the_same_alert_on_another_once_it_has_fired_there() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (here, there) = (collector(d1.path()), collector(d2.path()));
        let told = Arc::new(Mutex::new(Vec::new()));
        let t = told.clone();
        here.set_share(Arc::new(move |h| t.lock().unwrap().push(h)));
        fire(&here, 1_000);
        let id = here.alerts(|_| true)[0].id;
        here.ack(id, "duty officer Li".into(), Some("crew sent".into())).unwrap();
        let h = told.lock().unwrap().pop().expect("the acknowledgement is shared");
        assert_eq!((h.action, h.reading_ts_ms, h.by.as_deref()), (Handling::Acknowledged, Some(1_000), Some("duty officer Li")));

        // Not fired there yet (behind in the log): nothing to apply, ask again later.
        assert_eq!(there.handled_elsewhere(&h), None);
        // Fired by another reading than the one acknowledged: not the same alert.
        let d3 = tempfile::tempdir().unwrap();
        let other = collector(d3.path());
        fire(&other, 2_000);
        assert_eq!(other.handled_elsewhere(&h), None);
        fire(&there, 1_000);
        assert_eq!(there.handled_elsewhere(&h), Some(true));
        let a = there.alerts(|a| a.is_open()).pop().unwrap();
        assert_eq!((a.state, a.acked_by.as_deref(), a.note.as_deref()), (State::Acknowledged, Some("duty officer Li"), Some("crew sent")));
        // Told again (a replay): nothing changes.
        assert_eq!(there.handled_elsewhere(&h), Some(false));
        // A resolution follows the same way.
        here.resolve(id, Some("duty officer Li".into()), None).unwrap();
        let r = told.lock().unwrap().pop().unwrap();
        assert_eq!(there.handled_elsewhere(&r), Some(true));
        assert!(there.alerts(|a| a.is_open()).is_empty());
    }

    #[test]
    fn another_collectors_alert_changes_reach_the_live_stream_and_its_own_do_not_twice() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (holder, other) = (collector(d1.path()), collector(d2.path()));
        let mut stream = other.feed.subscribe();
        let mut own_stream = holder.feed.subscribe();
        fire(&holder, 1_000);
        let fired = holder.alerts(|_| true)[0].clone();
        let heard = |rx: &mut tokio::sync::broadcast::Receiver<FeedEvent>| {
            let mut out = Vec::new();
            while let Ok(ev) = rx.try_recv() {
                match ev {
                    FeedEvent::AlertElsewhere(e) => out.push((e.event, e.alert.state, e.alert.id)),
                    FeedEvent::Alert(e) => out.push((e.event, e.alert.state, u64::MAX)),
                    _ => {}
                }
            }
            out
        };
        // The bucket's writes, as both collectors' watches hear them.
        for a in [&holder, &other] {
            a.heard_elsewhere("0.k", Some(fired.clone()));
        }
        assert_eq!(heard(&mut stream), [(Change::Fired, State::Firing, fired.id)]);
        assert_eq!(heard(&mut own_stream), [(Change::Fired, State::Firing, u64::MAX)], "its own change once, when made");
        other.heard_elsewhere("0.k", Some(fired.clone()));
        assert!(heard(&mut stream).is_empty(), "rewritten as it was (a takeover): nothing new");
        let mut acked = fired.clone();
        (acked.state, acked.acked_by) = (State::Acknowledged, Some("duty officer Li".into()));
        other.heard_elsewhere("0.k", Some(acked));
        other.heard_elsewhere("0.k", None);
        assert_eq!(heard(&mut stream), [(Change::Acknowledged, State::Acknowledged, fired.id), (Change::Resolved, State::Resolved, fired.id)]);
    }
}
