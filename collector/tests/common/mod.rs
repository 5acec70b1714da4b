//! Helpers shared by the collector's integration tests: a collector on free
//! loopback ports, a minimal HTTP GET, and waiting on a condition with a deadline.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use collector::config::CollectorConfig;
use collector::Collector;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A collector with its embedded broker (or `external`) and HTTP on free ports.
pub async fn collector(dir: &Path, external: Option<&str>, catalogue: &str) -> Collector {
    let mqtt = match external {
        Some(url) => format!("external = \"{url}\""),
        None => "listen = \"127.0.0.1:0\"".to_string(),
    };
    let text = format!("[mqtt]\n{mqtt}\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n\n{catalogue}", dir.join("collector").display());
    let cfg: CollectorConfig = shared::config::parse("test collector", &text, dir).unwrap_or_else(|d| panic!("{d}"));
    Collector::start(cfg).await.expect("collector starts")
}

/// How long an HTTP request in a test may wait for the collector's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// GET `path`; returns status and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to collector HTTP");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    // A stuck answer fails the test, naming the request, rather than hanging the suite.
    tokio::time::timeout(ANSWER_WITHIN, s.read_to_end(&mut buf)).await.unwrap_or_else(|_| panic!("no answer to GET {path} within {ANSWER_WITHIN:?}")).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

pub async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The value of an unlabelled Prometheus counter in `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
}

/// Batches rejected for `reason`, from `citysense_batches_rejected_total` in `/metrics`.
pub async fn rejected(addr: SocketAddr, reason: &str) -> f64 {
    let (_, body) = get(addr, "/metrics").await;
    let key = format!("citysense_batches_rejected_total{{reason=\"{reason}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// Polls `check` until it returns Some, or panics with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The latest value of a sensor's metric from `/api/v1/sensors`.
pub async fn latest(addr: SocketAddr, sensor: &str, metric: &str) -> Option<f64> {
    let sensors = get_json(addr, "/api/v1/sensors").await;
    sensors.as_array()?.iter().find(|s| s["id"] == sensor)?["metrics"].as_array()?.iter().find(|m| m["metric"] == metric)?["value"].as_f64()
}

/// Values of a series, raw, over all time.
pub async fn series_values(addr: SocketAddr, sensor: &str, metric: &str) -> Vec<f64> {
    let v = get_json(addr, &format!("/api/v1/series?sensor={sensor}&metric={metric}&from=0")).await;
    v["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect()
}

/// An agent config reading `devices` (and noise over MQTT when `noise_broker`).
pub fn agent_config(dir: &Path, gateway: &str, broker: &str, modbus: &str, noise_broker: Option<&str>) -> agent::config::AgentConfig {
    let mut text = format!(
        "gateway = \"{gateway}\"\n[uplink]\nbroker = \"{broker}\"\nbatch_max = 200\nlinger = \"50ms\"\nhealth_interval = \"500ms\"\nack_timeout = \"3s\"\n[buffer]\npath = \"{}\"\nflush = \"50ms\"\n[status]\nlisten = \"127.0.0.1:0\"\n\n{modbus}",
        dir.join(format!("agent-{gateway}")).display()
    );
    if let Some(b) = noise_broker {
        text.push_str(&sim::run::noise_toml(b));
    }
    shared::config::parse("test agent", &text, dir).unwrap_or_else(|d| panic!("{d}\n{text}"))
}

/// A free loopback port (bound and released) for servers that cannot report theirs.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_for_port(port: u16, what: &str) {
    wait_for(what, Duration::from_secs(20), || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ()) }).await
}

/// A child process killed when the test ends, pass or fail.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// POST a JSON body; returns status and body.
pub async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    request(addr, "POST", path, body).await
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    request_with(addr, method, path, body, "").await
}

/// A request with a bearer token (none when empty).
pub async fn request_as(addr: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let auth = if token.is_empty() { String::new() } else { format!("Authorization: Bearer {token}\r\n") };
    request_with(addr, method, path, body, &auth).await
}

/// `headers`: extra header lines, each ending in CRLF.
pub async fn request_with(addr: SocketAddr, method: &str, path: &str, body: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to collector HTTP");
    let req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, s.read_to_end(&mut buf)).await.unwrap_or_else(|_| panic!("no answer to {method} {path} within {ANSWER_WITHIN:?}")).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), body.to_string())
}

/// A Server-Sent Events subscription: yields (event, data) pairs.
pub struct SseClient {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl SseClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> SseClient {
        use tokio::io::AsyncBufReadExt;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes()).await.unwrap();
        let mut lines = tokio::io::BufReader::new(s).lines();
        // Skip the response head.
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.is_empty() {
                break;
            }
        }
        SseClient { lines }
    }

    /// The next event whose data satisfies `pick`, within `limit`.
    pub async fn next_where(&mut self, event: &str, limit: Duration, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        let mut name = String::new();
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no `{event}` event within {limit:?}"))
                .unwrap()
                .expect("stream open");
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                if name == event {
                    let v: Value = serde_json::from_str(d.trim()).unwrap();
                    if pick(&v) {
                        return v;
                    }
                }
            }
        }
    }
}

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
        let mut opts = MqttOptions::new(format!("fake-{id}"), broker.host.clone(), broker.port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((u, p)) = &who.login {
            opts.set_credentials(u.clone(), p.clone());
        }
        if let Some(t) = who.tls.clone() {
            opts.set_transport(t);
        }
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 1000);
        // The first event tells whether the broker lets us in.
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) if a.code == rumqttc::ConnectReturnCode::Success => {}
            Ok(Ok(other)) => return Err(format!("{other:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no CONNACK within 10 s".into()),
        }
        let (key, gw) = (who.key.clone(), id.to_string());
        let foreign = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen_foreign = foreign.clone();
        let (tx, acked) = tokio::sync::watch::channel(0u64);
        let (subscribed_tx, mut subscribed) = tokio::sync::watch::channel(false);
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic != shared::topics::ack(&gw) => {
                        seen_foreign.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(a) = serde_json::from_slice::<shared::wire::Ack>(&p.payload) {
                            // As an agent does: with a key, only acks signed with it count.
                            let signed = key.as_ref().is_none_or(|k| a.mac.as_deref().is_some_and(|m| shared::auth::verify_ack(k, &gw, a.seq, m)));
                            if signed {
                                tx.send_modify(|s| *s = (*s).max(a.seq));
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
        Ok(FakeGateway { id: id.to_string(), client, acked, closed, foreign, next_seq: 1, key: who.key })
    }

    /// Numbers the readings and encodes them as a batch claiming `gateway`, sealed with this gateway's key if it has one.
    pub fn batch(&mut self, gateway: &str, mut readings: Vec<shared::Reading>) -> (Vec<u8>, u64) {
        for r in &mut readings {
            r.seq = self.next_seq;
            self.next_seq += 1;
        }
        let bytes = shared::Batch::new(gateway, 1, readings).encode();
        (match &self.key {
            Some(k) => shared::auth::seal_batch(k, bytes),
            None => bytes,
        }, self.next_seq - 1)
    }

    /// Publishes one batch, numbering the readings; returns the last seq.
    pub async fn send(&mut self, readings: Vec<shared::Reading>) -> u64 {
        let id = self.id.clone();
        let (payload, last) = self.batch(&id, readings);
        self.client.publish(shared::topics::up(&self.id), rumqttc::QoS::AtLeastOnce, false, payload).await.unwrap();
        last
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
