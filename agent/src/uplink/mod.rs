//! `Uplink`: the agent's MQTT link to the collector.
//!
//! Protocol state (what has been sent, what is acknowledged) lives in
//! `window`, a pure state machine; `io` drives it: the rumqttc event loop only
//! moves packets and reports connections and acks, the sender reads batches
//! from the outbox and publishes them, the acker deletes acknowledged readings.
//! A PUBACK says only that the broker has a batch, so nothing is deleted on it:
//! readings leave the outbox on the collector's `ack/{gateway}`, and whatever is
//! not acknowledged within `ack_timeout`, or when the link comes back, is sent again.
//! Every outbox call that touches the disk runs on tokio's blocking pool.

pub mod ack_timer;
pub mod acks;
mod io;
pub mod window;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
use tokio::sync::watch;

use crate::clock::AgentClock;
use crate::config::UplinkConfig;
use crate::outbox::Outbox;
use shared::clock::Clock as _;
use shared::failover::Failover;
use shared::topics;
use shared::url::BrokerUrl;
use shared::wire::{State, Status};

/// Largest MQTT packet either side accepts; the collector's broker uses the same.
pub const MAX_PACKET: usize = 4 << 20;

/// What the uplink tells the rest of the agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkState {
    pub connected: bool,
    /// Increments on every (re)connection, so the sender knows to resend.
    pub session: u64,
    pub last_error: Option<String>,
    /// Acks ignored since start: for another outbox epoch, or above anything sent (`acks`).
    pub acks_ignored: u64,
    /// The broker this link is on (or trying), one of `uplink.broker`.
    pub broker: Option<String>,
}

pub struct Uplink {
    pub client: AsyncClient,
    pub link: watch::Receiver<LinkState>,
}

fn state_payload(status: Status, ts_ms: i64) -> Vec<u8> {
    serde_json::to_vec(&State { status, ts_ms }).expect("state serializes")
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("reading uplink.{key} {path}: {err}")]
    ReadFile { key: &'static str, path: PathBuf, err: std::io::Error },
    /// `shared::auth`'s message, which names the file.
    #[error(transparent)]
    BatchKey(#[from] shared::auth::SecretError),
}

/// What the uplink proves itself with, read from the files the config names.
#[derive(Default, Clone)]
pub struct Secrets {
    pub password: Option<String>,
    pub batch_key: Option<Arc<Vec<u8>>>,
    /// PEM: the broker's CA, and the client certificate with its key.
    pub ca: Option<Vec<u8>>,
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl Secrets {
    pub fn load(config: &UplinkConfig) -> Result<Secrets, SecretsError> {
        let read = |key: &'static str, f: &Path| std::fs::read(f).map_err(|err| SecretsError::ReadFile { key, path: f.to_path_buf(), err });
        Ok(Secrets {
            password: config.password_file.as_deref().map(|f| read("password_file", f).map(|b| String::from_utf8_lossy(&b).trim().to_string())).transpose()?,
            batch_key: config.batch_key_file.as_deref().map(|f| shared::auth::read_secret(f).map(Arc::new).map_err(SecretsError::BatchKey)).transpose()?,
            ca: config.ca_file.as_deref().map(|f| read("ca_file", f)).transpose()?,
            client_cert: match (&config.cert_file, &config.key_file) {
                (Some(c), Some(k)) => Some((read("cert_file", c)?, read("key_file", k)?)),
                _ => None,
            },
        })
    }
}

/// How a connection to any one of the configured brokers is made.
pub(super) struct Options {
    client_id: String,
    gateway: String,
    config: UplinkConfig,
    secrets: Secrets,
}

impl Options {
    /// The same session to another broker: only the address and its TLS differ.
    /// The will is stamped with the time of this connection attempt.
    pub(super) fn for_broker(&self, url: &BrokerUrl, now_ms: i64) -> MqttOptions {
        let (config, secrets) = (&self.config, &self.secrets);
        let mut opts = MqttOptions::new(self.client_id.clone(), url.host.clone(), url.port);
        opts.set_keep_alive(Duration::from_secs(15));
        opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        opts.set_clean_session(true);
        opts.set_inflight((config.max_inflight as u16).saturating_mul(2).max(10));
        opts.set_last_will(LastWill::new(topics::state(&self.gateway), state_payload(Status::Offline, now_ms), QoS::AtLeastOnce, true));
        if let Some(user) = &config.username {
            opts.set_credentials(user.clone(), secrets.password.clone().unwrap_or_default());
        }
        if url.tls {
            // rustls picks a provider by its crate features only when exactly one is
            // enabled; a workspace build also has the collector's aws-lc-rs.
            let _ = rustls::crypto::ring::default_provider().install_default();
            opts.set_transport(match &secrets.ca {
                Some(ca) => rumqttc::Transport::tls(ca.clone(), secrets.client_cert.clone(), None),
                None => rumqttc::Transport::tls_with_default_config(),
            });
        }
        opts
    }
}

/// Connects (in the background, retrying forever, moving to the next broker of
/// `uplink.broker` whenever one fails) and starts the event loop,
/// the acker and the sender. `durable` carries the highest flushed `seq`;
/// `clock` stamps batches and state, and learns its offset from acks.
#[allow(clippy::too_many_arguments)]
pub fn start(
    gateway: &str,
    config: &UplinkConfig,
    secrets: Secrets,
    outbox: Arc<dyn Outbox>,
    durable: watch::Receiver<u64>,
    clock: Arc<AgentClock>,
    shutdown: watch::Receiver<bool>,
) -> (Uplink, tokio::task::JoinHandle<()>) {
    let brokers = Failover::new(config.broker.urls()).expect("config validation keeps at least one broker");
    let options = Options { client_id: format!("citysense-agent-{gateway}"), gateway: gateway.to_string(), config: config.clone(), secrets: secrets.clone() };
    let (client, mut eventloop) = AsyncClient::new(options.for_broker(brokers.current(), clock.now_ms()), 64);
    // Acks are small packets the outbox waits on: no Nagle delay.
    eventloop.network_options.set_tcp_nodelay(true);
    let (link_tx, link_rx) = watch::channel(LinkState::default());
    let acked_seq = outbox.stats().acked;
    let (wanted_tx, wanted_rx) = watch::channel(acked_seq);
    let (acked_tx, acked_rx) = watch::channel(acked_seq);

    let (sent_tx, sent_rx) = watch::channel(0u64);
    let acks = io::AckLink { outbox_epoch: outbox.stats().epoch, sent_upto: sent_rx, wanted: wanted_tx, clock: clock.clone() };
    let events = tokio::spawn(io::event_loop(gateway.to_string(), brokers, options, client.clone(), eventloop, secrets.batch_key.clone(), link_tx, acks, shutdown.clone()));
    let acker = tokio::spawn(io::acker(outbox.clone(), wanted_rx, acked_tx));
    let sender = io::Sender { gateway: gateway.to_string(), client: client.clone(), outbox, batch_max: config.batch_max, batch_key: secrets.batch_key, sent: sent_tx, clock };
    let window = window::Window::new(acked_seq, config.batch_max, config.linger.0, config.ack_timeout.0, config.max_inflight);
    let link = link_rx.clone();
    let task = tokio::spawn(async move {
        sender.run(window, durable, acked_rx, link_rx, shutdown).await;
        let _ = events.await;
        let _ = acker.await;
    });
    (Uplink { client, link }, task)
}
