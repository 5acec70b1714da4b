//! The Mosquitto configuration shipped in `deploy/` holds as shipped: Debian's
//! mosquitto runs `deploy/mosquitto.conf` with only its paths and ports
//! changed (loopback, free ports, a temporary directory), the ACL file
//! `deploy/mosquitto-acl.conf` as it is, a password file made with
//! `mosquitto_passwd -b` and certificates made by `deploy/make-test-ca.sh`.
//! Gateways and readers use the TLS listener (client certificates, the
//! username as client id), the collector the plain one, as in compose.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio::sync::mpsc;

const COLLECTOR_USER: &str = "citysense-collector";
const PASSWORDS: [(&str, &str); 4] = [(COLLECTOR_USER, "collector-pw"), ("gw-a", "gw-a-pw"), ("gw-b", "gw-b-pw"), ("emergency-command", "emergency-pw")];
const LIMIT: Duration = Duration::from_secs(10);

fn password(user: &str) -> &'static str {
    PASSWORDS.iter().find(|(u, _)| *u == user).unwrap().1
}

fn deploy() -> PathBuf {
    workspace().join("deploy")
}

/// Mosquitto running the shipped configuration.
struct Deployed {
    dir: PathBuf,
    /// The TLS listener for gateways and feed readers (8883 in compose).
    gateways: u16,
    /// The collectors' listener (1883 on the compose network).
    collectors: u16,
    _broker: Child,
}

/// The shipped file with only its paths and ports changed; every other line as shipped.
fn adapt(conf: &str, dir: &Path, gateways: u16, collectors: u16) -> String {
    let d = dir.display();
    let out = conf
        .replace("/mosquitto/config/", &format!("{d}/"))
        .replace("/mosquitto/certs/", &format!("{d}/tls/"))
        .replace("/mosquitto/data/", &format!("{d}/data/"))
        .replace("listener 8883 0.0.0.0", &format!("listener {gateways} 127.0.0.1"))
        .replace("listener 1883 0.0.0.0", &format!("listener {collectors} 127.0.0.1"));
    // Both listeners found: nothing else of the file may need adapting.
    assert!(out.contains(&format!("listener {gateways} ")) && out.contains(&format!("listener {collectors} ")), "deploy/mosquitto.conf changed its listeners:\n{conf}");
    assert!(!out.contains("/mosquitto/"), "a path left to adapt:\n{out}");
    out
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Deployed {
    async fn start(dir: &Path) -> Deployed {
        let tls = dir.join("tls");
        run(Command::new("bash")
            .arg(deploy().join("make-test-ca.sh"))
            .arg(&tls)
            .arg("collector.city.example")
            .args(["gw-a", "gw-b", "emergency-command"])
            .env("BROKER_HOST", "127.0.0.1"));
        let passwd = dir.join("passwd");
        for (i, (user, pw)) in PASSWORDS.iter().enumerate() {
            let create: &[&str] = if i == 0 { &["-c", "-b"] } else { &["-b"] };
            run(Command::new("mosquitto_passwd").args(create).arg(&passwd).args([user, pw]));
        }
        std::fs::copy(deploy().join("mosquitto-acl.conf"), dir.join("mosquitto-acl.conf")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // Run as root, mosquitto drops to its own user before reading these files.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        for p in [dir, tls.as_path()] {
            mode(p, 0o755);
        }
        mode(&dir.join("data"), 0o777);
        for f in std::fs::read_dir(&tls).unwrap().chain(std::fs::read_dir(dir).unwrap()) {
            let f = f.unwrap().path();
            if f.is_file() {
                mode(&f, 0o644);
            }
        }
        let (gateways, collectors) = (free_port(), free_port());
        let shipped = std::fs::read_to_string(deploy().join("mosquitto.conf")).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, adapt(&shipped, dir, gateways, collectors)).unwrap();
        // Mosquitto logs to stderr in the foreground: kept, to count client-id takeovers.
        let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
        let broker = Child(Command::new("mosquitto").arg("-c").arg(&conf).stderr(Stdio::from(log)).spawn().expect("mosquitto (apt-get install mosquitto)"));
        wait_for_port(gateways, "mosquitto's gateway listener").await;
        wait_for_port(collectors, "mosquitto's collector listener").await;
        Deployed { dir: dir.to_path_buf(), gateways, collectors, _broker: broker }
    }

    /// Lines of Mosquitto's log where one client's CONNECT knocked off another's.
    fn takeovers(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains("already connected")).map(str::to_string).collect()
    }

    fn tls(&self, cert: Option<&str>) -> Transport {
        // This process may build a TLS client before any collector set rustls' provider.
        collector::tls::install_crypto_provider();
        let read = |f: String| std::fs::read(self.dir.join("tls").join(f)).unwrap();
        Transport::tls(read("ca.pem".into()), cert.map(|c| (read(format!("{c}.pem")), read(format!("{c}.key")))), None)
    }

    /// A client on the gateway listener with `cert`'s certificate.
    async fn gateway_side(&self, client_id: &str, cert: &str, login: Option<(&str, &str)>) -> Result<Client, String> {
        Client::connect(self.gateways, client_id, login, Some(self.tls(Some(cert)))).await
    }

    /// A client on the collectors' listener.
    async fn collector_side(&self, client_id: &str, login: Option<(&str, &str)>) -> Result<Client, String> {
        Client::connect(self.collectors, client_id, login, None).await
    }
}

