//! The batch log: a JetStream stream of every `citysense/v1/up/<gateway>`
//! batch (NATS subject `citysense.v1.up.<gateway>`), replicated on
//! `cluster.replicas` nodes. Every collector reads all of it from where its
//! own store is (`applied`), through a durable consumer of its own
//! (`collector-<name>`, replicated like the stream, so it outlives the node
//! it is on), made anew from that place each time the collector starts: so
//! each stores the whole city and serves it, a collector that was down
//! catches up from the log alone, and one started on an empty disk reads the
//! log from its start. A batch is acknowledged to the log once ingest has
//! stored and synced it, or refused it for good; a store failure sends back
//! every batch not yet settled, to be delivered again a second later, as an
//! agent's resend would.
//!
//! Split into partitions (`cluster.partitions`, `super::partition`), the log
//! is read one partition at a time instead: through a durable consumer per
//! partition (`partition-<p>`), shared by whichever collector holds the
//! partition (`super::assignment`), whose acknowledged place is the
//! partition's progress, kept on the cluster rather than on any collector's disk.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy, stream};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::applied::{Applied, Pending};
use super::partition::{self, Partitions};
use super::{ClusterConfig, ClusterError};
use crate::messages::Incoming;

pub const STREAM: &str = "CITYSENSE_UP";
use super::partition::SUBJECTS;
/// Batches handed to ingest and not yet settled, at most.
const IN_FLIGHT: usize = 4096;
/// How long a delivered batch may stay unsettled before the log delivers it again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// How to reach the cluster, resolved once at start.
#[derive(Clone)]
pub struct Link {
    addrs: Vec<async_nats::ServerAddr>,
    login: Option<(String, String)>,
    replicas: usize,
    keep: Duration,
    applied: PathBuf,
    name: String,
    partitions: u32,
}

impl Link {
    /// `mqtt_login`: the collector's MQTT login, used when `[cluster]` names
    /// none; `data`: the collector's data directory, where its place in the log is kept.
    pub fn new(config: &ClusterConfig, mqtt_login: Option<(String, String)>, data: &std::path::Path) -> Result<Link, ClusterError> {
        let addrs =
            config.nats.iter().map(|a| a.parse().map_err(|e: std::io::Error| ClusterError::Address { addr: a.clone(), reason: e.to_string() })).collect::<Result<_, _>>()?;
        let login = match (&config.username, &config.password_file) {
            (Some(u), Some(f)) => {
                let p = std::fs::read_to_string(f).map_err(|source| ClusterError::PasswordFile { path: f.clone(), source })?;
                Some((u.clone(), p.trim().to_string()))
            }
            _ => mqtt_login,
        };
        let applied = data.join("batch-log-applied");
        // Read once now, so a damaged file stops the start with its name.
        Applied::open(&applied).map_err(|source| ClusterError::Progress { path: applied.clone(), source })?;
        Ok(Link { addrs, login, replicas: config.replicas, keep: config.keep.0, applied, name: config.name(), partitions: config.partitions })
    }

