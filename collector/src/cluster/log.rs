//! The batch log: a JetStream stream of every `citysense/v1/up/<gateway>`
//! batch (NATS subject `citysense.v1.up.<gateway>`), replicated on
//! `cluster.replicas` nodes, read through one durable consumer. A batch is
//! acknowledged to the log only when ingest says it is stored and synced, or
//! refused for good; a store failure sends it back to the log to be delivered
//! again a second later, as an agent's resend would.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::{ClusterConfig, ClusterError};
use crate::messages::Incoming;

pub const STREAM: &str = "CITYSENSE_UP";
/// The durable consumer every collector reads through.
pub const CONSUMER: &str = "collectors";
/// NATS's name for the MQTT topics `citysense/v1/up/+`.
pub const SUBJECTS: &str = "citysense.v1.up.*";
/// How long a delivered batch may stay unsettled before the log delivers it again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Batches delivered and not yet settled, at most.
const IN_FLIGHT: i64 = 4096;

/// How to reach the cluster, resolved once at start.
pub struct Link {
    addrs: Vec<async_nats::ServerAddr>,
    login: Option<(String, String)>,
    replicas: usize,
    keep: Duration,
}

impl Link {
    /// `mqtt_login`: the collector's MQTT login, used when `[cluster]` names none.
    pub fn new(config: &ClusterConfig, mqtt_login: Option<(String, String)>) -> Result<Link, ClusterError> {
        let addrs =
            config.nats.iter().map(|a| a.parse().map_err(|e: std::io::Error| ClusterError::Address { addr: a.clone(), reason: e.to_string() })).collect::<Result<_, _>>()?;
        let login = match (&config.username, &config.password_file) {
            (Some(u), Some(f)) => {
                let p = std::fs::read_to_string(f).map_err(|source| ClusterError::PasswordFile { path: f.clone(), source })?;
                Some((u.clone(), p.trim().to_string()))
            }
            _ => mqtt_login,
        };
        Ok(Link { addrs, login, replicas: config.replicas, keep: config.keep.0 })
    }

    /// Reads the log into `ingest` until `stop`: (re)connects, creates the
    /// stream and the consumer if they are missing, and keeps trying while
    /// the cluster cannot be reached.
    pub async fn run(self, ingest: mpsc::Sender<Incoming>, mut stop: watch::Receiver<bool>) {
        loop {
            let outcome = tokio::select! {
                r = self.read(&ingest) => r,
                _ = stop.changed() => return,
            };
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!("batch log: {e}; trying again in 2 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    async fn read(&self, ingest: &mpsc::Sender<Incoming>) -> Result<(), async_nats::Error> {
        let mut options = async_nats::ConnectOptions::new().name("citysense-collector").retry_on_initial_connect();
        if let Some((u, p)) = &self.login {
            options = options.user_and_password(u.clone(), p.clone());
        }
        let client = options.connect(self.addrs.clone()).await?;
        let js = jetstream::new(client);
        let log = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECTS.into()],
                num_replicas: self.replicas,
                max_age: self.keep,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let consumer: jetstream::consumer::PullConsumer = log
            .get_or_create_consumer(
                CONSUMER,
                pull::Config { durable_name: Some(CONSUMER.into()), ack_policy: AckPolicy::Explicit, ack_wait: ACK_WAIT, max_ack_pending: IN_FLIGHT, ..Default::default() },
            )
            .await?;
        tracing::info!(stream = STREAM, replicas = self.replicas, "reading the batch log");
        let mut messages = consumer.messages().await?;
        while let Some(m) = messages.next().await {
            let m = m?;
            let Some(gateway) = m.subject.as_str().strip_prefix("citysense.v1.up.").map(str::to_string) else {
                let _ = m.ack().await;
                continue;
            };
            let (settled, told) = oneshot::channel();
            if ingest.send(Incoming { gateway, payload: m.payload.clone(), settled: Some(settled) }).await.is_err() {
                return Ok(());
            }
            tokio::spawn(async move {
                let answer = match told.await {
                    Ok(()) => m.ack().await,
                    // Not stored: deliver it again, as an agent would resend.
                    Err(_) => m.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1)))).await,
                };
                if let Err(e) = answer {
                    // The log delivers it again after ACK_WAIT; ingest deduplicates it.
                    tracing::warn!("batch log: cannot settle a batch: {e}");
                }
            });
        }
        Err("the batch log's consumer ended".into())
    }
}
