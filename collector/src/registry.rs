//! What the collector knows right now, for the API: latest values per sensor
//! and whether they are still coming (stale), each gateway's state, health
//! and whether its batches are being refused. It is a view fed by ingest and
//! the MQTT routing; the store remains the record. When collectors share the
//! batch log, what ingest tells it goes out (`share`) and what the others'
//! ingest told theirs comes in (`heard`), so each shows the whole city.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use shared::clock::SharedClock;

use serde::{Deserialize, Serialize};
use shared::wire::{DeviceHealth, Health, RefusedReload, Status};
use shared::{GatewayId, Metric, Reading, Sample, SensorId, Seq};

/// A sensor is stale after three of its usual intervals without a reading,
/// but never sooner than this (a 1 s sensor does not flicker on a busy link)…
pub const STALE_MIN_MS: i64 = 10_000;
/// …nor later than this, whatever its interval (and before one is known).
pub const STALE_MAX_MS: i64 = 60_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SensorSeen {
    pub gateway: Option<GatewayId>,
    pub last_seen_ms: Option<i64>,
    pub latest: BTreeMap<Metric, Sample>,
    /// Its usual time between deliveries (moving average of arrival gaps).
    pub interval_ms: Option<i64>,
}

impl SensorSeen {
    pub fn stale_after_ms(&self) -> i64 {
        self.interval_ms.map_or(STALE_MAX_MS, |i| i.saturating_mul(3).clamp(STALE_MIN_MS, STALE_MAX_MS))
    }

    /// Whether nothing arrived for longer than `stale_after_ms` (a sensor never heard from is stale).
    pub fn stale(&self, now_ms: i64) -> bool {
        self.last_seen_ms.is_none_or(|t| now_ms.saturating_sub(t) > self.stale_after_ms())
    }

    fn arrived(&mut self, now_ms: i64) {
        if let Some(prev) = self.last_seen_ms.filter(|p| now_ms > *p) {
            let gap = now_ms - prev;
            self.interval_ms = Some(self.interval_ms.map_or(gap, |i| (i * 7 + gap) / 8));
        }
        self.last_seen_ms = Some(self.last_seen_ms.unwrap_or(i64::MIN).max(now_ms));
    }
}

/// A gateway whose batches are being refused, since its last accepted one.
#[derive(Debug, Clone, Serialize)]
pub struct Refusing {
    /// The last refusal's reason (a `Rejection` label).
    pub reason: std::borrow::Cow<'static, str>,
    pub count: u64,
    pub since_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayView {
    pub id: String,
    pub status: &'static str,
    pub last_seen_ms: Option<i64>,
    pub readings_received: u64,
    pub duplicates: u64,
    pub rejected_batches: u64,
    pub acked_seq: Seq,
    /// The outbox epoch of its last accepted batch.
    pub epoch: u64,
    /// Set while its batches are refused; cleared by the next accepted one.
    pub refusing: Option<Refusing>,
    /// Ingest time minus the newest reading's time, at the last batch.
    pub lag_ms: Option<i64>,
    pub health: Option<Health>,
    /// Its devices that are failing, by `failing_now`, in the agent's order.
    pub failing: Vec<String>,
    /// Readings refused because it does not own their sensor (`ingest::ownership`).
    pub refused_readings: u64,
    pub last_refused: Option<RefusedSensor>,
    /// Receive time minus its clock at sending, at its last batch (None: not
    /// yet measured, or a version 1 batch).
    pub clock_offset_ms: Option<i64>,
    /// Whether that offset is beyond `[ingest.clock] max_offset`.
    pub clock_beyond_max: bool,
    /// Its readings moved onto the collector's clock (`ingest::clock`).
    pub clock_skewed: u64,
}

/// The last sensor a gateway sent readings of without owning it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusedSensor {
    pub sensor: SensorId,
    /// The gateway(s) that own it.
    pub owners: Vec<GatewayId>,
    pub at_ms: i64,
}

/// Whether a device is failing, from two consecutive health reports of its
/// agent: failing when its error count rose and its successful-poll count
/// did not (every poll since the last report failed); well again at the next
/// successful poll. A report in which neither moved (a poll slower than the
/// health interval, a timeout still running) keeps what the previous one
/// said. Without a comparable previous report (the first one heard, or an
/// agent restarted with fresh counters) only a device that has errors and has
/// never polled successfully counts as failing.
pub fn failing_now(before: Option<&DeviceHealth>, now: &DeviceHealth, was_failing: bool) -> bool {
    match before {
        Some(b) if now.polls >= b.polls && now.errors >= b.errors => {
            if now.polls > b.polls {
                false
            } else if now.errors > b.errors {
                true
            } else {
                was_failing
            }
        }
        _ => now.polls == 0 && now.errors > 0,
    }
}

