//! Ingest: decode → verify → dedup → store → sync → ack, then update the live view.
//!
//! Batches that arrive together are stored with one write and one sync, so a
//! burst costs one fsync, not one per gateway. The ack for a gateway is sent
//! only after the sync that made its readings durable.

use std::collections::HashMap;
use std::sync::Arc;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

use crate::dedup::Tracker;
use crate::registry::Registry;
use crate::store::{Store, Write};
use shared::wire::Ack;
use shared::{topics, Batch, BatchError, Reading};

/// One `up/{gateway}` message as it came off the broker.
pub struct Incoming {
    pub gateway: String,
    pub payload: bytes::Bytes,
}

pub struct Ingest {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub client: AsyncClient,
    pub trackers: HashMap<String, Tracker>,
    /// Stored readings go on to the alert engine (never waited for) and the feeds.
    alerts: mpsc::Sender<crate::alerting::Input>,
    feed: crate::feed::Bus,
    /// Wakes the external sink when the forward log has grown.
    forwarded: Arc<tokio::sync::Notify>,
    /// Gateways' batch keys. When there are any, every batch must carry the
    /// HMAC of its topic's gateway, and acks are signed.
    keys: HashMap<String, Arc<Vec<u8>>>,
    /// Readings per second per gateway, and each gateway's bucket.
    rate: f64,
    buckets: HashMap<String, Bucket>,
}

/// A token bucket: `rate` per second, holding ten seconds' worth, and never
/// less than the largest batch an agent sends (10,000), which must get through eventually.
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
    warned: Option<std::time::Instant>,
}

fn capacity(rate: f64) -> f64 {
    (rate * 10.0).max(10_000.0)
}

impl Bucket {
    fn take(&mut self, n: f64, rate: f64) -> bool {
        let now = std::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(capacity(rate));
        self.at = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

fn reason(e: &BatchError) -> &'static str {
    match e {
        BatchError::Empty | BatchError::Undecodable(_) => "undecodable",
        BatchError::UnknownVersion(_) => "unknown_version",
        BatchError::TooLarge(_) => "too_large",
        _ => "invalid",
    }
}

struct Outcome {
    gateway: String,
    fresh: Vec<Reading>,
    received: u64,
    duplicates: u64,
}

impl Ingest {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        client: AsyncClient,
        alerts: mpsc::Sender<crate::alerting::Input>,
        feed: crate::feed::Bus,
        forwarded: Arc<tokio::sync::Notify>,
        keys: HashMap<String, Arc<Vec<u8>>>,
        rate: u32,
    ) -> anyhow::Result<Ingest> {
        let mut trackers = HashMap::new();
        for (gw, p) in store.progress()? {
            registry.seed_gateway(&gw, p.contiguous);
            trackers.insert(gw, Tracker::from_progress(&p));
        }
        Ok(Ingest { store, registry, client, trackers, alerts, feed, forwarded, keys, rate: rate as f64, buckets: HashMap::new() })
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Incoming>) {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < 256 {
                match rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            self.handle(group).await;
        }
    }

