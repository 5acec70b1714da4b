//! The alerting task: feeds the engine with stored readings, gateway news and
//! the clock, persists every change before announcing it, and serves the API's
//! rule and alert operations.

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

pub struct Alerting {
    engine: Mutex<Engine>,
    hold: std::sync::OnceLock<Hold>,
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
        Alerting { engine: Mutex::new(engine), hold: std::sync::OnceLock::new(), store, feed, webhooks, outbox, clock, evaluated: AtomicU64::new(0) }
    }

    /// Silences: a fired or escalated alert `hold` says yes to is stored but not announced.
    pub fn set_hold(&self, hold: Hold) {
        let _ = self.hold.set(hold);
    }

    /// Persists, then announces: an alert on a feed is one that survives a
    /// restart. Its webhook deliveries are written first and made durable by
    /// the same sync as the alert: a crash keeps both or neither (with a sync
    /// each, one between them left an alert whose change no webhook got).
    fn apply(&self, changes: Changes) {
        for (event, alert) in changes {
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

    /// Alerts, newest first, filtered.
    pub fn alerts(&self, keep: impl Fn(&Alert) -> bool) -> Vec<Alert> {
        self.engine.lock().unwrap().alerts().filter(|a| keep(a)).cloned().collect()
    }

    pub fn ack(&self, id: u64, by: String, note: Option<String>) -> Result<Alert, AlertError> {
        let change = self.engine.lock().unwrap().ack(id, by, note, self.clock.now_ms())?;
        let alert = change.1.clone();
        self.apply(vec![change]);
        Ok(alert)
    }

    pub fn resolve(&self, id: u64, by: Option<String>, note: Option<String>) -> Result<Alert, AlertError> {
        let change = self.engine.lock().unwrap().resolve(id, by, note, self.clock.now_ms())?;
        let alert = change.1.clone();
        self.apply(vec![change]);
        Ok(alert)
    }

    pub fn alert(&self, id: u64) -> Option<Alert> {
        self.engine.lock().unwrap().alert(id).cloned()
    }
}
