//! What the collector knows right now, for the API: latest values per sensor
//! and whether they are still coming (stale), each gateway's state, health
//! and whether its batches are being refused. It is a view fed by ingest and
//! the MQTT routing; the store remains the record.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use shared::clock::SharedClock;

use serde::Serialize;
use shared::wire::{Health, Status};
use shared::{GatewayId, Metric, Reading, Sample, SensorId, Seq};

/// A sensor is stale after three of its usual intervals without a reading,
/// but never sooner than this (a 1 s sensor does not flicker on a busy link)…
pub const STALE_MIN_MS: i64 = 10_000;
/// …nor later than this, whatever its interval (and before one is known).
pub const STALE_MAX_MS: i64 = 60_000;

#[derive(Debug, Clone, Default)]
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
    pub reason: &'static str,
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
}

pub struct Registry {
    clock: SharedClock,
    sensors: RwLock<HashMap<SensorId, SensorSeen>>,
    gateways: RwLock<BTreeMap<String, GatewayView>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(shared::clock::system())
    }
}

impl Registry {
    pub fn new(clock: SharedClock) -> Registry {
        Registry { clock, sensors: RwLock::default(), gateways: RwLock::default() }
    }

    fn with_gateway<T>(&self, id: &str, f: impl FnOnce(&mut GatewayView) -> T) -> T {
        let mut gws = self.gateways.write().unwrap();
        let g = gws.entry(id.to_string()).or_insert_with(|| GatewayView { id: id.to_string(), status: "unknown", ..Default::default() });
        f(g)
    }

    /// Records readings just stored for `gateway`.
    pub fn stored(&self, gateway: &str, epoch: u64, readings: &[Reading], received: u64, duplicates: u64, acked: Seq) {
        let now = self.clock.now_ms();
        {
            let mut sensors = self.sensors.write().unwrap();
            for r in readings {
                let s = sensors.entry(r.sensor.clone()).or_default();
                s.gateway = Some(gateway.into());
                // Several metrics of one sensor arrive together: one arrival.
                if s.last_seen_ms != Some(now) {
                    s.arrived(now);
                }
                let newer = s.latest.get(&r.metric).is_none_or(|l| l.ts_ms <= r.ts_ms);
                if newer {
                    s.latest.insert(r.metric.clone(), r.sample());
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

    /// Seeds latest values from the store at start-up.
    pub fn seed(&self, sensor: &SensorId, metric: &Metric, latest: Sample) {
        let mut sensors = self.sensors.write().unwrap();
        let s = sensors.entry(sensor.clone()).or_default();
        s.last_seen_ms = Some(s.last_seen_ms.unwrap_or(i64::MIN).max(latest.ts_ms));
        s.latest.insert(metric.clone(), latest);
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
        self.with_gateway(gateway, |g| {
            g.rejected_batches += 1;
            let r = g.refusing.get_or_insert(Refusing { reason: why, count: 0, since_ms: now_ms });
            r.reason = why;
            r.count += 1;
        });
    }

    pub fn state(&self, gateway: &str, status: Status, ts_ms: i64) {
        self.with_gateway(gateway, |g| {
            g.status = match status {
                Status::Online => "online",
                Status::Offline => "offline",
            };
            g.last_seen_ms = Some(g.last_seen_ms.unwrap_or(ts_ms).max(ts_ms));
        });
    }

    pub fn health(&self, gateway: &str, health: Health) {
        self.with_gateway(gateway, |g| {
            g.last_seen_ms = Some(self.clock.now_ms());
            g.health = Some(health);
        });
    }

    pub fn sensors(&self) -> HashMap<SensorId, SensorSeen> {
        self.sensors.read().unwrap().clone()
    }

    pub fn gateways(&self) -> Vec<GatewayView> {
        self.gateways.read().unwrap().values().cloned().collect()
    }
}
