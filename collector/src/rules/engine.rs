//! The alert engine: rules evaluated against readings as they are stored and
//! against the clock (stale sensors, silent gateways, escalation). It is pure
//! state: time comes in as an argument, so tests need no sleeping, and what
//! changed comes out as a list for the feeds and the alert store. The
//! per-gateway kinds (`gateway_offline`, `clock_skew`) are in `gateways`.

mod gateways;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use hashbrown::Equivalent;
use shared::{GatewayId, Metric, Reading, SensorId};

use super::rule::{glob, Kind, Rule};
use super::AlertError;
use crate::alert::{Alert, Change, State};
use crate::series_ref::SeriesRef;

/// What the catalogue says about a sensor, for selectors.
#[derive(Debug, Clone, Default)]
pub struct SensorInfo {
    pub kind: Option<String>,
    pub district: Option<String>,
    pub gateway: Option<GatewayId>,
}

type Key = (String, String, String);

/// A `Key` borrowed from a rule and a reading: the per-reading lookups
/// allocate nothing (hashed as the tuple of `String`s is, field by field).
#[derive(Hash)]
struct KeyRef<'a>(&'a str, &'a str, &'a str);

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, k: &Key) -> bool {
        self.0 == k.0 && self.1 == k.1 && self.2 == k.2
    }
}

impl KeyRef<'_> {
    fn owned(&self) -> Key {
        (self.0.to_string(), self.1.to_string(), self.2.to_string())
    }
}

#[derive(Debug, Default)]
struct Track {
    /// Threshold: when the condition started holding without an alert yet.
    pending_since: Option<i64>,
    /// Rate: the previous reading.
    last: Option<(i64, f64)>,
}

/// What the engine knows of one series (sensor, metric): one lookup a reading.
#[derive(Debug, Default, Clone, Copy)]
struct SeriesSeen {
    /// Last arrival; `None` for a series known only from an alert's reading.
    arrived_ms: Option<i64>,
    /// The newest reading time evaluated, from the alerts' `reading_ts_ms`
    /// after a restart. An older reading is one evaluated before (a resend
    /// after a crash lost it from the store) and is passed over by
    /// `threshold` and `rate`, so it cannot clear or fire an alert a second
    /// time. Per series, not per rule: every rule of a series sees its
    /// readings in the same order.
    newest_ts_ms: Option<i64>,
    /// Keys of the series (any rule) with an open alert or a track. While
    /// none has, a reading under every threshold needs neither looked up:
    /// with 100 quiet rules, those two lookups of three strings each, ten
    /// rules a reading, were most of the engine's time.
    engaged: u32,
}

#[derive(Debug, Default, Clone)]
struct GatewaySeen {
    last_ms: i64,
    offline_since: Option<i64>,
}

/// The ids one collector numbers its alerts from (`Engine::with_id_range`).
pub const ID_RANGE: u64 = 1 << 36;

/// 2 minutes, as `[ingest.clock] max_offset` by default.
const DEFAULT_MAX_OFFSET_MS: i64 = 120_000;

/// The gateways and sensors an engine answers for where no reading tells it
/// (stale sensors, offline gateways, escalation, gateway state): in a cluster
/// whose collectors share the log by partition, those of the partitions this
/// collector holds (`crate::cluster::assignment`); without one, all. Readings
/// need no asking: only the holder is given them.
pub trait Scope: Send + Sync {
    fn gateway(&self, id: &str) -> bool;
    /// A sensor whose gateway is not known here (never heard, not in the catalogue).
    fn unplaced(&self) -> bool;
    /// When what is about `gateway` (`None`: a sensor whose gateway is not
    /// known) was last given to this engine (ms since the epoch): another
    /// collector heard its sensors until then, so their silence counts from
    /// no earlier.
    fn given_ms(&self, gateway: Option<&str>) -> i64;
}

