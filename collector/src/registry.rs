//! What the collector knows right now, for the API: latest values per sensor,
//! each gateway's state and health.
//! It is a view fed by ingest; the store remains the record.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use shared::clock::SharedClock;

use serde::Serialize;
use shared::wire::{Health, Status};
use shared::{GatewayId, Metric, Reading, Sample, SensorId, Seq};

#[derive(Debug, Clone, Default)]
pub struct SensorSeen {
    pub gateway: Option<GatewayId>,
    pub last_seen_ms: Option<i64>,
    pub latest: BTreeMap<Metric, Sample>,
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
    pub fn stored(&self, gateway: &str, readings: &[Reading], received: u64, duplicates: u64, acked: Seq) {
        let now = self.clock.now_ms();
        {
            let mut sensors = self.sensors.write().unwrap();
            for r in readings {
                let s = sensors.entry(r.sensor.clone()).or_default();
                s.gateway = Some(gateway.into());
                s.last_seen_ms = Some(s.last_seen_ms.unwrap_or(i64::MIN).max(now));
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

    pub fn seed_gateway(&self, gateway: &str, acked: Seq) {
        self.with_gateway(gateway, |g| g.acked_seq = acked);
    }

    pub fn rejected(&self, gateway: &str) {
        self.with_gateway(gateway, |g| g.rejected_batches += 1);
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
