//! Ingest: admit → dedup → store → sync → ack, then update the live view.
//!
//! Batches that arrive together are stored with one write and one sync, so a
//! burst costs one fsync, not one per gateway. The ack for a sequence is sent
//! only after the sync that made its readings durable, and names the outbox
//! epoch it is for. `admit` decides whether a message is a batch at all,
//! `dedup` which readings are new and how far a batch may move its sequence,
//! `ownership` which of them their gateway may speak for, `clock` what is
//! done with readings whose time cannot be right.

pub mod admit;
pub mod clock;
pub mod counters;
pub mod dedup;
pub mod ownership;
pub mod rate;
pub mod rejection;
pub mod settings;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rumqttc::{AsyncClient, QoS};
use shared::clock::SharedClock;
use shared::wire::Ack;
use shared::{topics, Reading};
use tokio::sync::mpsc;

use crate::catalogue::SensorEntry;
use crate::liveness::Heartbeat;
use crate::messages::{Bus, FeedEvent, Incoming, IngestControl, MoveRefused, RuleInput, SeqSpaceView};
use crate::registry::{RefusedSensor, Registry};
use crate::store::{SeqSpace, Store, StoreError, Write};
pub use admit::Admission;
use clock::{ClockPolicy, Fix};
pub use counters::Counters;
use dedup::{JumpLimit, Tracker};
use ownership::Ownership;
pub use rejection::Rejection;
use shared::{GatewayId, SensorId};

/// Outbox epochs one gateway may have open at once. A gateway gets a new one
/// each time its outbox is made anew; an operator forgets old ones
/// (`DELETE /api/v1/gateways/{id}/progress`), so a stream of made-up epochs
/// cannot grow the collector's state without bound.
pub const MAX_EPOCHS: usize = 8;

pub struct Ingest {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    counters: Arc<Counters>,
    links: Links,
    trackers: HashMap<SeqSpace, Tracker>,
    admission: Admission,
    limit: JumpLimit,
    clock: SharedClock,
    health: Health,
    ownership: Ownership,
    clocks: ClockPolicy,
}

/// Whom to believe: the catalogue (which gateway owns which sensor) and the
/// clock policy for readings whose time cannot be right.
pub struct Trust {
    pub catalogue: Arc<Vec<SensorEntry>>,
    pub clocks: ClockPolicy,
}

/// What ingest reports about itself and about the store it writes.
pub struct Health {
    pub ingest: Arc<Heartbeat>,
    pub store: Arc<Heartbeat>,
}

/// What ingest lets through: admission (seal, decode, ids, rate), how far
/// sequences may move, and which readings a gateway may send and when.
pub struct Policy {
    pub admission: Admission,
    pub sequencing: Sequencing,
    pub trust: Trust,
}

/// How sequences may move, and the clock they are judged by.
pub struct Sequencing {
    pub limit: JumpLimit,
    pub clock: SharedClock,
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
    space: SeqSpace,
    fresh: Vec<Reading>,
    received: u64,
    duplicates: u64,
    /// Readings refused for not being the gateway's to send (counted once stored).
    refused: Vec<ownership::Refused>,
}

