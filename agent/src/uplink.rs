//! `Uplink`: the agent's MQTT link to the collector.
//!
//! Protocol state (what has been sent, what is acknowledged) lives in `Sender`;
//! the rumqttc event loop only moves packets and reports connections and acks.
//! A PUBACK says only that the broker has a batch, so nothing is deleted on it:
//! readings leave the outbox on the collector's `ack/{gateway}`, and whatever is
//! not acknowledged within `ack_timeout`, or when the link comes back, is sent again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::UplinkConfig;
use crate::outbox::Outbox;
use shared::url::BrokerUrl;
use shared::wire::{Ack, State, Status};
use shared::{topics, Batch};

/// Largest MQTT packet either side accepts; the collector's broker uses the same.
pub const MAX_PACKET: usize = 4 << 20;

/// What the uplink tells the rest of the agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkState {
    pub connected: bool,
    /// Increments on every (re)connection, so the sender knows to resend.
    pub epoch: u64,
    pub last_error: Option<String>,
}

pub struct Uplink {
    pub client: AsyncClient,
    pub link: watch::Receiver<LinkState>,
}

fn state_payload(status: Status) -> Vec<u8> {
    serde_json::to_vec(&State { status, ts_ms: shared::now_ms() }).expect("state serializes")
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
    pub fn load(config: &UplinkConfig) -> anyhow::Result<Secrets> {
        use anyhow::Context as _;
        let read = |what: &str, f: &std::path::Path| std::fs::read(f).with_context(|| format!("reading uplink.{what} {}", f.display()));
        Ok(Secrets {
            password: config.password_file.as_deref().map(|f| read("password_file", f).map(|b| String::from_utf8_lossy(&b).trim().to_string())).transpose()?,
            batch_key: config.batch_key_file.as_deref().map(|f| shared::auth::read_secret(f).map(Arc::new).map_err(anyhow::Error::msg)).transpose()?,
            ca: config.ca_file.as_deref().map(|f| read("ca_file", f)).transpose()?,
            client_cert: match (&config.cert_file, &config.key_file) {
                (Some(c), Some(k)) => Some((read("cert_file", c)?, read("key_file", k)?)),
                _ => None,
            },
        })
    }
}

