//! Sharing the work: which partitions of the batch log this collector reads,
//! when the log is split (`cluster.partitions`). Each partition is held by
//! one collector at a time, through a lease in the cluster's key-value store
//! (bucket `citysense_cluster`, key `partition.<p>`): taken with a create
//! that only one collector can win, renewed every second with the revision
//! held, expiring 5 s after its holder's last renewal. Each collector also
//! renews `member.<name>`, so all know how many share the log: each takes
//! free partitions up to its fair share (⌈partitions / members⌉) and lets
//! go of those above it, so a collector that joins is given work and the
//! partitions of one that died are taken within seconds of its leases
//! expiring.
//!
//! Letting go is ordered so nothing is read twice or skipped: the reader
//! stops taking batches, waits until those in hand are settled (stored and
//! acknowledged to the log), and only then is the lease deleted; the next
//! holder starts after the last acknowledged batch. A holder that dies
//! leaves batches in hand unacknowledged: the next one reads them again,
//! after the partition's delivery progress (`super::progress`), so one the
//! dead holder stored and recorded is counted a duplicate; only one stored
//! in the instant between its sync and its progress reaching the cluster
//! is stored by both (each store once).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::holdings::Holdings;
use super::log::Link;
use super::partition::Partitions;
use super::speaker::LEASE;
use crate::liveness::Heartbeat;
use crate::messages::{Incoming, IngestControl};
use crate::rules::alerting::Alerting;

const RENEW: Duration = Duration::from_secs(1);
/// How long letting go may wait for the batches in hand before the lease is
/// deleted anyway (the next holder reads those again).
const DRAIN: Duration = Duration::from_secs(30);

/// A partition held: the lease's revision, and its reader.
struct Held {
    revision: u64,
    /// When the lease was last renewed (or taken).
    renewed: Instant,
    leaving: watch::Sender<bool>,
    reader: JoinHandle<()>,
    left_at: Option<Instant>,
}

/// Where a held partition's batches go, and before them its delivery
/// progress (`super::progress`) and open alerts (`super::alerts`).
#[derive(Clone)]
pub struct Work {
    pub batches: mpsc::Sender<Incoming>,
    pub control: mpsc::Sender<IngestControl>,
    pub alerting: Arc<Alerting>,
}

/// Takes, keeps and lets go of partitions until `stop`, handing each held
/// one to `work`; on `stop`, lets go of all of them, so the others take them
/// at once rather than when the leases expire. `beat` fails, with why, while
/// the cluster cannot be reached or the log is not split as configured.
pub async fn run(link: Link, name: String, holdings: Arc<Holdings>, work: Work, beat: Arc<Heartbeat>, mut stop: watch::Receiver<bool>) {
    let _alive = beat.alive();
    loop {
        let outcome = hold(&link, &name, &holdings, &work, &beat, &mut stop).await;
        holdings.clear();
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!("partitions of the batch log: {e}; trying again in 2 s");
                beat.failing(format!("holds no partition of the batch log: {e}"));
            }
        }
        if !super::wait_to_retry(&mut stop).await {
            return;
        }
    }
}

