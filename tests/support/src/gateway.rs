//! A gateway played by the test: it builds its own batches, so a test can
//! expect exactly what was sent, and it sees the collector's acks.

use std::time::Duration;

/// A gateway played by the test: publishes batches it builds itself and sees
/// the collector's acks, for exact expectations of what was sent.
pub struct FakeGateway {
    pub id: String,
    pub client: rumqttc::AsyncClient,
    acked: tokio::sync::watch::Receiver<u64>,
    /// Turns true when the connection fails (the broker dropped it).
    closed: tokio::sync::watch::Receiver<bool>,
    /// Messages received on any topic but this gateway's own ack topic.
    pub foreign: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next_seq: u64,
    key: Option<Vec<u8>>,
    /// Dropping the gateway drops this, which ends its connection: a gateway
    /// the test is done with does not reconnect under the same client id.
    _alive: tokio::sync::oneshot::Sender<()>,
}

/// How a fake gateway proves itself: MQTT credentials, batch key, TLS.
#[derive(Default, Clone)]
pub struct Identity {
    pub login: Option<(String, String)>,
    pub key: Option<Vec<u8>>,
    pub tls: Option<rumqttc::Transport>,
}

impl FakeGateway {
    pub async fn connect(mqtt_url: &str, id: &str) -> FakeGateway {
        FakeGateway::connect_as(mqtt_url, id, Identity::default()).await.expect("fake gateway connects")
    }

    /// Connects with `who`; the broker's refusal, if any, as text.
    pub async fn connect_as(mqtt_url: &str, id: &str, who: Identity) -> Result<FakeGateway, String> {
        use rumqttc::{Event, MqttOptions, Packet, QoS};
        let broker = shared::url::BrokerUrl::parse(mqtt_url).unwrap();
        // The client id an agent uses, which the embedded broker's front requires of a gateway.
        let mut opts = MqttOptions::new(format!("citysense-agent-{id}"), broker.host.clone(), broker.port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        // A NATS node answers a first CONNECT only once JetStream has made the
        // MQTT session streams on all three nodes, which on a busy machine
        // takes longer than rumqttc's 5 s default (the shipped cluster's test
        // failed on it once in a fresh-clone run): see below.
        if let Some((u, p)) = &who.login {
            opts.set_credentials(u.clone(), p.clone());
        }
        if let Some(t) = who.tls.clone() {
            collector::tls::install_crypto_provider();
            opts.set_transport(t);
        }
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 1000);
        el.network_options.set_connection_timeout(30);
        // The first event tells whether the broker lets us in. A NATS node
        // busy making the MQTT session streams may close the connection before
        // answering (once in a fresh-clone run): an agent connects again, and
        // so does this, twice at most; a refusal is a CONNACK, not a close.
        let mut closed = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(40), el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) if a.code == rumqttc::ConnectReturnCode::Success => break,
                Ok(Ok(other)) => return Err(format!("{other:?}")),
                Ok(Err(rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted))) if closed < 2 => closed += 1,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("no CONNACK within 40 s".into()),
            }
        }
        let (key, gw) = (who.key.clone(), id.to_string());
        let foreign = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen_foreign = foreign.clone();
        let (tx, acked) = tokio::sync::watch::channel(0u64);
        let (subscribed_tx, mut subscribed) = tokio::sync::watch::channel(false);
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        let (alive, mut gone) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = el.poll() => e,
                    _ = &mut gone => return,
                };
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic != shared::topics::ack(&gw) => {
                        seen_foreign.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(a) = serde_json::from_slice::<shared::wire::Ack>(&p.payload) {
                            // As an agent does: with a key, only acks signed with it count.
                            let signed = key.as_ref().is_none_or(|k| a.mac.as_deref().is_some_and(|m| shared::auth::verify_ack(k, &gw, a.epoch, a.seq, m)));
                            if signed {
                                tx.send_modify(|s| *s = (*s).max(a.seq.get()));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = closed_tx.send(true);
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                }
            }
        });
        client.subscribe(shared::topics::ack(id), QoS::AtLeastOnce).await.unwrap();
        // Acks published before the subscription holds would be lost, and a fake gateway does not resend.
        tokio::time::timeout(Duration::from_secs(20), subscribed.wait_for(|s| *s)).await.expect("SUBACK within 20 s").unwrap();
        Ok(FakeGateway { id: id.to_string(), client, acked, closed, foreign, next_seq: 1, key: who.key, _alive: alive })
    }

    /// Numbers the readings and encodes them as a batch claiming `gateway`, sealed with this gateway's key if it has one.
    pub fn batch(&mut self, gateway: &str, mut readings: Vec<shared::Reading>) -> (Vec<u8>, u64) {
        for r in &mut readings {
            r.seq = shared::Seq(self.next_seq);
            self.next_seq += 1;
        }
        let bytes = shared::Batch::new(gateway, 1, readings).encode();
        (
            match &self.key {
                Some(k) => shared::auth::seal_batch(k, bytes),
                None => bytes,
            },
            self.next_seq - 1,
        )
    }

    /// Publishes one batch, numbering the readings; returns the last seq.
    pub async fn send(&mut self, readings: Vec<shared::Reading>) -> u64 {
        let id = self.id.clone();
        let (payload, last) = self.batch(&id, readings);
        self.client.publish(shared::topics::up(&self.id), rumqttc::QoS::AtLeastOnce, false, payload).await.unwrap();
        last
    }

    /// Publishes one batch and publishes it again, every 2 s, until the
    /// collector acknowledges it, as an agent does: on a broker cluster, a
    /// collector's subscription reaches the other nodes a moment after its
    /// SUBACK, and a batch published there before is dropped. Fails after
    /// `limit`.
    pub async fn send_until_acked(&mut self, readings: Vec<shared::Reading>, limit: Duration) -> u64 {
        let id = self.id.clone();
        let (payload, last) = self.batch(&id, readings);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.client.publish(shared::topics::up(&self.id), rumqttc::QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
            let wait = (deadline - tokio::time::Instant::now()).min(Duration::from_secs(2));
            if tokio::time::timeout(wait, self.acked.wait_for(|a| *a >= last)).await.is_ok() {
                return last;
            }
            assert!(tokio::time::Instant::now() < deadline, "seq {last} of {} not acknowledged within {limit:?}, sent every 2 s", self.id);
        }
    }

    /// Whether the broker drops this connection within `limit`.
    pub async fn dropped_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.closed.wait_for(|c| *c)).await.is_ok()
    }

    /// Waits until the collector has acknowledged every seq up to `seq`.
    pub async fn wait_acked(&mut self, seq: u64, limit: Duration) {
        tokio::time::timeout(limit, self.acked.wait_for(|a| *a >= seq)).await.unwrap_or_else(|_| panic!("seq {seq} of {} not acknowledged within {limit:?}", self.id)).unwrap();
    }
}
