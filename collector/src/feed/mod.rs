//! Live feeds for operations centres and emergency command: every stored
//! reading, alert change and gateway change goes onto one broadcast bus
//! (`messages::Bus`), from which the MQTT feed, each SSE client
//! (`http::stream`) and the webhooks take what they want.
//!
//! The live feeds are a view, not a record: they never make ingest wait, so
//! a consumer that cannot keep up loses readings. Every loss is counted in
//! `FeedStats` (`citysense_feed_dropped_total`): consumers that need every
//! reading read the store (`GET /api/v1/series`) or the InfluxDB sink, which
//! are complete (docs/mqtt.md, "Live feed losses").

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub mod mqtt;
pub mod webhook;

/// What the live feeds dropped because a consumer was slow.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// MQTT `live/…`: readings not published because the collector's
    /// connection to the broker had no room (`try_publish` refused them).
    pub mqtt_live_readings: AtomicU64,
    /// MQTT `live/…`: batches of readings the feed task fell behind on and
    /// skipped on the bus (their readings are not counted one by one).
    pub mqtt_live_batches: AtomicU64,
    /// SSE (`/api/v1/stream`): events skipped because a client read slower
    /// than the bus moved, summed over clients (each is told `lagged`).
    pub sse_events: AtomicU64,
    /// MQTT `live/…`: readings left out because the feed was at
    /// `mqtt.live_rate` (not a slow consumer: the collector's own cap).
    pub mqtt_live_over_rate: AtomicU64,
}

impl FeedStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// (feed label, unit label, count) for `/metrics`.
    pub fn rows(&self) -> [(&'static str, &'static str, u64); 3] {
        [
            ("mqtt_live", "reading", self.mqtt_live_readings.load(Relaxed)),
            ("mqtt_live", "batch", self.mqtt_live_batches.load(Relaxed)),
            ("sse", "event", self.sse_events.load(Relaxed)),
        ]
    }
}
