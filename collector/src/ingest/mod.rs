//! Ingest: admit → dedup → rules, then (`commit`) store → sync → ack → live view.
//!
//! Admission hands the rule engine a group's readings as soon as it has
//! judged them and goes on to the next group while `commit` makes the last
//! ones durable: an alert waits for no disk. The ack for a sequence is sent
//! only after the sync that made its readings durable, and names the outbox
//! epoch it is for. `admit` decides whether a message is a batch at all,
//! `dedup` which readings are new and how far a batch may move its sequence,
//! `ownership` which of them their gateway may speak for, `clock` what is
//! done with readings whose time cannot be right.

pub mod admit;
pub mod clock;
mod commit;
pub mod counters;
pub mod dedup;
pub mod ownership;
pub mod rate;
pub mod rejection;
pub mod settings;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rumqttc::AsyncClient;
use shared::clock::SharedClock;
use shared::Reading;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::catalogue::SensorEntry;
use crate::liveness::Heartbeat;
use crate::messages::{Bus, Incoming, IngestControl, MoveRefused, RuleInput, SeqSpaceView};
use crate::registry::Registry;
use crate::store::{SeqSpace, Store, StoreError, Write};
pub use admit::Admission;
use clock::{ClockPolicy, Fix};
use commit::{Admitted, Committed, Committer, InFlight, Outcome, ToCommit};
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
    rules: mpsc::Sender<RuleInput>,
    /// As admitted: ahead of the disk by what `commit` has not synced yet.
    trackers: HashMap<SeqSpace, Tracker>,
    /// As last committed: what admission falls back to when a commit fails.
    durable: HashMap<SeqSpace, Tracker>,
    /// Sensors bound by admitted groups whose commit has not landed.
    provisional: HashSet<SensorId>,
    /// Moves on with each failed commit; the commit stage drops what was
    /// admitted in a generation that failed.
    generation: u64,
    pipe: Pipe,
    admission: Admission,
    limit: JumpLimit,
    clock: SharedClock,
    health: Health,
    ownership: Ownership,
    /// Where bindings made here go (cluster mode, log shared by partition).
    claims: Option<ClaimsOut>,
    clocks: ClockPolicy,
}

/// Whom to believe: the catalogue (which gateway owns which sensor) and the
/// clock policy for readings whose time cannot be right.
pub struct Trust {
    pub catalogue: Arc<Vec<SensorEntry>>,
    pub clocks: ClockPolicy,
}

/// The way to the commit stage and back.
struct Pipe {
    to_commit: mpsc::UnboundedSender<ToCommit>,
    news: mpsc::UnboundedReceiver<Committed>,
    room: Arc<Semaphore>,
    /// The room's permits in all: a group wants at most this many.
    room_size: usize,
    in_flight: Arc<InFlight>,
    /// Until `run` starts it.
    committer: Option<(Committer, mpsc::UnboundedReceiver<ToCommit>, mpsc::UnboundedSender<Committed>)>,
}

/// What ingest reports about itself and about the store it writes.
#[derive(Clone)]
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
    /// Readings admitted and not yet committed, at most (`ingest.in_flight_readings`).
    pub in_flight_readings: usize,
}

/// How sequences may move, and the clock they are judged by.
pub struct Sequencing {
    pub limit: JumpLimit,
    pub clock: SharedClock,
}

/// Where ingest sends what it has accepted.
pub struct Links {
    /// A connection of their own: see `Committer::acks`.
    pub acks: AsyncClient,
    /// Accepted readings go on to the rule engine (never waited for) and the feeds.
    pub rules: mpsc::Sender<RuleInput>,
    pub feed: Bus,
    /// Wakes the external sink when the forward log has grown.
    pub forwarded: Arc<tokio::sync::Notify>,
    /// Where delivery progress is kept beyond this store: see `ProgressOut`.
    pub progress: Option<ProgressOut>,
    /// Where the sensor bindings made here go to be kept beyond this store (`ownership::Claim`).
    pub claims: Option<ClaimsOut>,
}

pub type ClaimsOut = mpsc::UnboundedSender<ownership::Claim>;

/// Where each commit's delivery progress goes, and is confirmed, before its
/// batches are acknowledged (to agents and to the cluster's log): the
/// cluster's key-value store, when collectors share the log by partition
/// (`crate::cluster::progress`), so the next holder of a gateway's partition
/// goes on from where this collector left it.
pub type ProgressOut = mpsc::Sender<(Vec<(SeqSpace, crate::store::Progress)>, tokio::sync::oneshot::Sender<()>)>;