/// Connects (in the background, retrying forever) and starts the event loop and
/// the sender. `durable` carries the highest flushed `seq`.
pub fn start(
    gateway: &str,
    config: &UplinkConfig,
    secrets: Secrets,
    outbox: Arc<dyn Outbox>,
    durable: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
) -> Result<(Uplink, tokio::task::JoinHandle<()>), String> {
    let url = BrokerUrl::parse(&config.broker)?;
    let mut opts = MqttOptions::new(format!("citysense-agent-{gateway}"), url.host.clone(), url.port);
    opts.set_keep_alive(Duration::from_secs(15));
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    opts.set_clean_session(true);
    opts.set_inflight((config.max_inflight as u16).saturating_mul(2).max(10));
    opts.set_last_will(LastWill::new(topics::state(gateway), state_payload(Status::Offline), QoS::AtLeastOnce, true));
    if let Some(user) = &config.username {
        opts.set_credentials(user.clone(), secrets.password.clone().unwrap_or_default());
    }
    if url.tls {
        opts.set_transport(match &secrets.ca {
            Some(ca) => rumqttc::Transport::tls(ca.clone(), secrets.client_cert.clone(), None),
            None => rumqttc::Transport::tls_with_default_config(),
        });
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    // Acks are small packets the outbox waits on: no Nagle delay.
    eventloop.network_options.set_tcp_nodelay(true);
    let (link_tx, link_rx) = watch::channel(LinkState::default());
    let (acked_tx, acked_rx) = watch::channel(outbox.stats().acked);

    let events = tokio::spawn(event_loop(gateway.to_string(), url, client.clone(), eventloop, outbox.clone(), secrets.batch_key.clone(), link_tx, acked_tx, shutdown.clone()));
    let sender = Sender {
        gateway: gateway.to_string(),
        client: client.clone(),
        outbox,
        batch_max: config.batch_max,
        linger: config.linger.0,
        ack_timeout: config.ack_timeout.0,
        max_inflight: config.max_inflight,
        batch_key: secrets.batch_key,
    };
    let link = link_rx.clone();
    let task = tokio::spawn(async move {
        sender.run(durable, acked_rx, link_rx, shutdown).await;
        let _ = events.await;
    });
    Ok((Uplink { client, link }, task))
}

#[allow(clippy::too_many_arguments)]
async fn event_loop(
    gateway: String,
    url: BrokerUrl,
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    outbox: Arc<dyn Outbox>,
    batch_key: Option<Arc<Vec<u8>>>,
    link: watch::Sender<LinkState>,
    acked: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ack_topic = topics::ack(&gateway);
    let mut backoff = Duration::from_millis(100);
    let mut epoch = 0u64;
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = shutdown.changed() => {
                // A clean disconnect suppresses the last will, so say offline ourselves.
                let _ = client.publish(topics::state(&gateway), QoS::AtLeastOnce, true, state_payload(Status::Offline)).await;
                let _ = client.disconnect().await;
                let deadline = Instant::now() + Duration::from_secs(2);
                while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) { break; }
                }
                return;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                tracing::info!(broker = %url, "uplink connected");
                let _ = client.subscribe(ack_topic.clone(), QoS::AtLeastOnce).await;
                let _ = client.publish(topics::state(&gateway), QoS::AtLeastOnce, true, state_payload(Status::Online)).await;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                // Only now can an ack reach us, so only now is sending useful.
                epoch += 1;
                link.send_replace(LinkState { connected: true, epoch, last_error: None });
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_topic => match serde_json::from_slice::<Ack>(&p.payload) {
                // Believing a forged ack would delete readings never stored: with a key, only signed acks count.
                Ok(a) if batch_key.as_ref().is_some_and(|k| !a.mac.as_deref().is_some_and(|m| shared::auth::verify_ack(k, &gateway, a.seq, m))) => {
                    tracing::warn!(seq = a.seq, "ignoring an ack without a valid signature (forged, or the collector lacks this gateway's batch key)");
                }
                Ok(a) => {
                    if let Err(e) = outbox.ack(a.seq) {
                        tracing::error!("cannot delete acknowledged readings up to seq {}: {e}", a.seq);
                    } else {
                        acked.send_if_modified(|v| {
                            let grew = a.seq > *v;
                            *v = (*v).max(a.seq);
                            grew
                        });
                    }
                }
                Err(e) => tracing::warn!(topic = %p.topic, "ignoring an ack that is not {{\"seq\":N}}: {e}"),
            },
            Ok(_) => {}
            Err(e) => {
                let msg = format!("uplink to {url}: {e}");
                tracing::warn!("{msg}; retrying in {backoff:?}");
                link.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some(msg);
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

struct Sender {
    gateway: String,
    client: AsyncClient,
    outbox: Arc<dyn Outbox>,
    batch_max: usize,
    linger: Duration,
    ack_timeout: Duration,
    max_inflight: usize,
    batch_key: Option<Arc<Vec<u8>>>,
}

impl Sender {
    async fn run(
        self,
        mut durable: watch::Receiver<u64>,
        mut acked: watch::Receiver<u64>,
        mut link: watch::Receiver<LinkState>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let topic = topics::up(&self.gateway);
        let mut cursor = *acked.borrow() + 1;
        // (last seq of a sent batch, when it was sent)
        let mut inflight: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut waiting_since: Option<Instant> = None;
        let mut epoch = 0;
        loop {
            let ack = *acked.borrow_and_update();
            let durable_seq = *durable.borrow_and_update();
            let state = link.borrow_and_update().clone();
            if state.epoch != epoch {
                // New connection: whatever was in flight may be gone; start again
                // after the last ack and let the collector drop duplicates.
                epoch = state.epoch;
                inflight.clear();
                cursor = ack + 1;
            }
            while inflight.front().is_some_and(|(last, _)| *last <= ack) {
                inflight.pop_front();
            }
            cursor = cursor.max(ack + 1);
            if let Some((_, sent)) = inflight.front() {
                if sent.elapsed() >= self.ack_timeout {
                    tracing::warn!(gateway = %self.gateway, "no ack within {:?}; resending from seq {}", self.ack_timeout, ack + 1);
                    inflight.clear();
                    cursor = ack + 1;
                }
            }
            if state.connected && cursor <= durable_seq && inflight.len() < self.max_inflight {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                let available = durable_seq - cursor + 1;
                if available >= self.batch_max as u64 || since.elapsed() >= self.linger {
                    match self.send(&topic, cursor, durable_seq).await {
                        Ok(Some(last)) => {
                            inflight.push_back((last, Instant::now()));
                            cursor = last + 1;
                        }
                        Ok(None) => cursor = durable_seq + 1,
                        Err(e) => {
                            tracing::error!(gateway = %self.gateway, "{e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                    if cursor > durable_seq {
                        waiting_since = None;
                    }
                    continue;
                }
            } else if cursor > durable_seq {
                waiting_since = None;
            }
            let mut deadline = Instant::now() + Duration::from_secs(3600);
            // With the window full only an ack can let a batch go: a linger
            // deadline already past would wake this loop at once, forever.
            if let (Some(since), true, true) = (waiting_since, state.connected, inflight.len() < self.max_inflight) {
                deadline = deadline.min(since + self.linger);
            }
            if let Some((_, sent)) = inflight.front() {
                deadline = deadline.min(*sent + self.ack_timeout);
            }
            tokio::select! {
                _ = durable.changed() => {}
                _ = acked.changed() => {}
                _ = link.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Sends the next batch from `from`; the last seq it carried, or None when
    /// the outbox holds nothing in range (all of it acked or dropped meanwhile).
    async fn send(&self, topic: &str, from: u64, upto: u64) -> Result<Option<u64>, String> {
        let readings = self.outbox.read(from, upto, self.batch_max).map_err(|e| e.to_string())?;
        let Some(last) = readings.last().map(|r| r.seq) else { return Ok(None) };
        let floor = self.outbox.stats().floor_seq.min(readings[0].seq);
        let batch = Batch::new(self.gateway.clone(), floor, readings);
        self.client
            .publish(topic, QoS::AtLeastOnce, false, match &self.batch_key {
                Some(k) => shared::auth::seal_batch(k, batch.encode()),
                None => batch.encode(),
            })
            .await
            .map_err(|e| format!("cannot queue batch for {topic}: {e}"))?;
        Ok(Some(last))
    }
}