async fn hold(link: &Link, name: &str, holdings: &Arc<Holdings>, work: &Work, beat: &Heartbeat, stop: &mut watch::Receiver<bool>) -> Result<(), async_nats::Error> {
    let client = tokio::select! {
        c = link.connect("citysense-collector-partitions") => c?,
        _ = stop.changed() => return Ok(()),
    };
    let js = jetstream::new(client.clone());
    // Split otherwise than configured, the log would be read wrong: refused before any lease is taken.
    link.log(&js).await?;
    let leases = super::leases(&js, link).await?;
    let mut news = leases.watch_all().await?;
    let mut turn = Turn { link, name, holdings, work, client: &client, leases: &leases, seen: HashMap::new(), held: BTreeMap::new() };
    let mut tick = tokio::time::interval(RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome: Result<(), async_nats::Error> = loop {
        tokio::select! {
            e = news.next() => match e {
                Some(Ok(e)) => turn.heard(e),
                Some(Err(e)) => break Err(e.into()),
                None => break Err("the lease watch ended".into()),
            },
            _ = tick.tick() => match turn.renew_and_balance().await {
                None => beat.progress(),
                Some(why) => beat.failing(why),
            },
            _ = stop.changed() => break Ok(()),
        }
    };
    match outcome {
        Ok(()) => turn.let_go_of_all().await,
        // Cut off from the cluster: the leases expire; readers stop now.
        Err(_) => turn.held.values().for_each(|h| h.reader.abort()),
    }
    outcome
}

struct Turn<'a> {
    link: &'a Link,
    name: &'a str,
    holdings: &'a Arc<Holdings>,
    work: &'a Work,
    client: &'a async_nats::Client,
    leases: &'a kv::Store,
    /// When each key of the bucket was last written, as this collector heard it.
    seen: HashMap<String, Instant>,
    held: BTreeMap<u32, Held>,
}

fn partition_key(p: u32) -> String {
    format!("partition.{p}")
}