/// What ingest told the registry about a gateway, as another collector's
/// registry hears it (`Registry::heard`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Every reading stored: the collectors' live streams carry them (`FeedEvent::Elsewhere`).
    Stored {
        gateway: String,
        epoch: u64,
        readings: Arc<Vec<Reading>>,
        received: u64,
        duplicates: u64,
        acked: Seq,
    },
    Rejected {
        gateway: String,
        why: String,
        at_ms: i64,
    },
    Refused {
        gateway: String,
        count: u64,
        last: RefusedSensor,
    },
    Clock {
        gateway: String,
        offset_ms: Option<(i64, bool)>,
        moved: u64,
    },
}

/// Where the changes ingest makes go, besides this registry.
pub type Outlet = Box<dyn Fn(Change) + Send + Sync>;

pub struct Registry {
    clock: SharedClock,
    outlet: OnceLock<Outlet>,
    sensors: RwLock<HashMap<SensorId, SensorSeen>>,
    gateways: RwLock<BTreeMap<String, GatewayView>>,
    /// Bumped when a (sensor, metric) is seen for the first time: views
    /// built from the set of series (the SensorThings model) rebuild on it.
    series_generation: AtomicU64,
}

impl Registry {
    pub fn new(clock: SharedClock) -> Registry {
        Registry { clock, outlet: OnceLock::new(), sensors: RwLock::default(), gateways: RwLock::default(), series_generation: AtomicU64::new(0) }
    }

    /// Sends every change ingest makes from now on to `outlet` too (once).
    pub fn share(&self, outlet: Outlet) {
        let _ = self.outlet.set(outlet);
    }

    fn tell(&self, change: impl FnOnce() -> Change) {
        if let Some(out) = self.outlet.get() {
            out(change());
        }
    }

    /// A change another collector's ingest made: applied as if made here,
    /// and not shared again.
    pub fn heard(&self, change: Change) {
        match change {
            Change::Stored { gateway, epoch, readings, received, duplicates, acked } => self.note_stored(&gateway, epoch, &readings, received, duplicates, acked),
            Change::Rejected { gateway, why, at_ms } => self.note_rejected(&gateway, std::borrow::Cow::Owned(why), at_ms),
            Change::Refused { gateway, count, last } => self.note_refused(&gateway, count, last),
            Change::Clock { gateway, offset_ms, moved } => self.note_clock(&gateway, offset_ms, moved),
        }
    }

    fn with_gateway<T>(&self, id: &str, f: impl FnOnce(&mut GatewayView) -> T) -> T {
        let mut gws = self.gateways.write().unwrap();
        let g = gws.entry(id.to_string()).or_insert_with(|| GatewayView { id: id.to_string(), status: "unknown", ..Default::default() });
        f(g)
    }

    /// Records readings just stored for `gateway`.
    pub fn stored(&self, gateway: &str, epoch: u64, readings: &Arc<Vec<Reading>>, received: u64, duplicates: u64, acked: Seq) {
        self.note_stored(gateway, epoch, readings, received, duplicates, acked);
        self.tell(|| Change::Stored { gateway: gateway.to_string(), epoch, readings: readings.clone(), received, duplicates, acked });
    }

    fn note_stored(&self, gateway: &str, epoch: u64, readings: &[Reading], received: u64, duplicates: u64, acked: Seq) {
        let now = self.clock.now_ms();
        {
            let mut sensors = self.sensors.write().unwrap();
            // Per reading: nothing allocated for a sensor and metric heard before.
            for r in readings {
                if !sensors.contains_key(&r.sensor) {
                    sensors.insert(r.sensor.clone(), Default::default());
                }
                let s = sensors.get_mut(&r.sensor).expect("inserted above");
                if s.gateway.as_deref() != Some(gateway) {
                    s.gateway = Some(gateway.into());
                }
                // Several metrics of one sensor arrive together: one arrival.
                if s.last_seen_ms != Some(now) {
                    s.arrived(now);
                }
                match s.latest.get_mut(&r.metric) {
                    Some(l) if l.ts_ms <= r.ts_ms => *l = r.sample(),
                    Some(_) => {}
                    None => {
                        s.latest.insert(r.metric.clone(), r.sample());
                        self.series_generation.fetch_add(1, Ordering::Release);
                    }
                }
            }
        }
        let newest = readings.iter().map(|r| r.ts_ms).max();
        self.with_gateway(gateway, |g| {
            g.last_seen_ms = Some(now);
            g.readings_received += received;
            g.duplicates += duplicates;
            g.acked_seq = acked;
            g.epoch = epoch;
            g.refusing = None;
            if let Some(t) = newest {
                g.lag_ms = Some(now - t);
            }
            if g.status != "offline" {
                g.status = "online";
            }
        });
    }