    /// The partitions the log is split into; `None` when every collector reads all of it.
    pub fn partitions(&self) -> Option<Partitions> {
        (self.partitions > 0).then(|| Partitions::new(self.partitions))
    }

    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// How long the cluster's streams keep what they hold.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// A connection to the cluster, named `name` in its monitoring.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        self.options(name).connect(self.addrs.clone()).await
    }

    /// As `connect`, not hearing what it publishes itself on what it subscribes to.
    pub async fn connect_deaf_to_itself(&self, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        self.options(name).no_echo().connect(self.addrs.clone()).await
    }

    fn options(&self, name: &str) -> async_nats::ConnectOptions {
        let options = async_nats::ConnectOptions::new().name(name).retry_on_initial_connect();
        match &self.login {
            Some((u, p)) => options.user_and_password(u.clone(), p.clone()),
            None => options,
        }
    }

    /// The stream `name` of `subjects`, made if it is missing: replicated and
    /// kept as `[cluster]` says, on disk.
    pub async fn stream(&self, js: &jetstream::Context, name: &str, subjects: &str) -> Result<stream::Stream, async_nats::Error> {
        Ok(js.get_or_create_stream(self.stream_config(name, subjects)).await?)
    }

    fn stream_config(&self, name: &str, subjects: &str) -> stream::Config {
        stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            num_replicas: self.replicas,
            max_age: self.keep,
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }

    /// The batch log, made if it is missing (split as `cluster.partitions`
    /// says); refused when an existing one is split otherwise, since a
    /// collector reading it by another count would miss or repeat batches.
    pub async fn log(&self, js: &jetstream::Context) -> Result<stream::Stream, async_nats::Error> {
        let mut config = self.stream_config(STREAM, SUBJECTS);
        config.subject_transform = self.partitions().map(Partitions::transform);
        let log = js.get_or_create_stream(config).await?;
        let split = Partitions::of_transform(log.cached_info().config.subject_transform.as_ref()).unwrap_or(0);
        if split != self.partitions {
            return Err(format!(
                "the batch log {STREAM} is split into {split} partitions (0: not split) but cluster.partitions is {}: every collector of a cluster must say the same; \
                 to change it, let every collector catch up, stop them, delete the stream and the buckets citysense_progress and citysense_alerts, and start them with the new count (deploy/README.md, \"Sharing the work\")",
                self.partitions
            )
            .into());
        }
        Ok(log)
    }

    /// This collector's durable consumer `config` of `stream`: made anew
    /// while `fresh` (at start, when its place may not be the one the
    /// cluster kept), else the one the cluster has.
    pub async fn consumer(&self, stream: &stream::Stream, mut config: pull::Config, fresh: &mut bool) -> Result<jetstream::consumer::PullConsumer, async_nats::Error> {
        let name = config.durable_name.clone().expect("a durable consumer");
        // A collector gone for longer than the stream keeps anything has nothing left to read.
        config.inactive_threshold = self.keep;
        if *fresh {
            if stream.delete_consumer(&name).await.is_ok() {
                tracing::info!(consumer = %name, "consumer made anew at this collector's place");
            }
            let c = stream.create_consumer(config).await?;
            *fresh = false;
            Ok(c)
        } else {
            Ok(stream.get_or_create_consumer(&name, config).await?)
        }
    }

    /// Reads the log into `ingest` until `stop`: (re)connects, creates the
    /// stream if it is missing, and keeps trying while the cluster cannot be
    /// reached or the store cannot take a batch; `beat` failing, with why,
    /// meanwhile.
    pub async fn run(self, ingest: mpsc::Sender<Incoming>, beat: std::sync::Arc<crate::liveness::Heartbeat>, mut stop: watch::Receiver<bool>) {
        let _alive = beat.alive();
        let client = tokio::select! {
            c = self.connect("citysense-collector") => c,
            _ = stop.changed() => return,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("batch log: cannot connect: {e}");
                return;
            }
        };
        let mut fresh = true;
        loop {
            let outcome = tokio::select! {
                r = self.read(&client, &ingest, &beat, &mut fresh) => r,
                _ = stop.changed() => return,
            };
            let Err(e) = outcome else { return };
            tracing::warn!("batch log: {e}; reading again in 2 s");
            beat.failing(format!("not reading the batch log: {e}"));
            if !super::wait_to_retry(&mut stop).await {
                return;
            }
        }
    }

    /// `fresh`: the consumer is still to be made anew at this store's place.
    async fn read(&self, client: &async_nats::Client, ingest: &mpsc::Sender<Incoming>, beat: &crate::liveness::Heartbeat, fresh: &mut bool) -> Result<(), async_nats::Error> {
        let mut applied = Applied::open(&self.applied)?;
        let js = jetstream::new(client.clone());
        let log = self.log(&js).await?;
        let last = log.cached_info().state.last_sequence;
        if applied.upto() > last {
            // Our place is past the log's end: the stream was made anew (a
            // new cluster, or deleted by hand). Its batches are all new to us.
            tracing::warn!(stream = STREAM, applied = applied.upto(), last, "the batch log is shorter than this store's place in it: it was made anew; reading it from its start");
            applied.reset()?;
        }
        let from = applied.upto() + 1;
        let name = format!("collector-{}", self.name);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: IN_FLIGHT as i64,
            ..Default::default()
        };
        // Left from an earlier run, its place may not be this store's (an
        // emptied disk, a restored one): made anew where the store is.
        let consumer = self.consumer(&log, config, fresh).await?;
        tracing::info!(stream = STREAM, consumer = %name, replicas = self.replicas, from, "reading the batch log");
        beat.progress();
        pump(consumer.messages().await?, ingest, |seq| applied.settled(seq), None).await
    }

    /// Reads partition `p` of the log into `ingest`, from where the last
    /// collector to hold it left it settled, until `leaving`: then takes no
    /// more and returns once every batch in hand is settled, so the next
    /// holder starts where this one stopped.
    pub async fn read_partition(&self, client: &async_nats::Client, p: u32, ingest: &mpsc::Sender<Incoming>, leaving: &mut watch::Receiver<bool>) -> Result<(), async_nats::Error> {
        let js = jetstream::new(client.clone());
        let log = self.log(&js).await?;
        let name = format!("partition-{p}");
        // Its place: after everything settled; batches handed out and not
        // settled (their holder died, or let go without settling them) come
        // again now, not after ACK_WAIT, and in order.
        let from = match log.consumer_info(&name).await {
            Ok(info) => {
                let started = match info.config.deliver_policy {
                    DeliverPolicy::ByStartSequence { start_sequence } => start_sequence,
                    _ => 1,
                };
                Some((info.ack_floor.stream_sequence + 1).max(started))
            }
            // Never read: from the partition's start.
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => None,
            // Not known now (a node electing a leader): read from the start, this would repeat the partition.
            Err(e) => return Err(e.into()),
        };
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: Partitions::filter(p),
            deliver_policy: from.map_or(DeliverPolicy::All, |start_sequence| DeliverPolicy::ByStartSequence { start_sequence }),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: IN_FLIGHT as i64,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let _ = log.delete_consumer(&name).await;
        let consumer = log.create_consumer(config).await?;
        tracing::info!(stream = STREAM, consumer = %name, from = from.unwrap_or(1), "reading partition {p} of the batch log");
        pump(consumer.messages().await?, ingest, |_| {}, Some(leaving)).await
    }
}

