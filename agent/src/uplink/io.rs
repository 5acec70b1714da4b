//! The uplink's I/O: the rumqttc event loop (connections, acks), the acker
//! (deletes acknowledged readings) and the sender (reads batches, publishes
//! them), which does what `window::Window` decides. Nothing here decides
//! what to send or when to resend; it exists so that the protocol state in
//! `window` stays free of sockets, tasks and clocks.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeReasonCode};
use tokio::sync::watch;
use tokio::time::Instant;

use super::acks::{self, Verdict};
use super::window::{Step, Window};
use super::{state_payload, LinkState};
use crate::clock::AgentClock;
use crate::outbox::{Outbox, OutboxError};
use shared::clock::Clock as _;
use shared::failover::Failover;
use shared::url::BrokerUrl;
use shared::wire::{Ack, Status};
use shared::{topics, Batch};

/// How the event loop passes acks on: to the acker, once `acks::judge` believes them.
pub(super) struct AckLink {
    pub outbox_epoch: u64,
    /// The highest seq the sender has published since start.
    pub sent_upto: watch::Receiver<u64>,
    pub wanted: watch::Sender<u64>,
    /// Stamps state messages; learns the clock's offset from the acks' times.
    pub clock: Arc<AgentClock>,
}

/// How long to wait before asking again for a subscription the broker refused.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