    /// How far readings have arrived: the oldest of the newest readings of
    /// the gateways heard within `active_ms` of `now` (None: none were). A
    /// gateway's batches come in order, so its minutes before that are whole.
    pub fn arrived_until(&self, now: i64, active_ms: i64) -> Option<i64> {
        let gws = self.gateways.read().unwrap();
        gws.values().filter_map(|g| Some((g.last_seen_ms?, g.lag_ms?))).filter(|(seen, _)| now - seen <= active_ms).map(|(seen, lag)| seen - lag).min()
    }

    /// Seeds latest values from the store at start-up.
    pub fn seed(&self, sensor: &SensorId, metric: &Metric, latest: Sample) {
        let mut sensors = self.sensors.write().unwrap();
        let s = sensors.entry(sensor.clone()).or_default();
        s.last_seen_ms = Some(s.last_seen_ms.unwrap_or(i64::MIN).max(latest.ts_ms));
        if s.latest.insert(metric.clone(), latest).is_none() {
            self.series_generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Seeds a gateway's ack from the store at start-up; of several epochs,
    /// the one heard last is shown.
    pub fn seed_gateway(&self, gateway: &str, epoch: u64, acked: Seq, heard_ms: i64) {
        self.with_gateway(gateway, |g| {
            if g.last_seen_ms.is_none_or(|t| heard_ms >= t) {
                (g.acked_seq, g.epoch, g.last_seen_ms) = (acked, epoch, Some(heard_ms));
            }
        });
    }

    /// A batch of `gateway` refused, `why` being its rejection label.
    pub fn rejected(&self, gateway: &str, why: &'static str, now_ms: i64) {
        self.note_rejected(gateway, why.into(), now_ms);
        self.tell(|| Change::Rejected { gateway: gateway.to_string(), why: why.to_string(), at_ms: now_ms });
    }

    fn note_rejected(&self, gateway: &str, why: std::borrow::Cow<'static, str>, now_ms: i64) {
        self.with_gateway(gateway, |g| {
            g.rejected_batches += 1;
            let r = g.refusing.get_or_insert_with(|| Refusing { reason: why.clone(), count: 0, since_ms: now_ms });
            r.reason = why;
            r.count += 1;
        });
    }

    /// `count` readings of `gateway` refused, the last for `last`'s sensor.
    pub fn refused(&self, gateway: &str, count: u64, last: RefusedSensor) {
        self.tell(|| Change::Refused { gateway: gateway.to_string(), count, last: last.clone() });
        self.note_refused(gateway, count, last);
    }

    fn note_refused(&self, gateway: &str, count: u64, last: RefusedSensor) {
        self.with_gateway(gateway, |g| {
            g.refused_readings += count;
            g.last_refused = Some(last);
        });
    }

    /// `gateway`'s clock offset at its latest batch (and whether it is beyond
    /// `max_offset`), and readings moved for it.
    pub fn clock(&self, gateway: &str, offset_ms: Option<(i64, bool)>, moved: u64) {
        self.note_clock(gateway, offset_ms, moved);
        self.tell(|| Change::Clock { gateway: gateway.to_string(), offset_ms, moved });
    }

    fn note_clock(&self, gateway: &str, offset_ms: Option<(i64, bool)>, moved: u64) {
        self.with_gateway(gateway, |g| {
            if let Some((offset, beyond)) = offset_ms {
                (g.clock_offset_ms, g.clock_beyond_max) = (Some(offset), beyond);
            }
            g.clock_skewed += moved;
        });
    }

    /// A `state/` message stamped `ts_ms` by the gateway's clock; returns the
    /// time recorded as last seen. A retained message may be old, so its own
    /// time is kept, but never one ahead of ours: a clock in 2100 would
    /// otherwise make the gateway "last seen" in 74 years.
    pub fn state(&self, gateway: &str, status: Status, ts_ms: i64) -> i64 {
        let ts_ms = ts_ms.min(self.clock.now_ms());
        self.with_gateway(gateway, |g| {
            g.status = match status {
                Status::Online => "online",
                Status::Offline => "offline",
            };
            g.last_seen_ms = Some(g.last_seen_ms.unwrap_or(ts_ms).max(ts_ms));
            ts_ms
        })
    }

    pub fn health(&self, gateway: &str, mut health: Health) {
        // Kept until the next report: what an agent sends is held to the
        // bounds the agent is meant to keep.
        if let Some(c) = health.config.as_mut() {
            c.reload_refused = c.reload_refused.take().map(RefusedReload::bounded);
        }
        self.with_gateway(gateway, |g| {
            g.last_seen_ms = Some(self.clock.now_ms());
            let before = g.health.as_ref().map(|h| &h.devices);
            g.failing = health
                .devices
                .iter()
                .filter(|d| failing_now(before.and_then(|b| b.iter().find(|p| p.sensor == d.sensor)), d, g.failing.contains(&d.sensor)))
                .map(|d| d.sensor.clone())
                .collect();
            g.health = Some(health);
        });
    }

    /// Up to `n` sensors after `after`, in id order: a page of what this
    /// registry has seen, for a collector that joins (`cluster::view`).
    pub fn seen_page(&self, after: Option<&SensorId>, n: usize) -> Vec<(SensorId, SensorSeen)> {
        let sensors = self.sensors.read().unwrap();
        let mut ids: Vec<&SensorId> = sensors.keys().filter(|id| after.is_none_or(|a| *id > a)).collect();
        // The page's `n` first, then only those sorted: a city's million
        // sensors are paged a thousand at a time, and sorting all of them for
        // each page held ingest's registry writes off a thousand times over.
        if ids.len() > n && n > 0 {
            ids.select_nth_unstable(n - 1);
        }
        ids.truncate(n);
        ids.sort_unstable();
        ids.into_iter().map(|id| (id.clone(), sensors[id].clone())).collect()
    }

    /// What another collector's registry has seen of `sensor`: each metric's
    /// newer sample, the later arrival, and its gateway and interval where
    /// this one knows none.
    pub fn learn(&self, sensor: SensorId, theirs: SensorSeen) {
        let mut sensors = self.sensors.write().unwrap();
        let s = sensors.entry(sensor).or_default();
        for (m, sample) in theirs.latest {
            match s.latest.get_mut(&m) {
                Some(l) if l.ts_ms >= sample.ts_ms => {}
                Some(l) => *l = sample,
                None => {
                    s.latest.insert(m, sample);
                    self.series_generation.fetch_add(1, Ordering::Release);
                }
            }
        }
        s.last_seen_ms = s.last_seen_ms.max(theirs.last_seen_ms);
        if s.gateway.is_none() {
            s.gateway = theirs.gateway;
        }
        if s.interval_ms.is_none() {
            s.interval_ms = theirs.interval_ms;
        }
    }

    pub fn sensors(&self) -> HashMap<SensorId, SensorSeen> {
        self.sensors.read().unwrap().clone()
    }

    /// Changes whenever a new (sensor, metric) appears in `series`.
    pub fn series_generation(&self) -> u64 {
        self.series_generation.load(Ordering::Acquire)
    }

    /// Every (sensor, metric) heard or seeded, without copying their values.
    pub fn series(&self) -> Vec<(SensorId, Metric)> {
        self.sensors.read().unwrap().iter().flat_map(|(s, seen)| seen.latest.keys().map(move |m| (s.clone(), m.clone()))).collect()
    }

    /// The newest sample of one series.
    pub fn latest(&self, sensor: &str, metric: &str) -> Option<Sample> {
        self.sensors.read().unwrap().get(sensor)?.latest.get(metric).copied()
    }

    /// The gateway a sensor's readings last came from.
    pub fn gateway(&self, sensor: &str) -> Option<GatewayId> {
        self.sensors.read().unwrap().get(sensor)?.gateway.clone()
    }

    pub fn gateways(&self) -> Vec<GatewayView> {
        self.gateways.read().unwrap().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(polls: u64, errors: u64) -> DeviceHealth {
        DeviceHealth { sensor: "wl-001".into(), polls, errors, last_poll_ms: None, last_error: (errors > 0).then(|| "timeout".into()) }
    }

    fn report(devices: Vec<DeviceHealth>) -> Health {
        Health { devices, ..Default::default() }
    }

    #[test]
    fn a_device_fails_when_only_its_errors_rise_and_recovers_at_the_next_good_poll() {
        let r = Registry::new(shared::clock::system());
        let failing = |r: &Registry| r.gateways()[0].failing.clone();
        r.health("gw", report(vec![dev(10, 0)]));
        assert!(failing(&r).is_empty(), "polling fine");
        r.health("gw", report(vec![dev(12, 1)]));
        assert!(failing(&r).is_empty(), "an error among good polls is not failing");
        r.health("gw", report(vec![dev(12, 3)]));
        assert_eq!(failing(&r), ["wl-001"], "errors only since the last report");
        r.health("gw", report(vec![dev(12, 3)]));
        assert_eq!(failing(&r), ["wl-001"], "a report between two slow polls keeps it failing");
        r.health("gw", report(vec![dev(13, 3)]));
        assert!(failing(&r).is_empty(), "a good poll ends it");
        // A restarted agent's counters start again: only never-polled-with-errors counts.
        r.health("gw", report(vec![dev(0, 2)]));
        assert_eq!(failing(&r), ["wl-001"]);
        r.health("gw", report(vec![dev(1, 2)]));
        assert!(failing(&r).is_empty());
    }

    #[test]
    fn a_refused_reload_is_kept_within_bounds_until_a_report_without_it() {
        use shared::wire::ConfigHealth;
        let r = Registry::new(shared::clock::system());
        let config = |g: &GatewayView| g.health.as_ref().and_then(|h| h.config.clone()).unwrap();
        // An agent that does not keep the bounds: twenty reasons of 10 000 characters.
        let flood = RefusedReload { at_ms: 9, reasons: vec!["x".repeat(10_000); 20], reasons_omitted: 0 };
        r.health("gw", Health { config: Some(ConfigHealth { loaded_ms: 1, reload_refused: Some(flood) }), ..Default::default() });
        let kept = config(&r.gateways()[0]).reload_refused.unwrap();
        assert_eq!((kept.at_ms, kept.reasons.len(), kept.reasons_omitted), (9, RefusedReload::MAX_REASONS, 15));
        assert!(kept.reasons.iter().all(|x| x.chars().count() == RefusedReload::MAX_REASON_CHARS));
        // A later reload accepted: the agent's next report has no refusal, nor does the view.
        r.health("gw", Health { config: Some(ConfigHealth { loaded_ms: 20, reload_refused: None }), ..Default::default() });
        assert_eq!(config(&r.gateways()[0]), ConfigHealth { loaded_ms: 20, reload_refused: None });
    }

    #[test]
    fn a_state_message_is_last_seen_at_its_own_time_but_never_in_the_future() {
        const NOW: i64 = 1_800_000_000_000;
        let r = Registry::new(shared::clock::ManualClock::at(NOW));
        // A retained message from an hour ago says when the gateway was last heard.
        assert_eq!(r.state("gw-old", Status::Offline, NOW - 3_600_000), NOW - 3_600_000);
        // A clock in 2100 does not make it "last seen" in 74 years.
        assert_eq!(r.state("gw-2100", Status::Online, 4_102_444_800_000), NOW);
        let seen: Vec<Option<i64>> = r.gateways().iter().map(|g| g.last_seen_ms).collect();
        assert_eq!(seen, [Some(NOW), Some(NOW - 3_600_000)]);
    }

    #[test]
    fn readings_have_arrived_as_far_as_the_furthest_behind_of_the_gateways_heard_lately() {
        const NOW: i64 = 1_800_000_000_000;
        let clock = shared::clock::ManualClock::at(NOW);
        let r = Registry::new(clock.clone());
        let reading = |ts: i64| Reading { seq: Seq(1), sensor: "s".into(), metric: "m".into(), ts_ms: ts, value: 1.0, quality: shared::Quality::Good };
        assert_eq!(r.arrived_until(NOW, 60_000), None, "nobody heard");
        r.stored("gw-quiet", 1, &Arc::new(vec![reading(NOW - 500_000)]), 1, 0, Seq(1));
        clock.set(NOW + 90_000);
        let now = NOW + 90_000;
        r.stored("gw-a", 1, &Arc::new(vec![reading(now - 200), reading(now - 9_000)]), 2, 0, Seq(2));
        r.stored("gw-b", 1, &Arc::new(vec![reading(now - 12_000)]), 1, 0, Seq(1));
        assert_eq!(r.arrived_until(now, 60_000), Some(now - 12_000), "gw-b's queue is the deeper; gw-quiet went silent 90 s ago");
        assert_eq!(r.arrived_until(now, 120_000), Some(NOW - 500_000));
    }

    #[test]
    fn stale_after_three_intervals_within_ten_to_sixty_seconds() {
        let mut s = SensorSeen::default();
        assert!(s.stale(0), "never heard is stale");
        assert_eq!(s.stale_after_ms(), STALE_MAX_MS);
        for t in [0, 1_000, 2_000, 3_000] {
            s.arrived(t);
        }
        assert_eq!((s.interval_ms, s.stale_after_ms()), (Some(1_000), STALE_MIN_MS));
        assert!(!s.stale(3_000 + STALE_MIN_MS) && s.stale(3_001 + STALE_MIN_MS));
    }

    #[test]
    fn what_ingest_tells_one_registry_another_hears_and_does_not_tell_again() {
        let (here, there) = (Arc::new(Registry::new(shared::clock::system())), Arc::new(Registry::new(shared::clock::system())));
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (to_there, log) = (there.clone(), told.clone());
        here.share(Box::new(move |c| to_there.heard(c)));
        there.share(Box::new(move |c| log.lock().unwrap().push(c)));
        let now = shared::now_ms();
        let reading = |ts_ms: i64, value: f64| Reading { seq: Seq(1), sensor: "wl-1".into(), metric: "level".into(), ts_ms, value, quality: shared::Quality::Good };
        here.stored("gw-river", 3, &Arc::new(vec![reading(now - 1_000, 1.5), reading(now - 500, 2.5)]), 2, 1, Seq(2));
        here.rejected("gw-river", "seq_jump", now);
        let last = RefusedSensor { sensor: "aq-9".into(), owners: vec!["gw-park".into()], at_ms: now };
        here.refused("gw-river", 4, last.clone());
        here.clock("gw-river", Some((1_500, false)), 0);
        assert_eq!(there.latest("wl-1", "level").map(|s| s.value), Some(2.5));
        assert_eq!(there.gateway("wl-1").as_deref(), Some("gw-river"));
        let g = &there.gateways()[0];
        assert_eq!((g.readings_received, g.duplicates, g.acked_seq, g.epoch, g.refused_readings), (2, 1, Seq(2), 3, 4));
        assert_eq!(g.refusing.as_ref().map(|r| (r.reason.as_ref(), r.count)), Some(("seq_jump", 1)));
        assert_eq!((g.last_refused.as_ref(), g.clock_offset_ms), (Some(&last), Some(1_500)));
        assert!(told.lock().unwrap().is_empty(), "what was heard is not shared again");
        there.stored("gw-park", 1, &Arc::new(vec![reading(now, 1.0)]), 1, 0, Seq(1));
        assert_eq!(told.lock().unwrap().len(), 1, "what its own ingest stores is");
    }

    #[test]
    fn what_another_registry_has_seen_is_learned_newest_first_and_paged() {
        let (theirs, mine) = (Registry::new(shared::clock::system()), Registry::new(shared::clock::system()));
        let reading = |sensor: &str, ts_ms: i64, value: f64| Reading { seq: Seq(1), sensor: sensor.into(), metric: "level".into(), ts_ms, value, quality: shared::Quality::Good };
        theirs.stored("gw-river", 1, &Arc::new(vec![reading("wl-1", 2_000, 2.5), reading("wl-2", 2_000, 7.0), reading("wl-3", 2_000, 1.0)]), 3, 0, Seq(3));
        mine.stored("gw-river", 1, &Arc::new(vec![reading("wl-1", 3_000, 3.5)]), 1, 0, Seq(4));
        let first = theirs.seen_page(None, 2);
        assert_eq!(first.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["wl-1", "wl-2"]);
        let rest = theirs.seen_page(Some(&first[1].0), 2);
        assert_eq!(rest.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["wl-3"]);
        for (id, seen) in first.into_iter().chain(rest) {
            mine.learn(id, seen);
        }
        assert_eq!(mine.latest("wl-1", "level").map(|s| s.value), Some(3.5), "its own newer value stays");
        assert_eq!(mine.latest("wl-2", "level").map(|s| s.value), Some(7.0));
        assert_eq!(mine.gateway("wl-3").as_deref(), Some("gw-river"));
    }
}