/// An MQTT client that does not reconnect: what it receives, and whether its connection ended.
struct Client {
    mqtt: AsyncClient,
    events: mpsc::UnboundedReceiver<Packet>,
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Client {
    async fn connect(port: u16, client_id: &str, login: Option<(&str, &str)>, tls: Option<Transport>) -> Result<Client, String> {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        if let Some(t) = tls {
            o.set_transport(t);
        }
        let (mqtt, mut el) = AsyncClient::new(o, 100);
        match tokio::time::timeout(LIMIT, el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) if a.code == rumqttc::ConnectReturnCode::Success => {}
            Ok(Ok(other)) => return Err(format!("{other:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no CONNACK".into()),
        }
        let (tx, events) = mpsc::unbounded_channel();
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = closed_tx.send(true);
                        return;
                    }
                }
            }
        });
        Ok(Client { mqtt, events, closed })
    }

    async fn subscribe(&mut self, filter: &str) {
        self.mqtt.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(LIMIT, async {
            while let Some(p) = self.events.recv().await {
                if matches!(p, Packet::SubAck(_)) {
                    return;
                }
            }
        })
        .await
        .expect("SUBACK");
    }

    async fn publish(&self, topic: &str, payload: &str) {
        self.mqtt.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.unwrap();
    }

    /// The next message received: (topic, payload).
    async fn next_message(&mut self) -> (String, String) {
        tokio::time::timeout(LIMIT, async {
            while let Some(p) = self.events.recv().await {
                if let Packet::Publish(p) = p {
                    return (p.topic, String::from_utf8_lossy(&p.payload).into_owned());
                }
            }
            panic!("connection ended")
        })
        .await
        .expect("a message within 10 s")
    }

    async fn dropped_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.closed.wait_for(|c| *c)).await.is_ok()
    }
}