/// Whether `leaving` came true (false: its sender is gone).
pub(super) async fn told_to_leave(leaving: &mut watch::Receiver<bool>) -> bool {
    let told = leaving.wait_for(|l| *l).await.is_ok();
    told
}

/// Hands each batch `messages` delivers to ingest and lets the log know its
/// fate once ingest has settled it, in log order (`settled` hears the stream
/// sequence of each run settled), until `leaving`: then takes no more and
/// returns once those in hand are settled. A store failure sends every batch
/// not yet settled back to the log, to come again a second later.
async fn pump(
    mut messages: pull::Stream,
    ingest: &mpsc::Sender<Incoming>,
    mut settled: impl FnMut(u64),
    mut leaving: Option<&mut watch::Receiver<bool>>,
) -> Result<(), async_nats::Error> {
    let mut pending = Pending::default();
    let mut taking = true;
    loop {
        tokio::select! {
            m = messages.next(), if taking && pending.len() < IN_FLIGHT => {
                let Some(m) = m else { return Err("the batch log's consumer ended".into()) };
                let m = m?;
                let info = m.info()?;
                let (seq, logged_ms) = (info.stream_sequence, (info.published.unix_timestamp_nanos() / 1_000_000) as i64);
                let (settle, told) = oneshot::channel();
                let Some(gateway) = partition::gateway_of(m.subject.as_str()).map(str::to_string) else {
                    let _ = settle.send(());
                    pending.push(seq, told, m);
                    continue;
                };
                if ingest.send(Incoming { gateway, payload: m.payload.clone(), settled: Some(settle), logged_ms: Some(logged_ms) }).await.is_err() {
                    return Ok(());
                }
                pending.push(seq, told, m);
            }
            r = pending.settle(), if !pending.is_empty() => match r {
                Ok((done, last)) => {
                    settled(last);
                    for m in done {
                        if let Err(e) = m.ack().await {
                            // Delivered again after ACK_WAIT; ingest deduplicates it.
                            tracing::warn!("batch log: cannot acknowledge a batch: {e}");
                        }
                    }
                }
                Err(not) => {
                    // Not stored: this and every later batch come again.
                    for m in pending.drain() {
                        let _ = m.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1)))).await;
                    }
                    return Err(format!("batch {} of the log not stored", not.0).into());
                }
            },
            told = async {
                match leaving.as_deref_mut() {
                    Some(l) => told_to_leave(l).await,
                    None => std::future::pending().await,
                }
            }, if taking => {
                if !told {
                    return Ok(());
                }
                taking = false;
            }
        }
        if !taking && pending.is_empty() {
            return Ok(());
        }
    }
}