#[derive(Default)]
pub struct Engine {
    rules: Vec<Rule>,
    /// Rules that look at readings, by metric (threshold, rate, and stale with
    /// a metric) plus those for any metric, so a reading meets only the rules
    /// that can care about it.
    by_metric: hashbrown::HashMap<Metric, Vec<usize>>,
    any_metric: Vec<usize>,
    sensors: HashMap<SensorId, SensorInfo>,
    /// Last arrival per sensor, and the gateway it came from.
    seen: hashbrown::HashMap<SensorId, (i64, GatewayId)>,
    /// Per (sensor, metric): its last arrival and newest reading evaluated.
    /// One map, so a reading costs one lookup of its series (two maps of a
    /// million series each were 10% of the collector's time at 300k
    /// readings/s from 1,000 gateways, mostly waiting on memory).
    series: hashbrown::HashMap<(SensorId, Metric), SeriesSeen>,
    gateways: HashMap<GatewayId, GatewaySeen>,
    tracks: hashbrown::HashMap<Key, Track>,
    open: hashbrown::HashMap<Key, u64>,
    alerts: BTreeMap<u64, Alert>,
    next_id: u64,
    /// When the engine started: a catalogued sensor never heard from is stale
    /// once its rule's silence has passed since then.
    started_ms: i64,
    /// The offset a `clock_skew` rule without a `value` allows: `[ingest.clock] max_offset`.
    max_offset_ms: i64,
    scope: Option<std::sync::Arc<dyn Scope>>,
}

pub type Changes = Vec<(Change, Alert)>;

