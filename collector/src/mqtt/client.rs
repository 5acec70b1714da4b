//! The collector's own MQTT connections, written once: options, reconnect
//! with backoff, subscriptions renewed on every CONNACK, and incoming
//! PUBLISHes handed to an `Inbound`. Every component connects through it.
//!
//! Ingest, live readings and alerts each get a connection of their own made
//! here. Live readings: a flood of them must never fill the request queue
//! that acks wait on. Alerts: the broker's PUBACK for an alert, left
//! unacknowledged on a socket without TCP_NODELAY (rumqttd's), held the next
//! incoming batch for the delayed ACK (~40 ms, measured).

use std::future::Future;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Endpoints;

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
        let mut o = MqttOptions::new(format!("{}{role}", self.id), self.endpoints.inner.host.clone(), self.endpoints.inner.port);
        o.set_keep_alive(Duration::from_secs(15));
        o.set_max_packet_size(self.max_packet, self.max_packet);
        if let Some((user, password)) = &self.endpoints.login {
            o.set_credentials(user.clone(), password.clone());
        }
        let (client, mut eventloop) = AsyncClient::new(o, queue);
        // Acks and alerts are small, latency-bound packets: no Nagle delay.
        eventloop.network_options.set_tcp_nodelay(true);
        let (ready_tx, ready) = watch::channel(false);
        let supervisor =
            Supervisor { role: role.trim_start_matches('-').to_string(), broker: self.endpoints.inner.to_string(), client: client.clone(), subscriptions, ready: ready_tx };
        let task = tokio::spawn(supervisor.run(eventloop, inbound, shutdown));
        Connection { client, ready, task }
    }
}

struct Supervisor {
    role: String,
    broker: String,
    client: AsyncClient,
    subscriptions: Vec<(String, QoS)>,
    ready: watch::Sender<bool>,
}

impl Supervisor {
    async fn run<I: Inbound>(self, mut eventloop: rumqttc::EventLoop, mut inbound: I, mut shutdown: watch::Receiver<bool>) {
        let Supervisor { role, broker, client, subscriptions, ready } = self;
        let role = if role.is_empty() { "ingest".to_string() } else { role };
        let mut backoff = Duration::from_millis(100);
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = shutdown.changed() => { let _ = client.disconnect().await; return; }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(%broker, "collector {role} connection up");
                    if subscriptions.is_empty() {
                        ready.send_replace(true);
                    }
                    for (filter, qos) in &subscriptions {
                        if let Err(e) = client.subscribe(filter.as_str(), *qos).await {
                            tracing::error!("{role} connection cannot subscribe to {filter}: {e}");
                        }
                    }
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
                    tracing::warn!(%broker, "collector {role} connection: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