    async fn handle(&mut self, group: Vec<Incoming>) {
        let counters = &self.registry.counters;
        // Work on copies: a tracker only moves on once the store has the readings.
        let mut next: HashMap<String, Tracker> = HashMap::new();
        let mut outcomes: Vec<Outcome> = Vec::new();
        for m in group {
            let payload: &[u8] = if self.keys.is_empty() {
                &m.payload
            } else {
                let opened = self.keys.get(&m.gateway).map(|k| shared::auth::open_batch(k, &m.payload));
                match opened {
                    Some(Some(batch)) => batch,
                    Some(None) => {
                        tracing::warn!(gateway = %m.gateway, bytes = m.payload.len(), "rejected batch: its HMAC is not that of gateway {}'s key (forged, altered, or sent by another gateway)", m.gateway);
                        counters.reject("unauthenticated");
                        self.registry.rejected(&m.gateway);
                        continue;
                    }
                    None => {
                        tracing::warn!(gateway = %m.gateway, bytes = m.payload.len(), "rejected batch: no [[gateway]] batch key for {}", m.gateway);
                        counters.reject("unknown_gateway");
                        continue;
                    }
                }
            };
            let batch = match Batch::decode(payload) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(gateway = %m.gateway, bytes = m.payload.len(), "rejected batch: {e}");
                    counters.reject(reason(&e));
                    self.registry.rejected(&m.gateway);
                    continue;
                }
            };
            if batch.gateway != m.gateway {
                tracing::warn!(topic_gateway = %m.gateway, batch_gateway = %batch.gateway, "rejected batch: gateway in the batch does not match its topic");
                counters.reject("gateway_mismatch");
                self.registry.rejected(&m.gateway);
                continue;
            }
            let rate = self.rate;
            let bucket = self.buckets.entry(m.gateway.clone()).or_insert_with(|| Bucket { tokens: capacity(rate), at: std::time::Instant::now(), warned: None });
            if !bucket.take(batch.readings.len() as f64, rate) {
                // Not acknowledged: the agent keeps the readings and sends them again.
                counters.reject("rate_limited");
                if bucket.warned.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(10)) {
                    bucket.warned = Some(std::time::Instant::now());
                    tracing::warn!(gateway = %m.gateway, "batch refused: over mqtt.gateway_rate ({rate} readings/s); the agent will resend it");
                }
                continue;
            }
            counters.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tracker = next.entry(m.gateway.clone()).or_insert_with(|| self.trackers.get(&m.gateway).cloned().unwrap_or_default());
            let received = batch.readings.len() as u64;
            let accepted = tracker.accept(batch);
            if accepted.skipped > 0 {
                tracing::warn!(gateway = %m.gateway, skipped = accepted.skipped, "agent reports readings it dropped before sending (buffer full)");
                counters.skipped.fetch_add(accepted.skipped, std::sync::atomic::Ordering::Relaxed);
            }
            outcomes.push(Outcome { gateway: m.gateway, fresh: accepted.fresh, received, duplicates: accepted.duplicates });
        }
        if next.is_empty() {
            return;
        }
        let outcomes: Vec<(Outcome, Arc<Vec<Reading>>)> = outcomes
            .into_iter()
            .map(|mut o| {
                let fresh = Arc::new(std::mem::take(&mut o.fresh));
                (o, fresh)
            })
            .collect();
        let write = Write {
            batches: outcomes.iter().map(|(o, fresh)| (o.gateway.clone(), fresh.clone())).collect(),
            progress: next.iter().map(|(g, t)| (g.clone(), t.progress())).collect(),
        };
        use std::sync::atomic::Ordering::Relaxed;
        // The rule engine and the live feeds get the readings before they are
        // written and synced, so an alert does not wait for the disk; only the
        // ack does. Should the write or the sync fail, the readings come back
        // from the agents (their trackers have not moved) and are evaluated
        // again; the engine keeps one alert per key, so it does not fire twice.
        for (o, fresh) in &outcomes {
            if !fresh.is_empty() {
                let _ = self.feed.send(crate::feed::FeedEvent::Readings(fresh.clone()));
                if self.alerts.try_send(crate::alerting::Input::Readings { gateway: o.gateway.clone(), readings: fresh.clone() }).is_err() {
                    counters.rules_lagged.fetch_add(1, Relaxed);
                }
            }
        }
        let store = self.store.clone();
        // A JoinError only happens when the runtime is being torn down.
        let Ok(written) = tokio::task::spawn_blocking(move || store.write(&write)).await else { return };
        if let Err(e) = written {
            // No ack: the agents keep the readings and send them again.
            tracing::error!("{e}; {} batch(es) not acknowledged, agents will resend", outcomes.len());
            counters.store_errors.fetch_add(1, Relaxed);
            return;
        }
        let store = self.store.clone();
        let Ok(synced) = tokio::task::spawn_blocking(move || store.sync()).await else { return };
        if let Err(e) = synced {
            tracing::error!("{e}; {} batch(es) not acknowledged, agents will resend", outcomes.len());
            counters.store_errors.fetch_add(1, Relaxed);
            return;
        }
        for (o, fresh) in outcomes {
            counters.received.fetch_add(o.received, Relaxed);
            counters.stored.fetch_add(fresh.len() as u64, Relaxed);
            counters.duplicate.fetch_add(o.duplicates, Relaxed);
            let acked = next[&o.gateway].ack();
            self.registry.stored(&o.gateway, &fresh, o.received, o.duplicates, acked);
        }
        self.forwarded.notify_one();
        for (gw, t) in next {
            let seq = t.ack();
            let mac = self.keys.get(&gw).map(|k| shared::auth::ack_mac(k, &gw, seq));
            let ack = serde_json::to_vec(&Ack { seq, mac }).expect("ack serializes");
            // QoS 0: an ack is cumulative, so a lost one is covered by the next
            // (or the agent resends after its ack timeout and the batch is
            // deduplicated). At QoS 1 the broker's PUBACK for it, sitting
            // unacknowledged on a socket without TCP_NODELAY (rumqttd's, or
            // Mosquitto's by default), held the next batch for that socket's
            // delayed ACK: ~40 ms, for anything from 1% to nearly all batches.
            if let Err(e) = self.client.publish(topics::ack(&gw), QoS::AtMostOnce, false, ack).await {
                tracing::warn!(gateway = %gw, "cannot queue ack: {e}");
            }
            self.trackers.insert(gw, t);
        }
    }
}
