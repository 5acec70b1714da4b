//! The commit stage: write → sync → ack, then the live feed.
//!
//! Admission (the stage before) judges each group of batches and hands the
//! rule engine its readings at once; this stage makes them durable. It takes
//! every group that queued up while the last sync ran and commits them with
//! one write and one sync (group commit), so admission never waits for the
//! disk, and a burst behind a slow sync costs one fsync, not one per group.
//!
//! Admission moves its sequence trackers on as it admits, ahead of the disk.
//! Should a write or sync fail, everything admitted on top of the failed
//! group is void: this stage drops the rest of that generation unwritten and
//! unacked (writing it would store progress past readings that are not
//! there), and admission goes back to the trackers of the last commit that
//! landed. The agents resend, as after any failure. This is the rule
//! PostgreSQL adopted after its fsync bug: never carry on from a state a
//! failed sync may not have kept.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

use rumqttc::{AsyncClient, QoS};
use shared::clock::SharedClock;
use shared::wire::Ack;
use shared::{topics, GatewayId, Reading, SensorId, Seq};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::dedup::Tracker;
use super::{ownership, Counters, Health};
use crate::messages::{Bus, FeedEvent};
use crate::registry::{RefusedSensor, Registry};
use crate::store::{SeqSpace, Store, Write};

/// One batch's share of an admitted group.
pub(super) struct Outcome {
    pub space: SeqSpace,
    pub fresh: Arc<Vec<Reading>>,
    pub received: u64,
    pub duplicates: u64,
    /// Readings refused for not being the gateway's to send (counted once stored).
    pub refused: Vec<ownership::Refused>,
}

/// A group of batches admitted and waiting to be made durable.
pub(super) struct Admitted {
    /// Admission's generation: a failed commit voids the rest of its own.
    pub generation: u64,
    pub outcomes: Vec<Outcome>,
    /// The trackers as they stand after this group.
    pub trackers: HashMap<SeqSpace, Tracker>,
    /// Sensors this group is the first to carry, bound to its gateway once stored.
    pub bindings: Vec<(SensorId, GatewayId)>,
    /// Batches from the cluster's log, told once their fate is final.
    pub settled: Vec<oneshot::Sender<()>>,
    /// The time the group was judged by.
    pub now: i64,
    /// Room in the pipeline, given back once committed.
    pub _room: OwnedSemaphorePermit,
}

pub(super) enum ToCommit {
    Group(Admitted),
    /// Answered once everything sent before it is committed or dropped.
    Flush(oneshot::Sender<()>),
}

/// What the commit stage tells admission.
pub(super) enum Committed {
    /// Now on disk: trackers to fall back to, bindings no longer provisional.
    Durable { trackers: HashMap<SeqSpace, Tracker>, bindings: Vec<(SensorId, GatewayId)> },
    /// A write or sync of this generation failed; its later groups were dropped.
    Failed { generation: u64 },
}

/// Groups sent to the commit stage and not yet done with: whether ingest
/// has work waiting, for `/healthz`'s stall check.
#[derive(Default)]
pub(super) struct InFlight(AtomicUsize);

impl InFlight {
    pub fn sent(&self, health: &Health) {
        self.0.fetch_add(1, SeqCst);
        health.ingest.pending(true);
    }

    pub fn idle(&self) -> bool {
        self.0.load(SeqCst) == 0
    }

    fn done(&self, health: &Health) {
        if self.0.fetch_sub(1, SeqCst) == 1 {
            health.ingest.pending(false);
            // Admission may have sent one between the two lines above.
            if self.0.load(SeqCst) > 0 {
                health.ingest.pending(true);
            }
        }
    }
}

pub(super) struct Committer {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub counters: Arc<Counters>,
    /// A connection that only publishes. On the connection that hears the
    /// batches, acks waited for room in its request queue while that
    /// connection waited for ingest to take the next batch, and ingest for
    /// room in flight that only this commit gives back: with more gateways
    /// in one commit than the queue holds, every part waited on another for
    /// good (1,000 gateways at 500k readings/s stopped at 5.8M readings).
    pub acks: AsyncClient,
    pub feed: Bus,
    /// Wakes the external sink when the forward log has grown.
    pub forwarded: Arc<tokio::sync::Notify>,
    pub health: Health,
    pub progress: Option<super::ProgressOut>,
    pub in_flight: Arc<InFlight>,
    pub clock: SharedClock,
    /// Gateways' batch keys, to sign acks with.
    pub keys: HashMap<String, Arc<Vec<u8>>>,
    /// The generation whose commit failed: its groups still queued are dropped.
    pub poisoned: Option<u64>,
}