impl Ingest {
    pub fn new(store: Arc<dyn Store>, registry: Arc<Registry>, counters: Arc<Counters>, links: Links, policy: Policy, health: Health) -> Result<Ingest, StoreError> {
        let Policy { admission, sequencing: Sequencing { limit, clock }, trust } = policy;
        let ownership = Ownership::new(&trust.catalogue, store.bindings()?);
        let now = clock.now_ms();
        let mut trackers = HashMap::new();
        for (space, p) in store.progress()? {
            let t = Tracker::from_progress(&p, now);
            registry.seed_gateway(&space.gateway, space.epoch, t.ack(), t.heard_ms());
            trackers.insert(space, t);
        }
        Ok(Ingest { store, registry, counters, links, trackers, admission, limit, clock, health, ownership, clocks: trust.clocks })
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Incoming>, mut control: mpsc::Receiver<IngestControl>) {
        let _alive = self.health.ingest.alive();
        loop {
            self.health.ingest.pending(!rx.is_empty());
            let first = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => return },
                c = control.recv() => {
                    if let Some(c) = c {
                        self.control(c).await;
                    }
                    continue;
                }
            };
            let mut group = vec![first];
            while group.len() < 256 {
                match rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            self.health.ingest.pending(true);
            self.handle(group).await;
            self.health.ingest.progress();
        }
    }

    async fn control(&mut self, c: IngestControl) {
        match c {
            IngestControl::Progress { gateway, reply } => {
                let mut spaces: Vec<SeqSpaceView> = self
                    .trackers
                    .iter()
                    .filter(|(s, _)| s.gateway == gateway)
                    .map(|(s, t)| SeqSpaceView { epoch: s.epoch, acked_seq: t.ack(), waiting: t.waiting(), heard_ms: t.heard_ms() })
                    .collect();
                spaces.sort_by_key(|v| std::cmp::Reverse(v.heard_ms));
                let _ = reply.send(spaces);
            }
            IngestControl::Forget { gateway, epoch, reply } => {
                let forget: Vec<SeqSpace> = self.trackers.keys().filter(|s| s.gateway == gateway && epoch.is_none_or(|e| s.epoch == e)).cloned().collect();
                let write = Write { forget: forget.clone(), ..Write::default() };
                let store = self.store.clone();
                let done = tokio::task::spawn_blocking(move || store.write(&write).and_then(|_| store.sync())).await;
                let result = match done {
                    Ok(Ok(())) => {
                        for s in &forget {
                            self.trackers.remove(s);
                            tracing::warn!(gateway = %s.gateway, epoch = s.epoch, "delivery progress reset by an operator: the next batch starts this sequence anew");
                        }
                        Ok(forget.len())
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => return,
                };
                let _ = reply.send(result);
            }
            IngestControl::MoveSensor { sensor, gateway, reply } => {
                let _ = reply.send(self.move_sensor(sensor, gateway).await);
            }
        }
    }

    /// An operator's move of an uncatalogued sensor to another gateway.
    async fn move_sensor(&mut self, sensor: SensorId, gateway: GatewayId) -> Result<Vec<GatewayId>, MoveRefused> {
        let binding = self.ownership.check_move(&sensor, &gateway).map_err(|e| MoveRefused::Invalid(e.to_string()))?;
        let before = self.ownership.owners(&sensor);
        let store = self.store.clone();
        let b = vec![binding.clone()];
        let done = tokio::task::spawn_blocking(move || store.bind(&b).and_then(|_| store.sync())).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(MoveRefused::Store(e.to_string())),
            Err(_) => return Err(MoveRefused::Store("the store task ended".into())),
        }
        tracing::warn!(sensor = %sensor, from = ?before, to = %gateway, "sensor moved to another gateway by an operator");
        self.ownership.commit([binding]);
        Ok(before)
    }

    /// The tracker `space` would continue from: this group's copy, the
    /// stored one, or a new sequence starting at `batch`'s floor, which is
    /// refused past `MAX_EPOCHS` per gateway.
    fn tracker_for(&self, next: &HashMap<SeqSpace, Tracker>, space: &SeqSpace, floor: shared::Seq, now: i64) -> Result<Tracker, Rejection> {
        if let Some(t) = next.get(space).or_else(|| self.trackers.get(space)) {
            return Ok(t.clone());
        }
        let open = self.trackers.keys().chain(next.keys()).filter(|s| s.gateway == space.gateway).count();
        if open >= MAX_EPOCHS {
            tracing::warn!(gateway = %space.gateway, epoch = space.epoch, "rejected batch: the gateway already has {MAX_EPOCHS} outbox epochs; an operator can forget old ones (DELETE /api/v1/gateways/{}/progress?epoch=N)", space.gateway);
            return Err(Rejection::EpochLimit);
        }
        if open > 0 {
            tracing::info!(gateway = %space.gateway, epoch = space.epoch, first_seq = floor.get(), "a new outbox epoch: the gateway's outbox was made anew; its seqs start a sequence of their own");
        }
        Ok(Tracker::starting_at(floor, now, self.limit))
    }

    async fn handle(&mut self, group: Vec<Incoming>) {
        let counters = self.counters.clone();
        let now = self.clock.now_ms();
        // Work on copies: a tracker only moves on once the store has the readings.
        let mut next: HashMap<SeqSpace, Tracker> = HashMap::new();
        let mut outcomes: Vec<Outcome> = Vec::new();
        // First-heard sensors of this group, bound once the group is stored.
        let mut pending: HashMap<SensorId, GatewayId> = HashMap::new();
        // Told at the end, once every batch of the group is stored or refused;
        // an early return (the store failed) drops them untold.
        let mut settled = Vec::new();
        for mut m in group {
            settled.extend(m.settled.take());
            let now = m.logged_ms.unwrap_or(now);
            let refuse = |why: Rejection| {
                counters.reject(why);
                // A batch without a key to check it against names no gateway we know.
                if why != Rejection::UnknownGateway {
                    self.registry.rejected(&m.gateway, why.label(), now);
                }
            };
            let batch = match self.admission.admit(&m) {
                Ok(b) => b,
                Err(why) => {
                    refuse(why);
                    continue;
                }
            };
            let space = SeqSpace::new(batch.gateway.clone(), batch.epoch);
            let mut tracker = match self.tracker_for(&next, &space, batch.floor_seq, now) {
                Ok(t) => t,
                Err(why) => {
                    refuse(why);
                    continue;
                }
            };
            let received = batch.readings.len() as u64;
            // Receive time minus the agent's clock at sending (v1: unknown).
            let offset = (batch.sent_ms != 0).then(|| now.saturating_sub(batch.sent_ms));
            let accepted = match tracker.accept(batch, now, self.limit) {
                Ok(a) => a,
                Err(jump) => {
                    // Not acknowledged and nothing stored: an honest agent is
                    // not harmed (it resends), a broken or hostile one cannot
                    // make the collector ack what it never received.
                    tracing::warn!(gateway = %space.gateway, epoch = space.epoch, "rejected batch: {jump}");
                    refuse(Rejection::SeqJump);
                    continue;
                }
            };
            counters.batches.fetch_add(1, Relaxed);
            if accepted.skipped > 0 {
                tracing::warn!(gateway = %space.gateway, skipped = accepted.skipped, "agent reports readings it dropped before sending (buffer full)");
                counters.skipped.fetch_add(accepted.skipped, Relaxed);
            }
            next.insert(space.clone(), tracker);
            // After dedup: refused readings still move the sequence and are acked.
            let judged = self.ownership.judge(&space.gateway, accepted.fresh, &mut pending);
            if let Some(last) = judged.refused.last() {
                tracing::warn!(gateway = %space.gateway, owner = ?last.owners, sensor = %last.sensor, refused = judged.refused.len(), "refused readings: gateway {} does not own sensor {} (owned by {:?}); acknowledged, not stored", space.gateway, last.sensor, last.owners);
            }
            let mut fresh = judged.kept;
            let moved = self.judge_clock(&space.gateway, now, offset, &mut fresh);
            self.registry.clock(&space.gateway, offset.map(|o| (o, self.clocks.skewed(o))), moved);
            if let Some(offset_ms) = offset {
                // For `clock_skew` rules; like readings, never waited for.
                if self.links.rules.try_send(RuleInput::GatewayClock { gateway: space.gateway.to_string(), offset_ms }).is_err() {
                    counters.rules_lagged.fetch_add(1, Relaxed);
                }
            }
            outcomes.push(Outcome { space, fresh, received, duplicates: accepted.duplicates, refused: judged.refused });
        }
        if next.is_empty() {
            for s in settled {
                let _ = s.send(());
            }
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
            batches: outcomes.iter().map(|(o, fresh)| (o.space.gateway.to_string(), fresh.clone())).collect(),
            progress: next.iter().map(|(s, t)| (s.clone(), t.progress())).collect(),
            forget: Vec::new(),
        };
        // The rule engine gets the readings before they are written and
        // synced, so an alert does not wait for the disk; only the ack does.
        // Should the write or the sync fail, the readings come back from the
        // agents (their trackers have not moved) and are evaluated again; the
        // engine keeps one alert per key, so it does not fire twice. The live
        // feeds wait for the sync (below).
        for (o, fresh) in &outcomes {
            if !fresh.is_empty() && self.links.rules.try_send(RuleInput::Readings { gateway: o.space.gateway.to_string(), readings: fresh.clone() }).is_err() {
                counters.rules_lagged.fetch_add(1, Relaxed);
                counters.rules_lagged_readings.fetch_add(fresh.len() as u64, Relaxed);
            }
        }
        let store = self.store.clone();
        let bindings: Vec<(SensorId, GatewayId)> = pending.into_iter().collect();
        let bind = bindings.clone();
        let written = match tokio::task::spawn_blocking(move || store.bind(&bind).and_then(|_| store.write(&write))).await {
            Ok(w) => w,
            Err(e) if e.is_panic() => {
                tracing::error!("store write panicked; {} batch(es) not acknowledged, agents will resend", outcomes.len());
                counters.store_errors.fetch_add(1, Relaxed);
                self.health.store.failing("a write panicked");
                return;
            }
            // The runtime is being torn down.
            Err(_) => return,
        };
        if let Err(e) = written {
            // No ack: the agents keep the readings and send them again.
            tracing::error!("{e}; {} batch(es) not acknowledged, agents will resend", outcomes.len());
            counters.store_errors.fetch_add(1, Relaxed);
            self.health.store.failing(format!("write failed: {e}"));
            return;
        }
        let store = self.store.clone();
        let Ok(synced) = tokio::task::spawn_blocking(move || store.sync()).await else { return };
        if let Err(e) = synced {
            tracing::error!("{e}; {} batch(es) not acknowledged, agents will resend", outcomes.len());
            counters.store_errors.fetch_add(1, Relaxed);
            self.health.store.failing(format!("sync failed: {e}"));
            return;
        }
        self.health.store.progress();
        self.ownership.commit(bindings);
        for (o, fresh) in outcomes {
            // Live feeds carry only durable readings: published before the
            // sync, a reading that a crash then lost would be published again
            // when its agent resent it (the fault suite's power cuts saw
            // it), and a consumer could see a value the store never held.
            // The price is the sync's time on the feed's latency, not on
            // the alerts'.
            if !fresh.is_empty() {
                let _ = self.links.feed.send(FeedEvent::Readings(fresh.clone()));
            }
            if let Some(last) = o.refused.last() {
                counters.sensor_not_owned.fetch_add(o.refused.len() as u64, Relaxed);
                self.registry.refused(&o.space.gateway, o.refused.len() as u64, RefusedSensor { sensor: last.sensor.clone(), owners: last.owners.clone(), at_ms: now });
            }
            counters.received.fetch_add(o.received, Relaxed);
            counters.stored.fetch_add(fresh.len() as u64, Relaxed);
            counters.duplicate.fetch_add(o.duplicates, Relaxed);
            let acked = next[&o.space].ack();
            self.registry.stored(&o.space.gateway, o.space.epoch, &fresh, o.received, o.duplicates, acked);
        }
        self.links.forwarded.notify_one();
        // After the sync: the agent measures its clock against this.
        let ack_ms = self.clock.now_ms();
        for (space, t) in next {
            let (gw, seq, epoch) = (space.gateway.as_str(), t.ack(), space.epoch);
            let mac = self.admission.keys.get(gw).map(|k| shared::auth::ack_mac(k, gw, epoch, seq));
            let ack = serde_json::to_vec(&Ack { seq, epoch, mac, ts_ms: Some(ack_ms) }).expect("ack serializes");
            // QoS 0: an ack is cumulative, so a lost one is covered by the next
            // (or the agent resends after its ack timeout and the batch is
            // deduplicated). At QoS 1 the broker's PUBACK for it, sitting
            // unacknowledged on a socket without TCP_NODELAY (rumqttd's, or
            // Mosquitto's by default), held the next batch for that socket's
            // delayed ACK: ~40 ms, for anything from 1% to nearly all batches.
            if let Err(e) = self.links.acks.publish(topics::ack(gw), QoS::AtMostOnce, false, ack).await {
                tracing::warn!(gateway = %gw, "cannot queue ack: {e}");
            }
            self.trackers.insert(space, t);
        }
        for s in settled {
            let _ = s.send(());
        }
    }
}

impl Ingest {
    /// Applies the clock policy to one batch's fresh readings; how many were
    /// moved onto the collector's clock.
    fn judge_clock(&self, gateway: &str, now: i64, offset: Option<i64>, fresh: &mut [Reading]) -> u64 {
        let (mut moved, mut flagged) = (0u64, 0u64);
        let mut first_moved = None;
        for r in fresh.iter_mut() {
            let device_ms = r.ts_ms;
            match self.clocks.apply(now, offset, r) {
                Fix::Kept => {}
                Fix::Uncertain => flagged += 1,
                Fix::Moved => {
                    moved += 1;
                    first_moved.get_or_insert((device_ms, r.ts_ms));
                }
            }
        }
        if let Some((device, stored)) = first_moved {
            self.counters.clock_skew.fetch_add(moved, Relaxed);
            tracing::warn!(gateway, offset_ms = ?offset, moved, device_ms = device, stored_ms = stored, "readings with an implausible time moved onto the collector's clock: the gateway's clock is off");
        }
        if flagged > 0 {
            tracing::info!(gateway, flagged, "readings with an implausible time kept at their device time as uncertain (the gateway's clock is sound)");
        }
        moved
    }
}