impl Ingest {
    pub fn new(store: Arc<dyn Store>, registry: Arc<Registry>, counters: Arc<Counters>, links: Links, policy: Policy, health: Health) -> Result<Ingest, StoreError> {
        let Policy { admission, sequencing: Sequencing { limit, clock }, trust, in_flight_readings } = policy;
        let Links { acks, rules, feed, forwarded, progress, claims } = links;
        let ownership = Ownership::new(&trust.catalogue, store.bindings()?);
        let now = clock.now_ms();
        let mut trackers = HashMap::new();
        for (space, p) in store.progress()? {
            let t = Tracker::from_progress(&p, now);
            registry.seed_gateway(&space.gateway, space.epoch, t.ack(), t.heard_ms());
            trackers.insert(space, t);
        }
        let (to_commit, commit_rx) = mpsc::unbounded_channel();
        let (news_tx, news) = mpsc::unbounded_channel();
        let in_flight = Arc::new(InFlight::default());
        let committer = Committer {
            store: store.clone(),
            registry: registry.clone(),
            counters: counters.clone(),
            acks,
            feed,
            forwarded,
            health: health.clone(),
            in_flight: in_flight.clone(),
            clock: clock.clone(),
            keys: admission.keys.clone(),
            poisoned: None,
            progress,
        };
        let pipe = Pipe {
            to_commit,
            news,
            room: Arc::new(Semaphore::new(in_flight_readings)),
            room_size: in_flight_readings,
            in_flight,
            committer: Some((committer, commit_rx, news_tx)),
        };
        Ok(Ingest {
            store,
            registry,
            counters,
            rules,
            durable: trackers.clone(),
            trackers,
            provisional: HashSet::new(),
            generation: 0,
            pipe,
            admission,
            limit,
            clock,
            health,
            ownership,
            claims,
            clocks: trust.clocks,
        })
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Incoming>, mut control: mpsc::Receiver<IngestControl>) {
        let _alive = self.health.ingest.alive();
        let (committer, commit_rx, news_tx) = self.pipe.committer.take().expect("ingest runs once");
        let committing = tokio::spawn(committer.run(commit_rx, news_tx));
        loop {
            if !rx.is_empty() {
                self.health.ingest.pending(true);
            }
            let first = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => break },
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
            if !self.handle(group).await {
                self.health.ingest.progress();
            }
            if self.pipe.in_flight.idle() && rx.is_empty() {
                self.health.ingest.pending(false);
            }
        }
        // What was admitted is still committed and acked.
        drop(self.pipe.to_commit);
        let _ = committing.await;
    }

    /// Waits until everything admitted is committed (or dropped by a failed
    /// commit), and takes in what the commit stage said.
    async fn flush(&mut self) {
        let (reply, done) = oneshot::channel();
        if self.pipe.to_commit.send(ToCommit::Flush(reply)).is_ok() {
            let _ = done.await;
        }
        self.take_news();
    }

    fn take_news(&mut self) {
        while let Ok(news) = self.pipe.news.try_recv() {
            match news {
                Committed::Durable { trackers, bindings } => {
                    self.durable.extend(trackers);
                    for (sensor, gateway) in bindings {
                        self.provisional.remove(&sensor);
                        self.claim(ownership::Claim::First(sensor, gateway));
                    }
                }
                Committed::Failed { generation } if generation == self.generation => {
                    // Admitted on top of readings the store does not have:
                    // the agents resend them, and must not find them deduplicated.
                    self.trackers = self.durable.clone();
                    for sensor in self.provisional.drain() {
                        self.ownership.unbind(&sensor);
                    }
                    self.generation += 1;
                }
                Committed::Failed { .. } => {}
            }
        }
    }

    async fn control(&mut self, c: IngestControl) {
        // Operators act on what is stored; the cluster's bindings judge what
        // comes next, whatever is in flight.
        if !matches!(c, IngestControl::Bound { .. }) {
            self.flush().await;
        }
        match c {
            IngestControl::Progress { gateway, reply } => {
                let mut spaces: Vec<SeqSpaceView> = self
                    .durable
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
                            self.durable.remove(s);
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
            IngestControl::Bound { bindings } => self.adopt_bindings(bindings).await,
            IngestControl::Adopt { progress, reply } => {
                let now = self.clock.now_ms();
                for (space, p) in progress {
                    // Further on here (this collector held the partition after
                    // the one that wrote it) stays; behind is brought forward.
                    if self.durable.get(&space).is_none_or(|t| t.ack().get() < p.contiguous) {
                        let t = Tracker::from_progress(&p, now);
                        self.registry.seed_gateway(&space.gateway, space.epoch, t.ack(), t.heard_ms());
                        self.trackers.insert(space.clone(), t.clone());
                        self.durable.insert(space, t);
                    }
                }
                let _ = reply.send(());
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
        self.claim(ownership::Claim::Moved(sensor, gateway));
        Ok(before)
    }

    fn claim(&self, claim: ownership::Claim) {
        if let Some(out) = &self.claims {
            let _ = out.send(claim);
        }
    }

    /// Takes the bindings the cluster keeps where they differ from this
    /// collector's, and stores them: the cluster's first claim wins.
    async fn adopt_bindings(&mut self, bindings: Vec<(SensorId, GatewayId)>) {
        let mut changed = Vec::new();
        for (sensor, gateway) in bindings {
            if let Some(before) = self.ownership.adopt(sensor.clone(), gateway.clone()) {
                if let Some(b) = before {
                    tracing::warn!(sensor = %sensor, here = %b, cluster = %gateway, "the cluster binds this sensor to another gateway than this collector did: its readings from {b} are refused from now on");
                }
                changed.push((sensor, gateway));
            }
        }
        if changed.is_empty() {
            return;
        }
        let store = self.store.clone();
        // Kept for a restart, durable with the next commit's sync; the cluster
        // keeps them anyway, so a failed write costs nothing but a log line.
        match tokio::task::spawn_blocking(move || store.bind(&changed)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("sensor bindings from the cluster not stored here: {e}"),
            Err(_) => {}
        }
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

    /// Admits one group and hands it to the commit stage; whether there was
    /// anything to hand over.
    async fn handle(&mut self, group: Vec<Incoming>) -> bool {
        self.take_news();
        let counters = self.counters.clone();
        let now = self.clock.now_ms();
        // This group's trackers, kept as they were after it for the commit.
        let mut next: HashMap<SeqSpace, Tracker> = HashMap::new();
        let mut outcomes: Vec<Outcome> = Vec::new();
        // First-heard sensors of this group, bound once the group is stored.
        let mut pending: HashMap<SensorId, GatewayId> = HashMap::new();
        // Told once every batch of the group is stored or refused; dropped
        // untold when a failed commit leaves it to be delivered again.
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
                if self.rules.try_send(RuleInput::GatewayClock { gateway: space.gateway.to_string(), offset_ms }).is_err() {
                    counters.rules_lagged.fetch_add(1, Relaxed);
                }
            }
            outcomes.push(Outcome { space, fresh: Arc::new(fresh), received, duplicates: accepted.duplicates, refused: judged.refused });
        }
        if next.is_empty() && settled.is_empty() {
            return false;
        }
        // The rule engine gets the readings before they are written and
        // synced, so an alert does not wait for the disk; only the ack does.
        // Should the write or the sync fail, the readings come back from the
        // agents (their trackers go back to the last commit) and are
        // evaluated again; the engine keeps one alert per key, so it does not
        // fire twice. The live feeds wait for the sync (`commit`).
        let mut readings = 0;
        for o in &outcomes {
            readings += o.fresh.len();
            if !o.fresh.is_empty() && self.rules.try_send(RuleInput::Readings { gateway: o.space.gateway.to_string(), readings: o.fresh.clone() }).is_err() {
                counters.rules_lagged.fetch_add(1, Relaxed);
                counters.rules_lagged_readings.fetch_add(o.fresh.len() as u64, Relaxed);
            }
        }
        let bindings: Vec<(SensorId, GatewayId)> = pending.into_iter().collect();
        // Bound now, so the next group judges by them; undone if the commit fails.
        self.provisional.extend(bindings.iter().map(|(s, _)| s.clone()));
        self.ownership.commit(bindings.iter().cloned());
        self.trackers.extend(next.iter().map(|(s, t)| (s.clone(), t.clone())));
        let want = readings.clamp(1, self.pipe.room_size) as u32;
        let Ok(room) = self.pipe.room.clone().acquire_many_owned(want).await else { return false };
        self.pipe.in_flight.sent(&self.health);
        let admitted = Admitted { generation: self.generation, outcomes, trackers: next, bindings, settled, now, _room: room };
        if self.pipe.to_commit.send(ToCommit::Group(admitted)).is_err() {
            tracing::error!("the commit stage has stopped; nothing more is stored or acknowledged");
        }
        true
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
