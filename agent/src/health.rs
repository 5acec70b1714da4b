//! Periodic `health/{gateway}`: buffer depth and age, throughput, per-device
//! errors, the agent's own clock and its config (a refused reload is sent at
//! once, not at the next period).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{watch, Notify};

use crate::clock::AgentClock;
use crate::outbox::Outbox;
use crate::stats::DeviceStats;
use crate::status::ConfigRecord;
use shared::topics;
use shared::wire::Health;

pub fn snapshot(outbox: &dyn Outbox, devices: &[Arc<DeviceStats>], readings_per_s: f64, clock: &AgentClock, config: &ConfigRecord) -> Health {
    let s = outbox.stats();
    let clock = clock.state();
    let now = clock.now_ms;
    Health {
        ts_ms: now,
        buffer_depth: s.depth,
        buffer_bytes: s.bytes,
        oldest_age_ms: s.oldest_ts_ms.map(|t| (now - t).max(0)).unwrap_or(0),
        readings_per_s,
        dropped: s.dropped_total,
        devices: devices.iter().map(|d| d.snapshot()).collect(),
        clock: Some(clock),
        config: Some(config.health()),
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn publish(
    gateway: String,
    client: AsyncClient,
    outbox: Arc<dyn Outbox>,
    devices: Vec<Arc<DeviceStats>>,
    clock: Arc<AgentClock>,
    config: crate::status::SharedConfigRecord,
    every: Duration,
    now: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let topic = topics::health(&gateway);
    let mut ticker = tokio::time::interval(every);
    let mut last = (Instant::now(), outbox.stats().next_seq);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = now.notified() => {}
            _ = shutdown.changed() => return,
        }
        let next = outbox.stats().next_seq;
        let rate = (next - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), next);
        let record = config.lock().unwrap().clone();
        let h = snapshot(outbox.as_ref(), &devices, rate, &clock, &record);
        // QoS 0 and try_publish: health is periodic, and a stale one queued
        // behind an outage is worth nothing.
        let _ = client.try_publish(topic.clone(), QoS::AtMostOnce, false, serde_json::to_vec(&h).expect("health serializes"));
    }
}