impl Committer {
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ToCommit>, back: mpsc::UnboundedSender<Committed>) {
        let mut waiting = Vec::new();
        while let Some(first) = rx.recv().await {
            waiting.push(first);
            while let Ok(more) = rx.try_recv() {
                waiting.push(more);
            }
            let mut groups = Vec::new();
            for item in waiting.drain(..) {
                match item {
                    ToCommit::Group(g) => groups.push(g),
                    ToCommit::Flush(reply) => {
                        self.commit(std::mem::take(&mut groups), &back).await;
                        let _ = reply.send(());
                    }
                }
            }
            self.commit(groups, &back).await;
        }
    }

    /// Writes and syncs `groups` as one, then acks and feeds them in order.
    async fn commit(&mut self, groups: Vec<Admitted>, back: &mpsc::UnboundedSender<Committed>) {
        if groups.is_empty() {
            return;
        }
        let count = groups.len();
        let (void, groups): (Vec<_>, Vec<_>) = groups.into_iter().partition(|g| self.poisoned.is_some_and(|p| g.generation <= p));
        if !void.is_empty() {
            tracing::warn!("{} group(s) admitted after a failed commit dropped unacknowledged; agents will resend", void.len());
        }
        let done = self.write(&groups).await;
        if let Some(generation) = groups.first().map(|g| g.generation).filter(|_| !done) {
            self.poisoned = Some(generation);
            let _ = back.send(Committed::Failed { generation });
        }
        if done {
            self.after_sync(groups, back).await;
        }
        for _ in 0..count {
            self.health.ingest.progress();
            self.in_flight.done(&self.health);
        }
    }

    /// One write and one sync for every group; false when either failed.
    async fn write(&self, groups: &[Admitted]) -> bool {
        if groups.iter().all(|g| g.trackers.is_empty()) {
            return true;
        }
        let mut progress: HashMap<&SeqSpace, &Tracker> = HashMap::new();
        for g in groups {
            progress.extend(g.trackers.iter());
        }
        let write = Write {
            batches: groups.iter().flat_map(|g| &g.outcomes).map(|o| (o.space.gateway.to_string(), o.fresh.clone())).collect(),
            progress: progress.into_iter().map(|(s, t)| (s.clone(), t.progress())).collect(),
            forget: Vec::new(),
        };
        let bindings: Vec<(SensorId, GatewayId)> = groups.iter().flat_map(|g| g.bindings.iter().cloned()).collect();
        let batches = write.batches.len();
        let store = self.store.clone();
        let result = match tokio::task::spawn_blocking(move || store.bind(&bindings).and_then(|_| store.write(&write)).and_then(|_| store.sync())).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => {
                tracing::error!("store write panicked; {batches} batch(es) not acknowledged, agents will resend");
                self.counters.store_errors.fetch_add(1, Relaxed);
                self.health.store.failing("a write panicked");
                return false;
            }
            // The runtime is being torn down.
            Err(_) => return false,
        };
        if let Err(e) = result {
            // No ack: the agents keep the readings and send them again.
            tracing::error!("{e}; {batches} batch(es) not acknowledged, agents will resend");
            self.counters.store_errors.fetch_add(1, Relaxed);
            self.health.store.failing(format!("write failed: {e}"));
            return false;
        }
        self.counters.commits.fetch_add(1, Relaxed);
        self.health.store.progress();
        true
    }

    async fn after_sync(&self, groups: Vec<Admitted>, back: &mpsc::UnboundedSender<Committed>) {
        let counters = &self.counters;
        let mut trackers = HashMap::new();
        let mut bindings = Vec::new();
        let mut settled = Vec::new();
        for g in groups {
            for o in g.outcomes {
                // Live feeds carry only durable readings: published before the
                // sync, a reading that a crash then lost would be published
                // again when its agent resent it (the fault suite's power cuts
                // saw it), and a consumer could see a value the store never
                // held. The price is the sync's time on the feed's latency,
                // not on the alerts'.
                if !o.fresh.is_empty() {
                    let _ = self.feed.send(FeedEvent::Readings(o.fresh.clone()));
                }
                if let Some(last) = o.refused.last() {
                    counters.sensor_not_owned.fetch_add(o.refused.len() as u64, Relaxed);
                    self.registry.refused(&o.space.gateway, o.refused.len() as u64, RefusedSensor { sensor: last.sensor.clone(), owners: last.owners.clone(), at_ms: g.now });
                }
                counters.received.fetch_add(o.received, Relaxed);
                counters.stored.fetch_add(o.fresh.len() as u64, Relaxed);
                counters.duplicate.fetch_add(o.duplicates, Relaxed);
                let acked = g.trackers[&o.space].ack();
                self.registry.stored(&o.space.gateway, o.space.epoch, &o.fresh, o.received, o.duplicates, acked);
            }
            trackers.extend(g.trackers);
            bindings.extend(g.bindings);
            settled.extend(g.settled);
        }
        if !trackers.is_empty() {
            self.forwarded.notify_one();
        }
        if let Some(out) = self.progress.as_ref().filter(|_| !trackers.is_empty()) {
            // Kept beyond this store before anything is acknowledged: a
            // collector that takes these gateways over goes on from here.
            let (done, confirmed) = oneshot::channel();
            let progress = trackers.iter().map(|(s, t)| (s.clone(), t.progress())).collect();
            if out.send((progress, done)).await.is_ok() {
                let _ = confirmed.await;
            }
        }
        // After the sync: the agent measures its clock against this.
        let ack_ms = self.clock.now_ms();
        for (space, t) in &trackers {
            self.ack(space, t.ack(), ack_ms).await;
        }
        for s in settled {
            let _ = s.send(());
        }
        let _ = back.send(Committed::Durable { trackers, bindings });
    }

    async fn ack(&self, space: &SeqSpace, seq: Seq, ack_ms: i64) {
        let (gw, epoch) = (space.gateway.as_str(), space.epoch);
        let mac = self.keys.get(gw).map(|k| shared::auth::ack_mac(k, gw, epoch, seq));
        let ack = serde_json::to_vec(&Ack { seq, epoch, mac, ts_ms: Some(ack_ms) }).expect("ack serializes");
        // QoS 0: an ack is cumulative, so a lost one is covered by the next
        // (or the agent resends after its ack timeout and the batch is
        // deduplicated). At QoS 1 the broker's PUBACK for it, sitting
        // unacknowledged on a socket without TCP_NODELAY (rumqttd's, or
        // Mosquitto's by default), held the next batch for that socket's
        // delayed ACK: ~40 ms, for anything from 1% to nearly all batches.
        if let Err(e) = self.acks.publish(topics::ack(gw), QoS::AtMostOnce, false, ack).await {
            tracing::warn!(gateway = %gw, "cannot queue ack: {e}");
        }
    }
}