#[allow(clippy::too_many_arguments)]
pub(super) async fn event_loop(
    gateway: String,
    mut brokers: Failover<BrokerUrl>,
    options: super::Options,
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    batch_key: Option<Arc<Vec<u8>>>,
    link: watch::Sender<LinkState>,
    acks: AckLink,
    mut shutdown: watch::Receiver<bool>,
) {
    let ack_topic = topics::ack(&gateway);
    let up_topic = topics::up(&gateway);
    let mut session = 0u64;
    link.send_modify(|s| s.broker = Some(brokers.current().to_string()));
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = shutdown.changed() => {
                sign_off(&client, &mut eventloop, &topics::state(&gateway), state_payload(Status::Offline, acks.clock.now_ms()), Duration::from_secs(2)).await;
                return;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                brokers.connected();
                tracing::info!(broker = %brokers.current(), "uplink connected");
                let _ = client.subscribe(ack_topic.clone(), QoS::AtLeastOnce).await;
                let _ = client.publish(topics::state(&gateway), QoS::AtLeastOnce, true, state_payload(Status::Online, acks.clock.now_ms())).await;
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) => {
                // A broker may refuse a subscription it cannot keep yet (a NATS node while
                // JetStream elects leaders after a node died). No ack could reach us, so the
                // link does not count as up; ask again rather than wait for acks forever.
                tracing::warn!(broker = %brokers.current(), "the broker refused the subscription to {ack_topic}; asking again in {RESUBSCRIBE:?}");
                let (client, topic) = (client.clone(), ack_topic.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(RESUBSCRIBE).await;
                    let _ = client.subscribe(topic, QoS::AtLeastOnce).await;
                });
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                // Only now can an ack reach us, so only now is sending useful.
                session += 1;
                link.send_modify(|s| {
                    s.connected = true;
                    s.session = session;
                    s.last_error = None;
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_topic => match serde_json::from_slice::<Ack>(&p.payload) {
                // Believing a forged ack would delete readings never stored: with a key, only signed acks count.
                Ok(a) if batch_key.as_ref().is_some_and(|k| !a.mac.as_deref().is_some_and(|m| shared::auth::verify_ack(k, &gateway, a.epoch, a.seq, m))) => {
                    tracing::warn!(seq = a.seq.get(), "ignoring an ack without a valid signature (forged, or the collector lacks this gateway's batch key)");
                    link.send_modify(|s| s.acks_ignored += 1);
                }
                Ok(a) => match acks::judge(a.epoch, a.seq.get(), acks.outbox_epoch, *acks.sent_upto.borrow()) {
                    // Every ack wakes the acker, a repeated one too: it retries a deletion that failed.
                    Verdict::Delete(seq) => {
                        // Only an ack believed to be the collector's tells its time.
                        if let Some(t) = a.ts_ms {
                            acks.clock.heard_collector(t);
                        }
                        acks.wanted.send_modify(|v| *v = (*v).max(seq));
                    }
                    Verdict::WrongEpoch { got, ours } => {
                        tracing::warn!(seq = a.seq.get(), "ignoring an ack for outbox epoch {got}; this outbox is epoch {ours}");
                        link.send_modify(|s| s.acks_ignored += 1);
                    }
                    Verdict::Unsent { seq, sent_upto } => {
                        tracing::warn!(
                            "ignoring an ack of seq {seq}: nothing above seq {sent_upto} was sent since the agent started, so it would delete readings the collector never had"
                        );
                        link.send_modify(|s| s.acks_ignored += 1);
                    }
                },
                Err(e) => tracing::warn!(topic = %p.topic, "ignoring an ack that is not {{\"seq\":N}}: {e}"),
            },
            Ok(_) => {}
            Err(e) => {
                forget_batches(&mut eventloop, &up_topic);
                let failed = brokers.current().to_string();
                let msg = format!("uplink to {failed}: {e}");
                // Another node of the cluster is tried at once; only a round in which every one failed waits.
                let wait = brokers.failed();
                let next = brokers.current().to_string();
                tracing::warn!("{msg}; connecting to {next} in {wait:?}");
                link.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some(msg);
                    s.broker = Some(next);
                });
                eventloop.mqtt_options = options.for_broker(brokers.current(), acks.clock.now_ms());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// Drops the batches rumqttc kept to publish again on the next connection.
/// The sender resends everything unacknowledged itself once the link is
/// back, stamped with the time it is sent; rumqttc's copies carry the time
/// of the first attempt, so the collector took an outage's length for the
/// gateway's clock being off (a `clock_skew` alert after a broker node
/// died), and every one was sent twice.
fn forget_batches(eventloop: &mut rumqttc::EventLoop, up_topic: &str) {
    eventloop.pending.retain(|r| !matches!(r, rumqttc::Request::Publish(p) if p.topic == up_topic));
}

/// Says offline (a clean disconnect suppresses the last will, so the agent
/// says it itself) and disconnects, for at most `limit`. Only this task
/// polls the event loop, so nothing here may wait for room in the client's
/// request queue: with the queue full of batches (the sender's window), an
/// awaited `publish` waited for a poll that could never come, and the
/// agent's shutdown hung for good.
async fn sign_off(client: &AsyncClient, eventloop: &mut rumqttc::EventLoop, topic: &str, offline: Vec<u8>, limit: Duration) {
    let deadline = Instant::now() + limit;
    let (mut said, mut asked) = (false, false);
    loop {
        if !said {
            said = client.try_publish(topic, QoS::AtLeastOnce, true, offline.clone()).is_ok();
        }
        if said && !asked {
            asked = client.try_disconnect().is_ok();
        }
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => return,
            Ok(Ok(_)) => {}
            // Not connected, or out of time: the broker's last will says offline.
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// Deletes acknowledged readings from the outbox, on the blocking pool, and
/// then tells the sender. Acks are cumulative, so those that arrive while a
/// deletion runs are folded into the next one. Ends with the event loop.
pub(super) async fn acker(outbox: Arc<dyn Outbox>, mut wanted: watch::Receiver<u64>, acked: watch::Sender<u64>) {
    while wanted.changed().await.is_ok() {
        let upto = *wanted.borrow_and_update();
        if upto <= *acked.borrow() {
            continue;
        }
        let ob = outbox.clone();
        // A JoinError only happens when the runtime is being torn down.
        let Ok(deleted) = tokio::task::spawn_blocking(move || ob.ack(upto)).await else { return };
        match deleted {
            Ok(()) => {
                acked.send_if_modified(|v| {
                    let grew = upto > *v;
                    *v = (*v).max(upto);
                    grew
                });
            }
            Err(e) => tracing::error!("cannot delete acknowledged readings up to seq {upto}: {e}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("cannot queue batch for {topic}: {err}")]
    Publish { topic: String, err: rumqttc::ClientError },
    #[error("the runtime is shutting down")]
    Stopped,
}

pub(super) struct Sender {
    pub gateway: String,
    pub client: AsyncClient,
    pub outbox: Arc<dyn Outbox>,
    pub batch_max: usize,
    pub batch_key: Option<Arc<Vec<u8>>>,
    /// The highest seq published so far, for `acks::judge`.
    pub sent: watch::Sender<u64>,
    /// Each batch's `sent_ms`, from which the collector measures this clock.
    pub clock: Arc<AgentClock>,
}

impl Sender {
    pub async fn run(
        self,
        mut window: Window,
        mut durable: watch::Receiver<u64>,
        mut acked: watch::Receiver<u64>,
        mut link: watch::Receiver<LinkState>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let topic = topics::up(&self.gateway);
        let mut session = 0;
        loop {
            window.ack(*acked.borrow_and_update());
            window.durable(*durable.borrow_and_update());
            let state = link.borrow_and_update().clone();
            window.connected(state.connected);
            if state.session != session {
                session = state.session;
                window.reconnected();
            }
            let until = match window.poll(Instant::now().into_std()) {
                Step::AckTimedOut { from } => {
                    tracing::warn!(gateway = %self.gateway, "no ack in time; resending from seq {from}, waiting {:?} for its ack", window.ack_timeout());
                    continue;
                }
                Step::Send { from, upto } => {
                    // Every wait gives way to shutdown: once the event loop has
                    // signed off, a publish fails for good, and a sender that
                    // only retried never saw the shutdown (the agent hung on stop).
                    let sent = tokio::select! {
                        sent = self.send(&topic, from, upto) => sent,
                        _ = shutdown.changed() => return,
                    };
                    match sent {
                        Ok(Some((first, last))) => window.sent(first, last, Instant::now().into_std()),
                        Ok(None) => window.nothing_held(upto),
                        Err(SendError::Stopped) => return,
                        Err(e) => {
                            tracing::error!(gateway = %self.gateway, "{e}");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                                _ = shutdown.changed() => return,
                            }
                        }
                    }
                    continue;
                }
                Step::Wait { until } => until.map(Instant::from_std).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            };
            tokio::select! {
                _ = durable.changed() => {}
                _ = acked.changed() => {}
                _ = link.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Sends the next batch from `from`; the first and last seq it carried, or
    /// None when the outbox holds nothing in range (all of it acked or dropped
    /// meanwhile). The outbox is read on the blocking pool.
    async fn send(&self, topic: &str, from: u64, upto: u64) -> Result<Option<(u64, u64)>, SendError> {
        let (ob, max) = (self.outbox.clone(), self.batch_max);
        let readings = tokio::task::spawn_blocking(move || ob.read(from, upto, max)).await.map_err(|_| SendError::Stopped)??;
        let (Some(first), Some(last)) = (readings.first().map(|r| r.seq.get()), readings.last().map(|r| r.seq.get())) else { return Ok(None) };
        let stats = self.outbox.stats();
        let batch = Batch::new(self.gateway.clone(), stats.floor_seq.min(first), readings).in_epoch(stats.epoch).sent_at(self.clock.now_ms());
        // Before it can be acked: an ack racing ahead of this would be ignored.
        self.sent.send_modify(|s| *s = (*s).max(last));
        self.client
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                match &self.batch_key {
                    Some(k) => shared::auth::seal_batch(k, batch.encode()),
                    None => batch.encode(),
                },
            )
            .await
            .map_err(|err| SendError::Publish { topic: topic.to_string(), err })?;
        Ok(Some((first, last)))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A broker that accepts one connection and keeps every byte the agent sends.
    async fn recording_broker() -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            // The client sends nothing more before its CONNACK.
            let n = sock.read(&mut buf).await.unwrap();
            assert_eq!(buf[0], 0x10, "CONNECT first: {:?}", &buf[..n]);
            sock.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
            let mut all = Vec::new();
            while let Ok(n @ 1..) = sock.read(&mut buf).await {
                all.extend_from_slice(&buf[..n]);
            }
            all
        });
        (port, got)
    }

    /// A client connected to a recording broker, with room for `queue` requests.
    async fn connected(queue: usize) -> (AsyncClient, rumqttc::EventLoop, tokio::task::JoinHandle<Vec<u8>>) {
        let (port, got) = recording_broker().await;
        let (client, mut eventloop) = AsyncClient::new(rumqttc::MqttOptions::new("agent-t", "127.0.0.1", port), queue);
        while !matches!(eventloop.poll().await.unwrap(), Event::Incoming(Packet::ConnAck(_))) {}
        (client, eventloop, got)
    }

    #[tokio::test]
    async fn signing_off_with_the_request_queue_full_says_offline_and_disconnects() {
        let (client, mut eventloop, got) = connected(1).await;
        client.try_publish("up/t", QoS::AtLeastOnce, false, vec![1]).unwrap();
        assert!(client.try_publish("up/t", QoS::AtLeastOnce, false, vec![2]).is_err(), "the queue is full, as the sender's window leaves it");
        let signed_off = sign_off(&client, &mut eventloop, "state/t", b"offline".to_vec(), Duration::from_secs(2));
        tokio::time::timeout(Duration::from_secs(10), signed_off).await.expect("signed off within its limit, not hung on the full queue");
        drop(eventloop);
        let bytes = got.await.unwrap();
        assert!(bytes.windows(7).any(|w| w == b"offline"), "the offline state went out");
        assert!(bytes.ends_with(&[0xE0, 0x00]), "then DISCONNECT: {bytes:?}");
    }

    /// The event loop has signed off (its requests queue is gone, so every
    /// publish fails) while the sender had a batch to send: it stops on
    /// shutdown instead of retrying for ever.
    #[tokio::test]
    async fn the_sender_stops_on_shutdown_while_its_publishes_fail() {
        let dir = tempfile::tempdir().unwrap();
        let outbox: Arc<dyn Outbox> = Arc::new(crate::outbox::SledOutbox::open(dir.path(), 1 << 20, crate::config::WhenFull::DropOldest).unwrap());
        let reading = crate::source::NewReading { sensor: "s-1".into(), metric: "m".into(), ts_ms: 1, value: 1.0, quality: shared::Quality::Good };
        outbox.append(vec![reading]).unwrap();
        let durable = outbox.flush().unwrap();
        let (client, eventloop) = AsyncClient::new(rumqttc::MqttOptions::new("agent-t", "127.0.0.1", 1), 1);
        drop(eventloop);
        let (sent, mut tried) = watch::channel(0);
        let clock = crate::clock::AgentClock::new(shared::clock::system());
        let sender = Sender { gateway: "gw-t".into(), client, outbox, batch_max: 100, batch_key: None, sent, clock };
        let window = Window::new(0, 100, Duration::ZERO, Duration::from_secs(30), 4);
        let (_durable_tx, durable_rx) = watch::channel(durable);
        let (_acked_tx, acked_rx) = watch::channel(0);
        let (_link_tx, link_rx) = watch::channel(LinkState { connected: true, session: 1, ..LinkState::default() });
        let (stop, shutdown) = watch::channel(false);
        let running = tokio::spawn(sender.run(window, durable_rx, acked_rx, link_rx, shutdown));
        // The sender marks a batch sent just before it publishes it, which fails.
        tried.changed().await.unwrap();
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), running).await.expect("the sender stopped on shutdown").unwrap();
    }

    #[tokio::test]
    async fn batches_kept_for_the_next_connection_are_dropped_and_the_rest_kept() {
        let (client, mut eventloop, _got) = connected(8).await;
        client.try_publish("citysense/v1/up/gw-t", QoS::AtLeastOnce, false, vec![1]).unwrap();
        client.try_publish("citysense/v1/state/gw-t", QoS::AtLeastOnce, true, vec![2]).unwrap();
        client.try_subscribe("citysense/v1/ack/gw-t", QoS::AtLeastOnce).unwrap();
        // As rumqttc leaves them after a connection fails (`EventLoop::clean`).
        eventloop.clean();
        assert_eq!(eventloop.pending.len(), 3);
        forget_batches(&mut eventloop, "citysense/v1/up/gw-t");
        let left: Vec<String> = eventloop
            .pending
            .iter()
            .map(|r| match r {
                rumqttc::Request::Publish(p) => p.topic.clone(),
                other => format!("{other:?}").split('(').next().unwrap().to_string(),
            })
            .collect();
        assert_eq!(left, ["citysense/v1/state/gw-t", "Subscribe"]);
    }

    #[tokio::test]
    async fn signing_off_without_a_broker_ends_at_once() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (client, mut eventloop) = AsyncClient::new(rumqttc::MqttOptions::new("agent-t", "127.0.0.1", port), 1);
        client.try_publish("up/t", QoS::AtLeastOnce, false, vec![1]).unwrap();
        let signed_off = sign_off(&client, &mut eventloop, "state/t", b"offline".to_vec(), Duration::from_secs(30));
        tokio::time::timeout(Duration::from_secs(10), signed_off).await.expect("a refused connection ends the sign-off");
    }
}
