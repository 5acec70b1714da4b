//! The collector's own MQTT connections, written once: options, reconnect
//! with backoff, subscriptions renewed on every CONNACK, and incoming
//! PUBLISHes handed to an `Inbound`. Every component connects through it.
//!
//! Ingest, its acks, live readings and alerts each get a connection of
//! their own made here. Acks: the connection that hears batches waits for
//! ingest to take each one, and ingest may wait for a commit that is
//! sending acks (`ingest::commit::Committer::acks`). Live readings: a flood
//! of them must never fill the request queue that acks wait on. Alerts:
//! the broker's PUBACK for an alert, left
//! unacknowledged on a socket without TCP_NODELAY (rumqttd's), held the next
//! incoming batch for the delayed ACK (~40 ms, measured).

use std::future::Future;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Endpoints;
use shared::failover::Failover;
use shared::url::BrokerUrl;

/// What a connection does with the messages it receives. Returning false
/// ends the connection (its consumer has gone).
pub trait Inbound: Send + 'static {
    fn publish(&mut self, p: Publish) -> impl Future<Output = bool> + Send;
}

/// A connection that only publishes.
pub struct PublishOnly;

impl Inbound for PublishOnly {
    async fn publish(&mut self, _: Publish) -> bool {
        true
    }
}

/// How every connection of this collector is made.
#[derive(Clone)]
pub struct Connector {
    endpoints: std::sync::Arc<Endpoints>,
    max_packet: usize,
    /// Unguessable per run: a client id another client could take would let
    /// it knock this collector's connection off the broker.
    id: String,
}

/// A running connection: publish through `client`; `ready` turns true once
/// its subscriptions are acknowledged (at once when it has none).
pub struct Connection {
    pub client: AsyncClient,
    pub ready: watch::Receiver<bool>,
    pub task: JoinHandle<()>,
}

impl Connector {
    /// The client ids are `citysense-collector-<random>-<role>`: random per
    /// run, so neither an attacker nor a second collector (also pid 1 in its
    /// container) can take them over.
    pub fn new(endpoints: std::sync::Arc<Endpoints>, max_packet: usize) -> Result<Connector, std::io::Error> {
        let nonce: String = shared::auth::random_secret()?.chars().take(16).collect();
        Ok(Connector { endpoints, max_packet, id: format!("{}{nonce}", super::acl::COLLECTOR_ID_PREFIX) })
    }

    /// Connects as `role` (part of the client id), subscribes to
    /// `subscriptions` on every (re)connect, and hands what arrives to `inbound`.
    pub fn connect<I: Inbound>(&self, role: &str, queue: usize, subscriptions: Vec<(String, QoS)>, inbound: I, shutdown: watch::Receiver<bool>) -> Connection {
        let brokers = Failover::new(std::iter::once(self.endpoints.inner.clone()).chain(self.endpoints.failover.iter().cloned()).collect()).expect("one broker at least");
        let (client, mut eventloop) = AsyncClient::new(self.options(role, brokers.current()), queue);
        // Acks and alerts are small, latency-bound packets: no Nagle delay.
        eventloop.network_options.set_tcp_nodelay(true);
        let (ready_tx, ready) = watch::channel(false);
        let supervisor = Supervisor { role: role.to_string(), connector: self.clone(), brokers, client: client.clone(), subscriptions, ready: ready_tx };
        let task = tokio::spawn(supervisor.run(eventloop, inbound, shutdown));
        Connection { client, ready, task }
    }

