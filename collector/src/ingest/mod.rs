//! Ingest: decode → verify → dedup → store → sync → ack, then update the live view.
//!
//! Batches that arrive together are stored with one write and one sync, so a
//! burst costs one fsync, not one per gateway. The ack for a gateway is sent
//! only after the sync that made its readings durable.

pub mod counters;
pub mod dedup;
pub mod rate;
pub mod rejection;

use std::collections::HashMap;
use std::sync::Arc;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

use shared::wire::Ack;
use shared::{topics, Batch, Reading};

use crate::messages::{Bus, FeedEvent, Incoming, RuleInput};
use crate::registry::Registry;
use crate::store::{Store, Write};
pub use counters::Counters;
use dedup::Tracker;
use rate::RateLimit;
pub use rejection::Rejection;

pub struct Ingest {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    counters: Arc<Counters>,
    links: Links,
    trackers: HashMap<String, Tracker>,
    /// Gateways' batch keys. When there are any, every batch must carry the
    /// HMAC of its topic's gateway, and acks are signed.
    keys: HashMap<String, Arc<Vec<u8>>>,
    rate: RateLimit,
}

/// Where ingest sends what it has accepted.
pub struct Links {
    /// Acks go out on the connection the batches came in on.
    pub acks: AsyncClient,
    /// Accepted readings go on to the rule engine (never waited for) and the feeds.
    pub rules: mpsc::Sender<RuleInput>,
    pub feed: Bus,
    /// Wakes the external sink when the forward log has grown.
    pub forwarded: Arc<tokio::sync::Notify>,
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
        counters: Arc<Counters>,
        links: Links,
        keys: HashMap<String, Arc<Vec<u8>>>,
        rate: RateLimit,
    ) -> Result<Ingest, crate::store::StoreError> {
        let mut trackers = HashMap::new();
        for (gw, p) in store.progress()? {
            registry.seed_gateway(&gw, shared::Seq(p.contiguous));
            trackers.insert(gw, Tracker::from_progress(&p));
        }
        Ok(Ingest { store, registry, counters, links, trackers, keys, rate })
    }

    /// Opens, decodes and admits one message: the batch, or why not.
    fn admit(&mut self, m: &Incoming) -> Result<Batch, Rejection> {
        let payload: &[u8] = if self.keys.is_empty() {
            &m.payload
        } else {
            match self.keys.get(&m.gateway).map(|k| shared::auth::open_batch(k, &m.payload)) {
                Some(Some(batch)) => batch,
                Some(None) => {
                    tracing::warn!(gateway = %m.gateway, bytes = m.payload.len(), "rejected batch: its HMAC is not that of gateway {}'s key (forged, altered, or sent by another gateway)", m.gateway);
                    return Err(Rejection::Unauthenticated);
                }
                None => {
                    tracing::warn!(gateway = %m.gateway, bytes = m.payload.len(), "rejected batch: no [[gateway]] batch key for {}", m.gateway);
                    return Err(Rejection::UnknownGateway);
                }
            }
        };
        let batch = Batch::decode(payload).map_err(|e| {
            tracing::warn!(gateway = %m.gateway, bytes = m.payload.len(), "rejected batch: {e}");
            Rejection::from(&e)
        })?;
        if batch.gateway != m.gateway {
            tracing::warn!(topic_gateway = %m.gateway, batch_gateway = %batch.gateway, "rejected batch: gateway in the batch does not match its topic");
            return Err(Rejection::GatewayMismatch);
        }
        // The same id rules as the configs: what is stored is shown, exported and put in topics.
        if let Some(r) = batch.readings.iter().find(|r| !shared::topics::valid_id(r.sensor.as_str()) || !shared::topics::valid_id(r.metric.as_str())) {
            let shown = |s: &str| s.chars().take(64).collect::<String>().escape_debug().to_string();
            tracing::warn!(gateway = %m.gateway, sensor = %shown(r.sensor.as_str()), metric = %shown(r.metric.as_str()), "rejected batch: a sensor or metric id is not 1-128 of A-Z a-z 0-9 - _ . :");
            return Err(Rejection::InvalidId);
        }
        if let Err(refused) = self.rate.admit(&m.gateway, batch.readings.len()) {
            // Not acknowledged: the agent keeps the readings and sends them again.
            if refused.log {
                tracing::warn!(gateway = %m.gateway, "batch refused: over mqtt.gateway_rate ({} readings/s); the agent will resend it", self.rate.rate());
            }
            return Err(Rejection::RateLimited);
        }
        Ok(batch)
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
        let counters = self.counters.clone();
        // Work on copies: a tracker only moves on once the store has the readings.
        let mut next: HashMap<String, Tracker> = HashMap::new();
        let mut outcomes: Vec<Outcome> = Vec::new();
        for m in group {
            let batch = match self.admit(&m) {
                Ok(b) => b,
                Err(why) => {
                    counters.reject(why);
                    // A batch without a key to check it against names no gateway we know.
                    if why != Rejection::UnknownGateway {
                        self.registry.rejected(&m.gateway);
                    }
                    continue;
                }
            };
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
                let _ = self.links.feed.send(FeedEvent::Readings(fresh.clone()));
                if self.links.rules.try_send(RuleInput::Readings { gateway: o.gateway.clone(), readings: fresh.clone() }).is_err() {
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
        self.links.forwarded.notify_one();
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
            if let Err(e) = self.links.acks.publish(topics::ack(&gw), QoS::AtMostOnce, false, ack).await {
                tracing::warn!(gateway = %gw, "cannot queue ack: {e}");
            }
            self.trackers.insert(gw, t);
        }
    }
}