impl Turn<'_> {
    fn heard(&mut self, e: kv::Entry) {
        match e.operation {
            kv::Operation::Put => {
                self.seen.insert(e.key, Instant::now());
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.seen.remove(&e.key);
            }
        }
    }

    /// Whether `key` was renewed within a lease: expiry leaves no trace in a watch.
    fn alive(&self, key: &str) -> bool {
        self.seen.get(key).is_some_and(|at| at.elapsed() < LEASE)
    }

    /// One turn. A request the cluster does not answer (a node dying, a
    /// leader being elected) is tried again next turn: the leases held stay
    /// held while they can still be renewed in time (`renew`).
    /// Returns why not, when the cluster did not answer this collector's
    /// place in the count.
    async fn renew_and_balance(&mut self) -> Option<String> {
        let unanswered = match self.leases.put(format!("member.{}", self.name), self.name.to_string().into()).await {
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(collector = self.name, "cannot renew this collector's place in the count: {e}");
                Some(format!("the cluster does not answer: {e}"))
            }
        };
        self.renew().await;
        self.finish_letting_go().await;
        let mut alive: Vec<String> = self.seen.keys().filter(|k| self.alive(k)).filter_map(|k| k.strip_prefix("member.")).map(str::to_string).collect();
        alive.sort_unstable();
        let members = alive.len().max(1);
        self.holdings.counted(alive, self.name);
        let count = self.holdings.partitions().count();
        let fair = count.div_ceil(members as u32) as usize;
        let mut keeping: Vec<u32> = self.held.iter().filter(|(_, h)| h.left_at.is_none()).map(|(p, _)| *p).collect();
        if keeping.len() > fair {
            for p in keeping.split_off(fair) {
                self.let_go(p);
            }
        }
        if keeping.len() < fair {
            // Collectors start their search at different places, so they seldom race for one lease.
            let first = Partitions::new(count).of(self.name);
            for p in (0..count).map(|i| (first + i) % count) {
                if keeping.len() >= fair {
                    break;
                }
                if self.held.contains_key(&p) || self.alive(&partition_key(p)) {
                    continue;
                }
                match self.take(p).await {
                    Ok(true) => keeping.push(p),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(partition = p, "cannot take partition {p} of the batch log: {e}");
                        break;
                    }
                }
            }
        }
        unanswered
    }

    /// Renews every lease held. One refused (another revision: another
    /// collector holds the partition now), or not renewed for so long that it
    /// may have expired, is lost: its reader stops at once. One the cluster
    /// did not answer about is tried again next turn.
    async fn renew(&mut self) {
        let ps: Vec<u32> = self.held.keys().copied().collect();
        for p in ps {
            let revision = self.held[&p].revision;
            match self.leases.update(partition_key(p), self.name.to_string().into(), revision).await {
                Ok(r) => {
                    let h = self.held.get_mut(&p).expect("held");
                    (h.revision, h.renewed) = (r, Instant::now());
                }
                Err(e) if e.kind() != kv::UpdateErrorKind::WrongLastRevision && self.held[&p].renewed.elapsed() < LEASE - RENEW => {
                    tracing::warn!(partition = p, "cannot renew the lease on partition {p} of the batch log: {e}; trying again");
                }
                Err(e) => {
                    tracing::warn!(partition = p, "lost partition {p} of the batch log: {e}");
                    self.holdings.set(p, false);
                    if let Some(h) = self.held.remove(&p) {
                        h.reader.abort();
                    }
                }
            }
        }
    }

    async fn take(&mut self, p: u32) -> Result<bool, async_nats::Error> {
        match self.leases.create(partition_key(p), self.name.to_string().into()).await {
            Ok(revision) => {
                let (leaving, mut left) = watch::channel(false);
                let (link, client, work, holdings) = (self.link.clone(), self.client.clone(), self.work.clone(), self.holdings.clone());
                let reader = tokio::spawn(async move {
                    loop {
                        let read = async {
                            let alerts = super::alerts::take_over(&link, &client, p, &work.alerting, &holdings).await?;
                            let gateways = super::progress::adopt(&link, &client, p, &work.control).await?;
                            tracing::info!(partition = p, alerts, gateways, "took over partition {p}'s open alerts and delivery progress");
                            link.read_partition(&client, p, &work.batches, &mut left).await
                        };
                        match read.await {
                            Ok(()) => return,
                            Err(e) => tracing::warn!(partition = p, "partition {p} of the batch log: {e}; reading again in 2 s"),
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                            _ = super::log::told_to_leave(&mut left) => return,
                        }
                    }
                });
                self.holdings.set(p, true);
                self.held.insert(p, Held { revision, renewed: Instant::now(), leaving, reader, left_at: None });
                tracing::info!(partition = p, collector = self.name, "took partition {p} of the batch log");
                Ok(true)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops reading `p`; the lease goes once the batches in hand are settled.
    fn let_go(&mut self, p: u32) {
        if let Some(h) = self.held.get_mut(&p) {
            self.holdings.set(p, false);
            let _ = h.leaving.send(true);
            h.left_at = Some(Instant::now());
            tracing::info!(partition = p, collector = self.name, "letting go of partition {p} of the batch log");
        }
    }

    /// Deletes the leases of partitions whose readers have settled all they took.
    async fn finish_letting_go(&mut self) {
        let done: Vec<u32> = self.held.iter().filter(|(_, h)| h.left_at.is_some_and(|at| h.reader.is_finished() || at.elapsed() > DRAIN)).map(|(p, _)| *p).collect();
        for p in done {
            let h = self.held.remove(&p).expect("held");
            h.reader.abort();
            if let Err(e) = self.leases.delete(partition_key(p)).await {
                // It expires on its own within a lease.
                tracing::warn!(partition = p, "cannot hand partition {p} back: {e}");
            }
        }
    }

    /// At stop: lets go of every partition, waiting up to 5 s for the
    /// batches in hand, so the others take them now rather than when the
    /// leases expire.
    async fn let_go_of_all(&mut self) {
        // Gone from the count first, so the others' fair share grows at once.
        if let Err(e) = self.leases.delete(format!("member.{}", self.name)).await {
            tracing::warn!("cannot leave the cluster's count of collectors: {e}");
        }
        let ps: Vec<u32> = self.held.keys().copied().collect();
        for p in ps {
            self.let_go(p);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for (p, mut h) in std::mem::take(&mut self.held) {
            if tokio::time::timeout_at(deadline, &mut h.reader).await.is_err() {
                h.reader.abort();
            }
            if let Err(e) = self.leases.delete(partition_key(p)).await {
                tracing::warn!(partition = p, "cannot hand partition {p} back: {e}");
            }
        }
    }
}