impl Engine {
    pub fn new(rules: Vec<Rule>, sensors: HashMap<SensorId, SensorInfo>, alerts: Vec<Alert>, now: i64) -> Engine {
        let mut e = Engine { rules, sensors, started_ms: now, next_id: 1, max_offset_ms: DEFAULT_MAX_OFFSET_MS, ..Default::default() };
        e.reindex();
        for a in alerts {
            e.next_id = e.next_id.max(a.id + 1);
            if let Some(t) = a.reading_ts_ms {
                let newest = &mut e.series.entry((a.sensor.clone().into(), a.metric.clone().into())).or_default().newest_ts_ms;
                *newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            if a.is_open() {
                e.opened(a.key(), a.id);
            }
            e.alerts.insert(a.id, a);
        }
        e
    }

    /// The same engine, numbering new alerts from `base` (of a range of
    /// 2^36 ids) on, or after the highest id of that range it has: in a
    /// cluster whose collectors share the log by partition, each collector
    /// numbers from its own range, so an alert keeps its id on whichever
    /// collector holds it and every collector can list every open alert.
    pub fn with_id_range(mut self, base: u64) -> Engine {
        let end = base.saturating_add(ID_RANGE);
        self.next_id = self.alerts.keys().filter(|id| (base..end).contains(*id)).max().map_or(base.max(1), |id| id + 1);
        self
    }

    /// The same engine, with `clock_skew` rules without a `value` allowing `max_offset`.
    pub fn with_max_offset(mut self, max_offset: std::time::Duration) -> Engine {
        self.max_offset_ms = max_offset.as_millis().min(i64::MAX as u128) as i64;
        self
    }

    /// From now on, time-driven rules answer only for what `scope` says.
    pub fn set_scope(&mut self, scope: std::sync::Arc<dyn Scope>) {
        self.scope = Some(scope);
    }

    /// Whether this engine answers for what is about `gateway` (`None`: a
    /// sensor whose gateway is not known here).
    pub fn answers_for_place(&self, gateway: Option<&str>) -> bool {
        self.scope.as_ref().is_none_or(|s| gateway.map_or_else(|| s.unplaced(), |g| s.gateway(g)))
    }

    fn answers_for_gateway(&self, id: &str) -> bool {
        self.answers_for_place(Some(id))
    }

    /// The gateway a sensor's readings last came from here, else the one the catalogue names.
    fn gateway_of_sensor(&self, id: &str) -> Option<&str> {
        self.seen.get(id).map(|s| s.1.as_str()).or_else(|| self.sensors.get(id)?.gateway.as_deref())
    }

    fn answers_for_sensor(&self, id: &str) -> bool {
        self.answers_for_place(self.gateway_of_sensor(id))
    }

    /// An alert's subject: a gateway for the kinds judged per gateway, else a sensor.
    fn answers_for(&self, rule: &Rule, subject: &str) -> bool {
        if rule.kind.is_gateway() {
            self.answers_for_gateway(subject)
        } else {
            self.answers_for_sensor(subject)
        }
    }

    /// The gateway `a` is about: the one it names (the kinds judged per
    /// gateway; for a rule deleted since, an alert without a metric), or its
    /// sensor's; `None` for a sensor whose gateway is not known here.
    pub fn gateway_of_alert<'a>(&'a self, a: &'a Alert) -> Option<&'a str> {
        let names_gateway = self.rules.iter().find(|r| r.id == a.rule).map_or(a.metric.is_empty(), |r| r.kind.is_gateway());
        if names_gateway {
            Some(&a.sensor)
        } else {
            self.gateway_of_sensor(&a.sensor)
        }
    }

    /// Takes over the alerts another collector had open (`theirs`) for the
    /// subjects `moved` selects (by their gateway, as `gateway_of_alert`
    /// gives it), now this engine's to judge: each goes on
    /// here with its id (a new one should one of ours have it), key, start,
    /// state and firing reading, so the crossing it stands for does not fire again and its
    /// clearing resolves it; an alert open here that `theirs` lacks was
    /// closed there meanwhile, and is closed here. Returns the alerts
    /// changed, to be stored, not announced (the other collector did).
    pub fn take_over(&mut self, theirs: Vec<Alert>, moved: &dyn Fn(Option<&str>) -> bool, now: i64) -> Vec<Alert> {
        let mut changed = Vec::new();
        let keys: HashSet<Key> = theirs.iter().map(Alert::key).collect();
        let gone: Vec<Key> =
            self.open.iter().filter(|(k, id)| !keys.contains(*k) && self.alerts.get(*id).is_some_and(|a| moved(self.gateway_of_alert(a)))).map(|(k, _)| k.clone()).collect();
        for k in gone {
            changed.extend(self.close(&k, now, None).map(|(_, a)| a));
        }
        for mut a in theirs.into_iter().filter(Alert::is_open) {
            if let Some(t) = a.reading_ts_ms {
                let newest = &mut self.series_seen(&a.sensor, &a.metric).newest_ts_ms;
                *newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            match self.open.get(&a.key()).copied() {
                Some(id) => {
                    let ours = self.alerts.get_mut(&id).expect("open alerts exist");
                    if ours.updated_ts_ms < a.updated_ts_ms {
                        a.id = id;
                        *ours = a.clone();
                        changed.push(a);
                    }
                }
                None => {
                    // Its id goes with it, unless one of ours has it (ids
                    // numbered before collectors had ranges of their own).
                    if self.alerts.contains_key(&a.id) {
                        a.id = self.next_id;
                        self.next_id += 1;
                    }
                    self.opened(a.key(), a.id);
                    self.alerts.insert(a.id, a.clone());
                    changed.push(a);
                }
            }
        }
        changed
    }

    fn reindex(&mut self) {
        self.by_metric.clear();
        self.any_metric.clear();
        for (i, r) in self.rules.iter().enumerate() {
            match (&r.kind, &r.metric) {
                (k, _) if k.is_gateway() => {}
                (_, Some(m)) => self.by_metric.entry(m.into()).or_default().push(i),
                (_, None) => self.any_metric.push(i),
            }
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn add_rule(&mut self, rule: Rule) -> Result<(), AlertError> {
        if self.rules.iter().any(|r| r.id == rule.id) {
            return Err(AlertError::RuleExists(rule.id));
        }
        self.rules.push(rule);
        self.reindex();
        Ok(())
    }

    /// Removes a rule; its open alerts are resolved.
    pub fn remove_rule(&mut self, id: &str, now: i64) -> Option<Changes> {
        let pos = self.rules.iter().position(|r| r.id == id)?;
        self.rules.remove(pos);
        self.reindex();
        let tracked: Vec<Key> = self.tracks.keys().filter(|k| k.0 == id).cloned().collect();
        for k in tracked {
            self.untrack(&k);
        }
        let keys: Vec<Key> = self.open.keys().filter(|k| k.0 == id).cloned().collect();
        Some(keys.into_iter().filter_map(|k| self.close(&k, now, Some("rule deleted".into()))).collect())
    }

    /// The open alert of (rule, sensor, metric), if any.
    pub fn open_alert(&self, rule: &str, sensor: &str, metric: &str) -> Option<&Alert> {
        let id = self.open.get(&(rule.to_string(), sensor.to_string(), metric.to_string()))?;
        self.alerts.get(id)
    }

    pub fn alert(&self, id: u64) -> Option<&Alert> {
        self.alerts.get(&id)
    }

    /// Alerts, newest first.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().rev()
    }

    fn selected(rule: &Rule, sensor: &str, info: Option<&SensorInfo>) -> bool {
        let s = &rule.select;
        s.sensor.as_deref().is_none_or(|p| glob(p, sensor))
            && s.kind.as_deref().is_none_or(|k| info.and_then(|i| i.kind.as_deref()) == Some(k))
            && s.district.as_deref().is_none_or(|d| info.and_then(|i| i.district.as_deref()) == Some(d))
    }

    fn fire(&mut self, rule: &Rule, sensor: &str, metric: &str, value: Option<f64>, now: i64) -> (Change, Alert) {
        let id = self.next_id;
        self.next_id += 1;
        let a = Alert {
            id,
            rule: rule.id.clone(),
            sensor: sensor.into(),
            metric: metric.into(),
            severity: rule.severity,
            state: State::Firing,
            value,
            threshold: rule.value,
            started_ts_ms: now,
            updated_ts_ms: now,
            acked_by: None,
            note: None,
            escalated: false,
            resolved_ts_ms: None,
            resolved_by: None,
            reading_ts_ms: None,
        };
        self.opened(a.key(), id);
        self.alerts.insert(id, a.clone());
        (Change::Fired, a)
    }

    fn close<Q: Hash + Equivalent<Key> + ?Sized>(&mut self, key: &Q, now: i64, by: Option<String>) -> Option<(Change, Alert)> {
        let id = self.open.remove(key)?;
        let a = self.alerts.get_mut(&id)?;
        let (sensor, metric) = (a.sensor.clone(), a.metric.clone());
        self.engage(&sensor, &metric, false);
        let a = self.alerts.get_mut(&id)?;
        a.state = State::Resolved;
        a.updated_ts_ms = now;
        a.resolved_ts_ms = Some(now);
        a.resolved_by = by;
        Some((Change::Resolved, a.clone()))
    }

    /// Records the reading a change was made on, in the alert as stored and announced.
    fn on_reading(&mut self, change: (Change, Alert), r: &Reading) -> (Change, Alert) {
        let (c, mut a) = change;
        a.reading_ts_ms = Some(r.ts_ms);
        if let Some(kept) = self.alerts.get_mut(&a.id) {
            kept.reading_ts_ms = Some(r.ts_ms);
        }
        (c, a)
    }

    /// Notes the arrival of `r` at `now`, and says how many of its series'
    /// keys are engaged; false for a reading not newer than the newest of
    /// its series. The newest moves on with every reading, not only those a
    /// threshold or rate rule takes: a series' rules all select by its
    /// sensor and metric, so they take all its readings or none (until a
    /// rule is added, which then passes over readings older than the
    /// series' newest, as it would a resend).
    fn arrived(&mut self, r: &Reading, now: i64) -> (bool, u32) {
        let seen = match self.series.get_mut(&SeriesRef(&r.sensor, &r.metric)) {
            Some(s) => s,
            None => self.series.entry((r.sensor.clone(), r.metric.clone())).or_default(),
        };
        seen.arrived_ms = Some(now);
        let fresh = match seen.newest_ts_ms {
            Some(t) if r.ts_ms <= t => false,
            _ => {
                seen.newest_ts_ms = Some(r.ts_ms);
                true
            }
        };
        (fresh, seen.engaged)
    }

    /// For alerts opening and closing, not for each reading (`arrived` looks up once).
    fn series_seen(&mut self, sensor: &str, metric: &str) -> &mut SeriesSeen {
        if !self.series.contains_key(&SeriesRef(sensor, metric)) {
            self.series.insert((sensor.into(), metric.into()), SeriesSeen::default());
        }
        self.series.get_mut(&SeriesRef(sensor, metric)).expect("inserted above")
    }

    /// One more (or one fewer) key of the series is open or tracked.
    fn engage(&mut self, sensor: &str, metric: &str, more: bool) {
        let seen = self.series_seen(sensor, metric);
        if more {
            seen.engaged += 1;
        } else {
            debug_assert!(seen.engaged > 0, "{sensor}/{metric}: a key let go that was never engaged");
            seen.engaged = seen.engaged.saturating_sub(1);
        }
    }

    fn opened(&mut self, key: Key, id: u64) {
        let (sensor, metric) = (key.1.clone(), key.2.clone());
        if self.open.insert(key, id).is_none() {
            self.engage(&sensor, &metric, true);
        }
    }

    fn untrack<Q: Hash + Equivalent<Key> + ?Sized>(&mut self, key: &Q) {
        if let Some((k, _)) = self.tracks.remove_entry(key) {
            self.engage(&k.1, &k.2, false);
        }
    }

    fn touch<Q: Hash + Equivalent<Key> + ?Sized>(&mut self, key: &Q, value: f64, now: i64) {
        if let Some(a) = self.open.get(key).and_then(|id| self.alerts.get_mut(id)) {
            a.value = Some(value);
            a.updated_ts_ms = now;
        }
    }

    /// Evaluates readings just stored for `gateway`.
    pub fn on_readings(&mut self, gateway: &str, readings: &[Reading], now: i64) -> Changes {
        let mut out = Vec::new();
        self.gateway_heard(gateway, now, &mut out);
        // Moved out for the loop (the evaluators need `&mut self`), put back after.
        let rules = std::mem::take(&mut self.rules);
        let sensors = std::mem::take(&mut self.sensors);
        let by_metric = std::mem::take(&mut self.by_metric);
        let any_metric = std::mem::take(&mut self.any_metric);
        for r in readings {
            if let Some((t, g)) = self.seen.get_mut(&r.sensor) {
                *t = now;
                if g.as_str() != gateway {
                    *g = gateway.into();
                }
            } else {
                self.seen.insert(r.sensor.clone(), (now, gateway.into()));
            }
            let (fresh, engaged) = self.arrived(r, now);
            let info = sensors.get(&r.sensor);
            let candidates = by_metric.get(&r.metric).map(Vec::as_slice).unwrap_or_default().iter().chain(any_metric.iter());
            for &i in candidates {
                let rule = &rules[i];
                if !Self::selected(rule, &r.sensor, info) {
                    continue;
                }
                let key = KeyRef(&rule.id, &r.sensor, &r.metric);
                match rule.kind {
                    Kind::Threshold if rule.metric.as_deref() == Some(r.metric.as_str()) && fresh => self.threshold(rule, key, r, engaged, now, &mut out),
                    Kind::Rate if rule.metric.as_deref() == Some(r.metric.as_str()) && fresh => self.rate(rule, key, r, now, &mut out),
                    Kind::Stale if rule.metric.as_deref().is_none_or(|m| m == r.metric) => {
                        out.extend(self.close(&KeyRef(&rule.id, &r.sensor, rule.metric.as_deref().unwrap_or_default()), now, None));
                    }
                    _ => {}
                }
            }
        }
        self.rules = rules;
        self.sensors = sensors;
        self.by_metric = by_metric;
        self.any_metric = any_metric;
        out
    }

    /// The track of `key`, made when first needed: a reading that is not
    /// past its limit leaves none behind.
    fn track(&mut self, key: &KeyRef) -> &mut Track {
        if !self.tracks.contains_key(key) {
            self.tracks.insert(key.owned(), Track::default());
            self.engage(key.1, key.2, true);
        }
        self.tracks.get_mut(key).expect("inserted above")
    }

    /// `engaged`: of the series' keys, how many are open or tracked.
    fn threshold(&mut self, rule: &Rule, key: KeyRef, r: &Reading, engaged: u32, now: i64, out: &mut Changes) {
        let (op, limit) = (rule.op.expect("validated"), rule.value.expect("validated"));
        let firing = op.holds(r.value, limit);
        if !firing && engaged == 0 {
            // Neither open nor pending: nothing to clear.
            return;
        }
        if self.open.contains_key(&key) {
            // Hysteresis: once open, the value must get back to `clear` or past it.
            let cleared = match rule.clear {
                Some(c) => !op.holds(r.value, c),
                None => !firing,
            };
            if cleared {
                if let Some(c) = self.close(&key, now, None) {
                    out.push(self.on_reading(c, r));
                }
            } else {
                self.touch(&key, r.value, now);
            }
            return;
        }
        if !firing {
            if let Some(track) = self.tracks.get_mut(&key) {
                track.pending_since = None;
            }
            return;
        }
        let track = self.track(&key);
        let since = *track.pending_since.get_or_insert(now);
        let hold = rule.for_duration().map(|d| d.as_millis() as i64).unwrap_or(0);
        if now - since >= hold {
            track.pending_since = None;
            let fired = self.fire(rule, key.1, key.2, Some(r.value), now);
            out.push(self.on_reading(fired, r));
        }
    }

    fn rate(&mut self, rule: &Rule, key: KeyRef, r: &Reading, now: i64, out: &mut Changes) {
        let limit = rule.value.expect("validated");
        let track = self.track(&key);
        let prev = track.last.replace((r.ts_ms, r.value));
        let Some((t0, v0)) = prev else { return };
        if r.ts_ms <= t0 {
            return;
        }
        let per_min = (r.value - v0) / ((r.ts_ms - t0) as f64 / 60_000.0);
        let beyond = per_min.abs() > limit;
        match (beyond, self.open.contains_key(&key)) {
            (true, false) => {
                let fired = self.fire(rule, key.1, key.2, Some(per_min), now);
                out.push(self.on_reading(fired, r));
            }
            (true, true) => self.touch(&key, per_min, now),
            (false, true) => {
                if let Some(c) = self.close(&key, now, None) {
                    out.push(self.on_reading(c, r));
                }
            }
            (false, false) => {}
        }
    }

    /// Time-driven rules: stale sensors, silent or offline gateways, escalation.
    pub fn tick(&mut self, now: i64) -> Changes {
        let mut out = Vec::new();
        let rules = self.rules.clone();
        for rule in &rules {
            match rule.kind {
                Kind::Stale => self.stale(rule, now, &mut out),
                Kind::GatewayOffline => self.offline(rule, now, &mut out),
                _ => {}
            }
        }
        for rule in &rules {
            let Some(after) = rule.escalate_duration() else { continue };
            let ids: Vec<u64> = self.open.iter().filter(|(k, _)| k.0 == rule.id && self.answers_for(rule, &k.1)).map(|(_, id)| *id).collect();
            for id in ids {
                let a = self.alerts.get_mut(&id).expect("open alerts exist");
                if a.state == State::Firing && !a.escalated && now - a.started_ts_ms >= after.as_millis() as i64 {
                    a.escalated = true;
                    a.updated_ts_ms = now;
                    out.push((Change::Escalated, a.clone()));
                }
            }
        }
        out
    }

    fn stale(&mut self, rule: &Rule, now: i64, out: &mut Changes) {
        let silence = rule.for_duration().expect("validated").as_millis() as i64;
        let metric = rule.metric.clone().unwrap_or_default();
        let metric_id = Metric::from(metric.as_str());
        let mut known: Vec<SensorId> = self.sensors.keys().chain(self.seen.keys()).cloned().collect();
        known.sort();
        known.dedup();
        for sensor in known {
            if !Self::selected(rule, &sensor, self.sensors.get(&sensor)) || !self.answers_for_sensor(&sensor) {
                continue;
            }
            let last = if metric.is_empty() { self.seen.get(&sensor).map(|s| s.0) } else { self.series.get(&SeriesRef(&sensor, &metric_id)).and_then(|s| s.arrived_ms) };
            let given = self.scope.as_ref().map_or(i64::MIN, |s| s.given_ms(self.gateway_of_sensor(&sensor)));
            let since = last.unwrap_or(self.started_ms).max(given);
            let key: Key = (rule.id.clone(), sensor.to_string(), metric.clone());
            if now - since >= silence && !self.open.contains_key(&key) {
                out.push(self.fire(rule, &sensor, &metric, None, now));
            }
        }
    }

    pub fn ack(&mut self, id: u64, by: String, note: Option<String>, now: i64) -> Result<(Change, Alert), AlertError> {
        let a = self.alerts.get_mut(&id).ok_or(AlertError::NotFound(id))?;
        match a.state {
            State::Resolved => Err(AlertError::AlreadyResolved(id)),
            _ => {
                a.state = State::Acknowledged;
                a.acked_by = Some(by);
                a.note = note;
                a.updated_ts_ms = now;
                Ok((Change::Acknowledged, a.clone()))
            }
        }
    }

    /// Resolves by hand. Should the condition still hold, the next evaluation
    /// opens a new alert: resolving does not silence a live problem.
    pub fn resolve(&mut self, id: u64, by: Option<String>, note: Option<String>, now: i64) -> Result<(Change, Alert), AlertError> {
        let a = self.alerts.get(&id).ok_or(AlertError::NotFound(id))?;
        if a.state == State::Resolved {
            return Err(AlertError::AlreadyResolved(id));
        }
        let key = a.key();
        self.untrack(&key);
        let (c, mut a) = self.close(&key, now, Some(by.unwrap_or_else(|| "operator".into()))).ok_or(AlertError::NotOpen(id))?;
        if note.is_some() {
            a.note = note;
            self.alerts.insert(id, a.clone());
        }
        Ok((c, a))
    }
}
