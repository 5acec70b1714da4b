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

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy, stream};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::applied::{Applied, Pending};
use super::{ClusterConfig, ClusterError};
use crate::messages::Incoming;

pub const STREAM: &str = "CITYSENSE_UP";
/// NATS's name for the MQTT topics `citysense/v1/up/+`.
pub const SUBJECTS: &str = "citysense.v1.up.*";
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
        Ok(Link { addrs, login, replicas: config.replicas, keep: config.keep.0, applied, name: config.name() })
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
        let mut options = async_nats::ConnectOptions::new().name(name).retry_on_initial_connect();
        if let Some((u, p)) = &self.login {
            options = options.user_and_password(u.clone(), p.clone());
        }
        options.connect(self.addrs.clone()).await
    }

    /// The stream `name` of `subjects`, made if it is missing: replicated and
    /// kept as `[cluster]` says, on disk.
    pub async fn stream(&self, js: &jetstream::Context, name: &str, subjects: &str) -> Result<stream::Stream, async_nats::Error> {
        let config = stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            num_replicas: self.replicas,
            max_age: self.keep,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        Ok(js.get_or_create_stream(config).await?)
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
    /// reached or the store cannot take a batch.
    pub async fn run(self, ingest: mpsc::Sender<Incoming>, mut stop: watch::Receiver<bool>) {
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
                r = self.read(&client, &ingest, &mut fresh) => r,
                _ = stop.changed() => return,
            };
            let Err(e) = outcome else { return };
            tracing::warn!("batch log: {e}; reading again in 2 s");
            if !super::wait_to_retry(&mut stop).await {
                return;
            }
        }
    }

    /// `fresh`: the consumer is still to be made anew at this store's place.
    async fn read(&self, client: &async_nats::Client, ingest: &mpsc::Sender<Incoming>, fresh: &mut bool) -> Result<(), async_nats::Error> {
        let mut applied = Applied::open(&self.applied)?;
        let js = jetstream::new(client.clone());
        let log = self.stream(&js, STREAM, SUBJECTS).await?;
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
        let mut messages = consumer.messages().await?;
        let mut pending = Pending::default();
        loop {
            tokio::select! {
                m = messages.next(), if pending.len() < IN_FLIGHT => {
                    let Some(m) = m else { return Err("the batch log's consumer ended".into()) };
                    let m = m?;
                    let info = m.info()?;
                    let (seq, logged_ms) = (info.stream_sequence, (info.published.unix_timestamp_nanos() / 1_000_000) as i64);
                    let (settled, told) = oneshot::channel();
                    let Some(gateway) = m.subject.as_str().strip_prefix("citysense.v1.up.").map(str::to_string) else {
                        let _ = settled.send(());
                        pending.push(seq, told, m);
                        continue;
                    };
                    if ingest.send(Incoming { gateway, payload: m.payload.clone(), settled: Some(settled), logged_ms: Some(logged_ms) }).await.is_err() {
                        return Ok(());
                    }
                    pending.push(seq, told, m);
                }
                r = pending.settle(&mut applied), if !pending.is_empty() => match r {
                    Ok(done) => {
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
            }
        }
    }
}