    fn options(&self, role: &str, broker: &BrokerUrl) -> MqttOptions {
        let mut o = MqttOptions::new(format!("{}{role}", self.id), broker.host.clone(), broker.port);
        o.set_keep_alive(Duration::from_secs(15));
        o.set_max_packet_size(self.max_packet, self.max_packet);
        o.set_max_request_batch(MAX_REQUEST_BATCH);
        if let Some((user, password)) = &self.endpoints.login {
            o.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = self.endpoints.tls.as_ref().filter(|_| broker.tls) {
            o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
        }
        o
    }
}

/// Requests already queued that a connection writes with one flush: the live
/// feed's up to `mqtt.live_rate` publishes a second went out one write
/// syscall each (vendored rumqttc's change, collector/vendor/rumqttc/CITYSENSE.md).
/// Only what is queued is taken: an alert alone is not held for company.
const MAX_REQUEST_BATCH: usize = 64;

/// How long to wait before asking again for a subscription the broker refused.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

struct Supervisor {
    role: String,
    connector: Connector,
    brokers: Failover<BrokerUrl>,
    client: AsyncClient,
    subscriptions: Vec<(String, QoS)>,
    ready: watch::Sender<bool>,
}

impl Supervisor {
    async fn run<I: Inbound>(self, mut eventloop: rumqttc::EventLoop, mut inbound: I, mut shutdown: watch::Receiver<bool>) {
        let Supervisor { role: id_role, connector, mut brokers, client, subscriptions, ready } = self;
        let role = match id_role.trim_start_matches('-') {
            "" => "ingest".to_string(),
            r => r.to_string(),
        };
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = shutdown.changed() => { let _ = client.disconnect().await; return; }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    brokers.connected();
                    tracing::info!(broker = %brokers.current(), "collector {role} connection up");
                    if subscriptions.is_empty() {
                        ready.send_replace(true);
                    }
                    for (filter, qos) in &subscriptions {
                        if let Err(e) = client.subscribe(filter.as_str(), *qos).await {
                            tracing::error!("{role} connection cannot subscribe to {filter}: {e}");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) => {
                    // A broker may refuse a subscription it cannot keep yet (a NATS node
                    // while JetStream elects leaders): ask again rather than stay deaf.
                    tracing::warn!(broker = %brokers.current(), "{role} connection: the broker refused a subscription; asking again in {RESUBSCRIBE:?}");
                    let (client, subscriptions) = (client.clone(), subscriptions.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(RESUBSCRIBE).await;
                        for (filter, qos) in subscriptions {
                            let _ = client.subscribe(filter, qos).await;
                        }
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    ready.send_replace(true);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !inbound.publish(p).await {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let failed = brokers.current().to_string();
                    // Another node of an external cluster is tried at once; a round in which all failed waits.
                    let wait = brokers.failed();
                    tracing::warn!(broker = %failed, "collector {role} connection: {e}; connecting to {} in {wait:?}", brokers.current());
                    eventloop.mqtt_options = connector.options(&id_role, brokers.current());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use shared::url::BrokerUrl;

    use super::*;

    /// Write syscalls this thread has made so far (Linux's per-thread I/O accounting).
    fn writes_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("per-thread I/O accounting");
        io.lines().find_map(|l| l.strip_prefix("syscw: ")).and_then(|n| n.trim().parse().ok()).expect("syscw")
    }

    /// A broker that accepts the connection and reads whatever comes, on a thread of its own.
    fn accepting_broker() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 65_536];
            let _ = s.read(&mut buf);
            // CONNACK: session not present, accepted.
            s.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
            while s.read(&mut buf).is_ok_and(|n| n > 0) {}
        });
        port
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queued_publishes_leave_in_a_few_writes_not_one_each() {
        let port = accepting_broker();
        let url = BrokerUrl { tls: false, host: "127.0.0.1".into(), port };
        let endpoints = Endpoints { inner: url.clone(), failover: Vec::new(), public: url, login: None, tls: None };
        let connector = Connector::new(std::sync::Arc::new(endpoints), 1 << 20).unwrap();
        let (client, mut eventloop) = AsyncClient::new(connector.options("-live", &connector.endpoints.inner), 1_000);
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.unwrap() {
                break;
            }
        }
        const N: usize = 500;
        for i in 0..N {
            client.try_publish(format!("citysense/v1/live/s{i}/pm25"), QoS::AtMostOnce, false, b"{\"ts_ms\":1,\"value\":2.5}".to_vec()).unwrap();
        }
        // The event loop runs on this thread: its writes are this thread's.
        let before = writes_by_this_thread();
        let mut sent = 0;
        while sent < N {
            if let Event::Outgoing(rumqttc::Outgoing::Publish(_)) = eventloop.poll().await.unwrap() {
                sent += 1;
            }
        }
        let writes = writes_by_this_thread() - before;
        // One each would be 500; 64 a flush makes 8.
        assert!(writes <= N as u64 / 32, "{N} queued publishes took {writes} write syscalls");
    }
}