fn login(user: &str) -> Option<(&str, &str)> {
    Some((user, password(user)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_gets_in_without_its_password_and_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let b = Deployed::start(dir.path()).await;
    // Anonymous, on either listener.
    assert!(b.gateway_side("gw-a", "gw-a", None).await.is_err(), "anonymous gateway admitted");
    assert!(b.collector_side("anyone", None).await.is_err(), "anonymous client admitted on the collectors' listener");
    // A wrong password, and a password without a certificate.
    assert!(b.gateway_side("gw-a", "gw-a", Some(("gw-a", "guess"))).await.is_err(), "wrong password admitted");
    assert!(Client::connect(b.gateways, "gw-a", login("gw-a"), Some(b.tls(None))).await.is_err(), "gateway admitted without a client certificate");
    // The same clients with their credentials are admitted.
    assert!(b.gateway_side("gw-a", "gw-a", login("gw-a")).await.is_ok());
    assert!(b.collector_side("citysense-collector-x", login(COLLECTOR_USER)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_writes_and_reads_only_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let b = Deployed::start(dir.path()).await;
    let mut collector = b.collector_side("citysense-collector-t", login(COLLECTOR_USER)).await.unwrap();
    collector.subscribe("citysense/v1/up/#").await;
    collector.subscribe("citysense/v1/state/#").await;
    let mut a = b.gateway_side("gw-a", "gw-a", login("gw-a")).await.unwrap();
    // gw-a asks for gw-b's acks too.
    a.subscribe(&shared::topics::ack("gw-a")).await;
    a.subscribe(&shared::topics::ack("gw-b")).await;
    // Publishes as gw-b, then as itself: the collector sees only the second.
    a.publish(&shared::topics::up("gw-b"), "forged batch").await;
    a.publish("citysense/v1/state/gw-b", "offline").await;
    a.publish(&shared::topics::up("gw-a"), "own batch").await;
    assert_eq!(collector.next_message().await, (shared::topics::up("gw-a"), "own batch".to_string()), "a message on gw-b's topics got through");
    // The collector acks gw-b, then gw-a: gw-a receives only its own.
    collector.publish(&shared::topics::ack("gw-b"), "ack of gw-b").await;
    collector.publish(&shared::topics::ack("gw-a"), "ack of gw-a").await;
    assert_eq!(a.next_message().await, (shared::topics::ack("gw-a"), "ack of gw-a".to_string()), "gw-a read gw-b's ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_is_replaced_by_the_username_so_no_one_takes_over_anothers() {
    let dir = tempfile::tempdir().unwrap();
    let b = Deployed::start(dir.path()).await;
    let mut collector = b.collector_side("citysense-collector-victim", login(COLLECTOR_USER)).await.unwrap();
    collector.subscribe("citysense/v1/up/#").await;
    // gw-a connects with the collector's client id: admitted as `gw-a`, the collector stays connected.
    let mut first = b.gateway_side("citysense-collector-victim", "gw-a", login("gw-a")).await.unwrap();
    assert!(!collector.dropped_within(Duration::from_millis(500)).await, "the collector was knocked off by a gateway using its client id");
    first.publish(&shared::topics::up("gw-a"), "after the takeover attempt").await;
    assert_eq!(collector.next_message().await.1, "after the takeover attempt");
    // The id really is the username: a second gw-a login, whatever id it asks for, replaces the first.
    let _second = b.gateway_side("some-other-id", "gw-a", login("gw-a")).await.unwrap();
    assert!(first.dropped_within(LIMIT).await, "two gw-a logins with different ids coexist: the client id is not the username");
    assert!(!collector.dropped_within(Duration::from_millis(200)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_reader_reads_alerts_but_cannot_publish_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = Deployed::start(dir.path()).await;
    let collector = b.collector_side("citysense-collector-t", login(COLLECTOR_USER)).await.unwrap();
    let mut reader = b.gateway_side("emergency-command", "emergency-command", login("emergency-command")).await.unwrap();
    reader.subscribe("citysense/v1/alerts/#").await;
    reader.subscribe("citysense/v1/live/#").await;
    reader.publish("citysense/v1/alerts/emergency/wl-001", "levee breach, evacuate").await;
    reader.publish("citysense/v1/live/wl-001/water_level_m", "9.9").await;
    collector.publish("citysense/v1/alerts/warning/wl-001", "real alert").await;
    assert_eq!(reader.next_message().await, ("citysense/v1/alerts/warning/wl-001".to_string(), "real alert".to_string()), "the reader's own alert or live value got through");
}

/// A real collector logged in as in `deploy/collector-a.toml` and a gateway on
/// the TLS listener: a batch is stored and acknowledged through the shipped broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_with_credentials_acknowledges_a_gateways_batch() {
    let dir = tempfile::tempdir().unwrap();
    let b = Deployed::start(dir.path()).await;
    let pw = dir.path().join("collector.mqtt-password");
    std::fs::write(&pw, format!("{}\n", password(COLLECTOR_USER))).unwrap();
    let text = format!(
        "[mqtt]\nexternal = \"mqtt://127.0.0.1:{}\"\nshared_group = \"collectors\"\nusername = \"{COLLECTOR_USER}\"\npassword_file = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n",
        b.collectors,
        pw.display(),
        dir.path().join("store").display()
    );
    let cfg: collector::config::CollectorConfig = shared::config::parse("deployed collector", &text, dir.path()).unwrap_or_else(|d| panic!("{d}"));
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    let c = collector::Collector::start(cfg).await.expect("collector starts");
    let who = Identity { login: Some(("gw-a".into(), password("gw-a").into())), key: None, tls: Some(b.tls(Some("gw-a"))) };
    let mut gw = FakeGateway::connect_as(&format!("mqtts://127.0.0.1:{}", b.gateways), "gw-a", who).await.expect("gw-a admitted on the TLS listener");
    let reading = shared::Reading { seq: shared::Seq(0), sensor: "wl-1".into(), metric: "water_level_m".into(), ts_ms: now_ms(), value: 2.5, quality: shared::Quality::Good };
    let seq = gw.send(vec![reading]).await;
    gw.wait_acked(seq, Duration::from_secs(30)).await;
    let http = c.http_addr;
    wait_for("the reading stored", LIMIT, || async move { latest(http, "wl-1", "water_level_m").await.filter(|v| *v == 2.5) }).await;
    c.shutdown().await;
}

/// A will is a publish the broker makes later for the client. Mosquitto 2.0
/// admits a CONNECT with any will but checks the will against the ACL when it
/// would publish it: a gateway cannot leave a forged retained alert or another
/// gateway's state behind. (Raw client on the plain listener: the grants are
/// the same on both.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_outside_the_grants_is_never_published() {
    use common::raw_mqtt::Raw;
    let dir = tempfile::tempdir().unwrap();
    let b = Deployed::start(dir.path()).await;
    let url = format!("mqtt://127.0.0.1:{}", b.collectors);
    let mut collector = b.collector_side("citysense-collector-t", login(COLLECTOR_USER)).await.unwrap();
    collector.subscribe("citysense/v1/state/#").await;
    for (n, topic) in ["citysense/v1/alerts/emergency/wl-001", "citysense/v1/state/gw-b", "citysense/v1/live/wl-001/water_level_m"].iter().enumerate() {
        let (raw, answer) = Raw::login(&url, &format!("forger-{n}"), login("gw-a"), Some((topic, b"forged", true))).await;
        if answer.is_ok() {
            raw.vanish();
        }
    }
    // Closed after the forgers: its will (on its own state topic) comes after theirs, if they had any.
    let (raw, answer) = Raw::login(&url, "honest", login("gw-a"), Some(("citysense/v1/state/gw-a", b"offline", true))).await;
    assert_eq!(answer, Ok(()));
    raw.vanish();
    assert_eq!(collector.next_message().await, ("citysense/v1/state/gw-a".to_string(), "offline".to_string()), "a will on gw-b's state was published");
    // No forged alert or live value retained for a reader subscribing now.
    let mut reader = b.gateway_side("emergency-command", "emergency-command", login("emergency-command")).await.unwrap();
    reader.subscribe("citysense/v1/alerts/#").await;
    reader.subscribe("citysense/v1/live/#").await;
    collector.publish("citysense/v1/alerts/warning/wl-001", "real alert").await;
    assert_eq!(reader.next_message().await, ("citysense/v1/alerts/warning/wl-001".to_string(), "real alert".to_string()), "a forged will was retained");
}

/// `deploy/collector-a.toml` and `collector-b.toml` with only what compose
/// provides changed (the broker's name, the mounted paths, the port): the
/// compose stack's two collectors, as processes on loopback.
fn compose_collector(file: &str, b: &Deployed, dir: &Path) -> collector::config::CollectorConfig {
    let shipped = std::fs::read_to_string(deploy().join(file)).unwrap();
    let pw = dir.join("collector.mqtt-password");
    std::fs::write(&pw, format!("{}\n", password(COLLECTOR_USER))).unwrap();
    let store = dir.join(file.trim_end_matches(".toml"));
    let text = shipped
        .replace("mqtt://broker:1883", &format!("mqtt://127.0.0.1:{}", b.collectors))
        .replace("/etc/citysense/mqtt-password", &pw.display().to_string())
        .replace("/etc/citysense/tls/", &format!("{}/", b.dir.join("tls").display()))
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("/var/lib/citysense/collector", &store.display().to_string());
    assert!(!text.contains("/etc/citysense") && !text.contains("broker:1883") && !text.contains("/var/lib"), "deploy/{file} has a path or host left to adapt:\n{text}");
    shared::config::parse(file, &text, dir).unwrap_or_else(|d| panic!("{d}"))
}

/// The compose stack's pair: both collectors log in as `citysense-collector`
/// on the same broker. Each must keep its connections (ids of its own, no
/// takeover — before random client ids, both were `citysense-collector-1` in
/// their containers and knocked each other off 167 times in 12 s), share the
/// gateways' batches through the shared subscription, and acknowledge every
/// batch exactly once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_pair_of_collectors_shares_the_gateways_without_colliding() {
    let dir = tempfile::tempdir().unwrap();
    let b = Deployed::start(dir.path()).await;
    let a = collector::Collector::start(compose_collector("collector-a.toml", &b, dir.path())).await.expect("collector a starts");
    let c = collector::Collector::start(compose_collector("collector-b.toml", &b, dir.path())).await.expect("collector b starts");
    let mut gateways = Vec::new();
    for id in ["gw-a", "gw-b"] {
        let who = Identity { login: Some((id.into(), password(id).into())), key: None, tls: Some(b.tls(Some(id))) };
        gateways.push(FakeGateway::connect_as(&format!("mqtts://127.0.0.1:{}", b.gateways), id, who).await.unwrap_or_else(|e| panic!("{id}: {e}")));
    }
    const BATCHES: u64 = 20;
    for n in 0..BATCHES {
        for gw in gateways.iter_mut() {
            let sensor = format!("wl-{}", gw.id);
            let reading = shared::Reading {
                seq: shared::Seq(0),
                sensor: sensor.as_str().into(),
                metric: "water_level_m".into(),
                ts_ms: now_ms() - 60_000 + n as i64,
                value: n as f64,
                quality: shared::Quality::Good,
            };
            let seq = gw.send(vec![reading]).await;
            gw.wait_acked(seq, Duration::from_secs(30)).await;
        }
    }
    let stored = |x: &collector::Collector| x.counters.stored.load(std::sync::atomic::Ordering::Relaxed);
    let (sa, sb) = (stored(&a), stored(&c));
    assert_eq!(sa + sb, 2 * BATCHES, "every batch stored by exactly one collector (a {sa}, b {sb})");
    assert!(sa > 0 && sb > 0, "the shared subscription gave all batches to one collector (a {sa}, b {sb})");
    assert_eq!(b.takeovers(), Vec::<String>::new(), "a client id was taken over");
    a.shutdown().await;
    c.shutdown().await;
}
