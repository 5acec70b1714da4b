//! Security through the real interfaces: API roles and the audit log,
//! oversized input, and the refusal to listen beyond loopback unprotected.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use shared::{Quality, Reading};
use sim::{City, RunningCity};

const VIEWER: &str = "viewer-token-0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

fn tokens() -> String {
    [("wall-screen", "viewer", VIEWER), ("duty-officer", "operator", OPERATOR), ("platform-team", "admin", ADMIN)]
        .iter()
        .map(|(name, role, token)| format!("[[auth.token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n", shared::auth::sha256_hex(token)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_do_what_and_every_write_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, &tokens()).await;
    let http = c.http_addr;

    // No token, or a wrong one: 401. The page itself stays public.
    assert_eq!(request_as(http, "", "GET", "/api/v1/alerts", "").await.0, 401);
    assert_eq!(request_as(http, "not-a-token", "GET", "/api/v1/sensors", "").await.0, 401);
    assert_eq!(request_as(http, "", "GET", "/metrics", "").await.0, 401);
    assert_eq!(get(http, "/").await.0, 200);
    assert_eq!(request_as(http, VIEWER, "GET", "/api/v1/alerts", "").await.0, 200);

    // An admin adds a rule; a viewer may not.
    let rule = r#"{"id":"river","kind":"threshold","metric":"water_level_m","op":">","value":3.0,"severity":"critical"}"#;
    let (status, body) = request_as(http, VIEWER, "POST", "/api/v1/rules", rule).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("wall-screen") && body.contains("needs admin"), "{body}");
    assert_eq!(request_as(http, OPERATOR, "POST", "/api/v1/rules", rule).await.0, 403);
    assert_eq!(request_as(http, ADMIN, "POST", "/api/v1/rules", rule).await.0, 201);

    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-s").await;
    let seq =
        gw.send(vec![Reading { seq: shared::Seq(0), sensor: "wl-7".into(), metric: "water_level_m".into(), ts_ms: shared::now_ms(), value: 3.6, quality: Quality::Good }]).await;
    gw.wait_acked(seq, Duration::from_secs(20)).await;
    let id = wait_for("the alert", Duration::from_secs(20), || async move {
        let (_, body) = request_as(http, VIEWER, "GET", "/api/v1/alerts?state=firing", "").await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v.as_array()?.first().map(|a| a["id"].as_u64().unwrap())
    })
    .await;
    let ack = format!("/api/v1/alerts/{id}/ack");
    let (status, body) = request_as(http, VIEWER, "POST", &ack, r#"{"by":"someone"}"#).await;
    assert_eq!(status, 403, "a viewer cannot silence an alert: {body}");
    assert_eq!(request_as(http, "", "POST", &ack, r#"{"by":"someone"}"#).await.0, 401);
    let (status, body) = request_as(http, OPERATOR, "POST", &ack, r#"{"by":"Li Wei","note":"on my way"}"#).await;
    assert_eq!(status, 200, "{body}");

    // The audit log: who, what, when; admins only.
    assert_eq!(request_as(http, OPERATOR, "GET", "/api/v1/audit", "").await.0, 403);
    let (status, body) = request_as(http, ADMIN, "GET", "/api/v1/audit", "").await;
    assert_eq!(status, 200, "{body}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(log.len(), 2, "the rule and the ack (refused requests are logged, not audited as writes): {log:?}");
    assert_eq!(
        (log[0]["who"].as_str(), log[0]["role"].as_str(), log[0]["method"].as_str(), log[0]["status"].as_u64()),
        (Some("duty-officer"), Some("operator"), Some("POST"), Some(200))
    );
    assert_eq!(log[0]["path"], ack.as_str());
    assert!(log[0]["body"].as_str().unwrap().contains("on my way"));
    assert!(log[0]["ts_ms"].as_i64().unwrap() > shared::now_ms() - 60_000);
    assert_eq!((log[1]["who"].as_str(), log[1]["path"].as_str(), log[1]["status"].as_u64()), (Some("platform-team"), Some("/api/v1/rules"), Some(201)));

    // The stream takes the token in the query (EventSource cannot send headers).
    let mut sse = SseClient::connect(http, &format!("/api/v1/stream?types=alert&access_token={VIEWER}")).await;
    request_as(http, OPERATOR, "POST", &format!("/api/v1/alerts/{id}/resolve"), "").await;
    sse.next_where("alert", Duration::from_secs(20), |v| v["event"] == "resolved").await;
    let (status, _) = get(http, "/api/v1/stream?types=alert&access_token=wrong").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_input_is_refused_and_the_collector_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, "").await;
    // An HTTP body over 64 KiB.
    let huge = format!("{{\"by\":\"{}\"}}", "x".repeat(100_000));
    let (status, _) = post(c.http_addr, "/api/v1/alerts/1/ack", &huge).await;
    assert_eq!(status, 413);
    // An MQTT payload over the broker's limit: that connection is dropped.
    let broker = shared::url::BrokerUrl::parse(&c.mqtt_url).unwrap();
    let mut opts = rumqttc::MqttOptions::new("flooder", broker.host.clone(), broker.port);
    opts.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    client.publish(shared::topics::up("gw-big"), rumqttc::QoS::AtLeastOnce, false, vec![0u8; 5 << 20]).await.unwrap();
    let dropped = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if el.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(dropped.is_ok(), "the broker drops a connection that sends 5 MiB over a 4 MiB limit");
    // Others are served as before.
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-ok").await;
    let seq = gw.send(vec![Reading { seq: shared::Seq(0), sensor: "aq-9".into(), metric: "pm25".into(), ts_ms: 1_700_000_000_000, value: 1.5, quality: Quality::Good }]).await;
    gw.wait_acked(seq, Duration::from_secs(20)).await;
    assert_eq!(latest(c.http_addr, "aq-9", "pm25").await, Some(1.5));
    assert_eq!(get(c.http_addr, "/healthz").await.0, 200);
}

#[test]
fn listening_beyond_loopback_without_tls_and_auth_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(&cfg, format!("[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"0.0.0.0:0\"\n[store]\npath = \"{}\"\n", dir.path().join("store").display())).unwrap();
    let out = Command::new(bin("citysense-collector")).args(["run", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("http.listen: `0.0.0.0:0` is not loopback: add [http.tls] (cert_file, key_file) and at least one [[auth.token]], or listen on 127.0.0.1"), "{err}");
    assert!(!dir.path().join("store").exists(), "nothing was started");

    std::fs::write(&cfg, format!("[mqtt]\nlisten = \"0.0.0.0:0\"\n[store]\npath = \"{}\"\n{}", dir.path().join("store").display(), tokens())).unwrap();
    let out = Command::new(bin("citysense-collector")).args(["run", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("mqtt.listen: `0.0.0.0:0` is not loopback: add [mqtt.tls]"), "{err}");
}

fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    p
}

const PW_A: &str = "password-of-gateway-a-0123456789";
const PW_B: &str = "password-of-gateway-b-0123456789";
const KEY_A: &str = "batch-key-of-gateway-a-0123456789abcdef";
const KEY_B: &str = "batch-key-of-gateway-b-0123456789abcdef";

fn gateways_toml(dir: &std::path::Path) -> String {
    let (ka, kb) = (secret_file(dir, "a.key", KEY_A), secret_file(dir, "b.key", KEY_B));
    format!(
        "[[gateway]]\nid = \"gw-a\"\npassword_sha256 = \"{}\"\nbatch_key_file = \"{}\"\n[[gateway]]\nid = \"gw-b\"\npassword_sha256 = \"{}\"\nbatch_key_file = \"{}\"\n",
        shared::auth::sha256_hex(PW_A),
        ka.display(),
        shared::auth::sha256_hex(PW_B),
        kb.display()
    )
}

fn gw_a() -> Identity {
    Identity { login: Some(("gw-a".into(), PW_A.into())), key: Some(KEY_A.as_bytes().to_vec()), tls: None }
}

fn water(value: f64) -> Reading {
    Reading { seq: shared::Seq(0), sensor: "wl-1".into(), metric: "water_level_m".into(), ts_ms: 1_700_000_000_000 + (value * 1000.0) as i64, value, quality: Quality::Good }
}

fn keys_only_toml(dir: &std::path::Path) -> String {
    let (ka, kb) = (secret_file(dir, "a.key", KEY_A), secret_file(dir, "b.key", KEY_B));
    format!("[[gateway]]\nid = \"gw-a\"\nbatch_key_file = \"{}\"\n[[gateway]]\nid = \"gw-b\"\nbatch_key_file = \"{}\"\n", ka.display(), kb.display())
}

/// Whatever broker is in between (here an open one): only a batch sealed with
/// its topic's gateway key, naming that gateway, is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_stored_only_under_their_own_gateways_key() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, &keys_only_toml(dir.path())).await;
    let http = c.http_addr;
    let mut a = FakeGateway::connect_as(&c.mqtt_url, "gw-a", Identity { key: Some(KEY_A.as_bytes().to_vec()), ..Identity::default() }).await.unwrap();
    // Batches A could make with its key (seqs outside A's own stream).
    let sealed_by_a = |gateway: &str, r: Reading| shared::auth::seal_batch(KEY_A.as_bytes(), shared::Batch::new(gateway, 1, vec![Reading { seq: shared::Seq(1), ..r }]).encode());
    // A publishing on B's topic, with a batch claiming B, sealed with A's key.
    a.client.publish(shared::topics::up("gw-b"), rumqttc::QoS::AtLeastOnce, false, sealed_by_a("gw-b", water(9.1))).await.unwrap();
    // On its own topic, but claiming to be B.
    a.client.publish(shared::topics::up("gw-a"), rumqttc::QoS::AtLeastOnce, false, sealed_by_a("gw-b", water(9.2))).await.unwrap();
    // Without the HMAC at all.
    let plain = shared::Batch::new("gw-a", 1, vec![Reading { seq: shared::Seq(100), ..water(9.3) }]).encode();
    a.client.publish(shared::topics::up("gw-a"), rumqttc::QoS::AtLeastOnce, false, plain).await.unwrap();
    // A gateway the collector has no key for.
    a.client
        .publish(shared::topics::up("gw-z"), rumqttc::QoS::AtLeastOnce, false, shared::Batch::new("gw-z", 1, vec![Reading { seq: shared::Seq(1), ..water(9.4) }]).encode())
        .await
        .unwrap();
    let counts = || async move { (rejected(http, "unauthenticated").await, rejected(http, "gateway_mismatch").await, rejected(http, "unknown_gateway").await) };
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if counts().await == (2.0, 1.0, 1.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "rejections (unauthenticated, gateway_mismatch, unknown_gateway): {:?}\n{}", counts().await, get(http, "/metrics").await.1);
    // A's own, properly sealed batch is stored, and its ack is signed with A's key
    // (the fake gateway, like an agent, only counts signed acks).
    let seq = a.send(vec![water(1.5)]).await;
    a.wait_acked(seq, Duration::from_secs(20)).await;
    assert_eq!(series_values(http, "wl-1", "water_level_m").await, vec![1.5], "nothing forged was stored");
    assert_eq!(metric(http, "citysense_readings_stored_total").await, 1.0);

    // A real agent with a batch key ignores an unsigned ack, however high.
    let city = RunningCity::start(City { air: 1, traffic: 0, water: 0, noise: 0 }, None, Duration::from_millis(200)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let mut cfg = agent_config(dir.path(), "gw-b", &c.mqtt_url, &sim::run::modbus_toml(&devices, Duration::from_millis(200)), None);
    cfg.uplink.batch_key_file = Some(dir.path().join("b.key"));
    let agent = agent::Agent::start(cfg).await.unwrap();
    let acked = || agent.outbox.stats().acked;
    wait_for("the agent's first acked readings", Duration::from_secs(20), || async { (acked() > 0).then_some(()) }).await;
    a.client.publish(shared::topics::ack("gw-b"), rumqttc::QoS::AtLeastOnce, false, br#"{"seq":1000000}"#.to_vec()).await.unwrap();
    let later = acked() + 5;
    wait_for("more readings acknowledged by the collector", Duration::from_secs(20), || async { (acked() >= later).then_some(()) }).await;
    assert!(acked() < 1_000_000, "the agent believed a forged ack: acked {}", acked());
    agent.shutdown().await;
}

/// The embedded broker itself: passwords, and each gateway confined to its own topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_admits_gateways_by_password_and_confines_each_to_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, &gateways_toml(dir.path())).await;
    let http = c.http_addr;

    // Wrong password, unknown user, no credentials: refused at CONNECT.
    for (who, login) in [("wrong password", Some(("gw-a", "guess"))), ("unknown user", Some(("gw-x", PW_A))), ("no credentials", None)] {
        let id = Identity { login: login.map(|(u, p)| (u.to_string(), p.to_string())), ..Identity::default() };
        let refused = FakeGateway::connect_as(&c.mqtt_url, "gw-a", id).await.err();
        assert!(refused.is_some(), "{who}: the broker let it in");
    }
    let gw_b = || Identity { login: Some(("gw-b".into(), PW_B.into())), key: Some(KEY_B.as_bytes().to_vec()), tls: None };
    let mut b = FakeGateway::connect_as(&c.mqtt_url, "gw-b", gw_b()).await.unwrap();

    // Reading B's acks, by name or by wildcard, or publishing as B: the connection is dropped.
    for (what, topic) in [
        ("subscribe to B's acks", shared::topics::ack("gw-b")),
        ("subscribe to every ack", format!("{}ack/+", shared::topics::PREFIX)),
        ("subscribe to everything", "#".to_string()),
    ] {
        let mut a = FakeGateway::connect_as(&c.mqtt_url, "gw-a", gw_a()).await.unwrap();
        a.client.subscribe(topic, rumqttc::QoS::AtLeastOnce).await.unwrap();
        assert!(a.dropped_within(Duration::from_secs(10)).await, "{what}: still connected");
    }
    let mut a = FakeGateway::connect_as(&c.mqtt_url, "gw-a", gw_a()).await.unwrap();
    let sealed_by_a = shared::auth::seal_batch(KEY_A.as_bytes(), shared::Batch::new("gw-b", 1, vec![Reading { seq: shared::Seq(1), ..water(9.1) }]).encode());
    a.client.publish(shared::topics::up("gw-b"), rumqttc::QoS::AtLeastOnce, false, sealed_by_a).await.unwrap();
    assert!(a.dropped_within(Duration::from_secs(10)).await, "publishing on B's topic: still connected");

    // Each on its own topics is served, acks signed.
    let mut a = FakeGateway::connect_as(&c.mqtt_url, "gw-a", gw_a()).await.unwrap();
    let seq = a.send(vec![water(1.5)]).await;
    a.wait_acked(seq, Duration::from_secs(20)).await;
    let seq = b.send(vec![Reading { sensor: "wl-2".into(), ..water(2.5) }]).await;
    b.wait_acked(seq, Duration::from_secs(20)).await;
    assert_eq!(series_values(http, "wl-1", "water_level_m").await, vec![1.5], "nothing forged was stored");
    assert_eq!(metric(http, "citysense_readings_stored_total").await, 2.0);
}

/// Test certificates: a CA the collector trusts, its server and client
/// certificates, an expired client certificate, and one from a foreign CA.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    expired: (String, String),
    foreign: (String, String),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let authority = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(p, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>, name: &str, usage: ExtendedKeyUsagePurpose, expired: bool| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        (p.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
    };
    let (ca, issuer) = authority("citysense test CA");
    let (_, stranger) = authority("someone else's CA");
    Pki {
        server: leaf(&issuer, "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth, false),
        client: leaf(&issuer, "gw-a", ExtendedKeyUsagePurpose::ClientAuth, false),
        expired: leaf(&issuer, "gw-a", ExtendedKeyUsagePurpose::ClientAuth, true),
        foreign: leaf(&stranger, "gw-a", ExtendedKeyUsagePurpose::ClientAuth, false),
        ca,
    }
}

async fn https_get(addr: std::net::SocketAddr, ca_pem: &str, path: &str, token: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_admits_only_certified_gateways_and_an_agent_delivers_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki();
    let f = |name: &str, pem: &str| secret_file(d, name, pem).display().to_string();
    let (ca, cert, key) = (f("ca.pem", &pki.ca), f("server.pem", &pki.server.0), f("server.key", &pki.server.1));
    let extra = format!(
        "{}{}[mqtt.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nca_file = \"{ca}\"\n[http.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n",
        gateways_toml(d),
        tokens()
    );
    // `collector()` writes [mqtt] and [http] itself: add the TLS tables to its text.
    let text = format!("[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n{extra}", d.join("store").display());
    let cfg: collector::config::CollectorConfig = shared::config::parse("tls collector", &text, d).unwrap_or_else(|e| panic!("{e}"));
    let c = collector::Collector::start(cfg).await.unwrap();
    assert!(c.mqtt_url.starts_with("mqtts://"), "{}", c.mqtt_url);
    let tls =
        |client: Option<&(String, String)>| Some(rumqttc::Transport::tls(pki.ca.clone().into_bytes(), client.map(|(c, k)| (c.clone().into_bytes(), k.clone().into_bytes())), None));

    for (what, client) in [("no client certificate", None), ("an expired certificate", Some(&pki.expired)), ("a certificate from another CA", Some(&pki.foreign))] {
        let r = FakeGateway::connect_as(&c.mqtt_url, "gw-a", Identity { tls: tls(client), ..gw_a() }).await;
        assert!(r.is_err(), "{what}: the TLS listener let it in");
    }
    let (http, ca_pem) = (c.http_addr, pki.ca.clone());
    wait_for("three refused handshakes counted", Duration::from_secs(10), || {
        let ca_pem = ca_pem.clone();
        async move { https_get(http, &ca_pem, "/metrics", VIEWER).await.ok().filter(|(_, m)| m.contains("citysense_tls_handshakes_total{result=\"refused\"} 3")) }
    })
    .await;
    let r = FakeGateway::connect_as(&c.mqtt_url, "gw-a", Identity { tls: tls(Some(&pki.client)), login: Some(("gw-a".into(), "guess".into())), ..gw_a() }).await;
    assert!(r.is_err(), "a valid certificate with a wrong password");
    // Plain MQTT to the TLS port gets nowhere.
    let plain = FakeGateway::connect_as(&c.mqtt_url.replace("mqtts://", "mqtt://"), "gw-a", gw_a()).await;
    assert!(plain.is_err());

    // A real agent: mqtts with the CA and its client certificate, password, batch key.
    let city = RunningCity::start(City { air: 1, traffic: 0, water: 0, noise: 0 }, None, Duration::from_millis(200)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let agent_text = format!(
        "gateway = \"gw-a\"\n[uplink]\nbroker = \"{}\"\nusername = \"gw-a\"\npassword_file = \"{}\"\nbatch_key_file = \"{}\"\nca_file = \"{ca}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nlinger = \"50ms\"\nack_timeout = \"3s\"\n[buffer]\npath = \"{}\"\nflush = \"50ms\"\n[status]\nlisten = \"127.0.0.1:0\"\n\n{}",
        c.mqtt_url,
        secret_file(d, "gw-a.password", PW_A).display(),
        d.join("a.key").display(),
        f("client.pem", &pki.client.0),
        f("client.key", &pki.client.1),
        d.join("agent").display(),
        sim::run::modbus_toml(&devices, Duration::from_millis(200))
    );
    let agent_cfg: agent::config::AgentConfig = shared::config::parse("tls agent", &agent_text, d).unwrap_or_else(|e| panic!("{e}"));
    let agent = agent::Agent::start(agent_cfg).await.unwrap();
    city.control.force("aq-001", "pm25", 42.25);
    let got = wait_for("the agent's reading over TLS", Duration::from_secs(30), || async {
        let (status, body) = https_get(c.http_addr, &pki.ca, "/api/v1/sensors", VIEWER).await.ok()?;
        (status == 200 && body.contains("42.25")).then_some(body)
    })
    .await;
    assert!(got.contains("aq-001"));

    // Another authenticated gateway trying to ack for A is cut off.
    let mut b =
        FakeGateway::connect_as(&c.mqtt_url, "gw-b", Identity { login: Some(("gw-b".into(), PW_B.into())), key: Some(KEY_B.as_bytes().to_vec()), tls: tls(Some(&pki.client)) })
            .await
            .unwrap();
    b.client.publish(shared::topics::ack("gw-a"), rumqttc::QoS::AtLeastOnce, false, br#"{"seq":1000000}"#.to_vec()).await.unwrap();
    assert!(b.dropped_within(Duration::from_secs(10)).await);
    assert!(agent.outbox.stats().acked < 1_000_000);

    // HTTPS: the API answers with the CA trusted; plain HTTP to that port does not.
    assert_eq!(https_get(c.http_addr, &pki.ca, "/healthz", "").await.unwrap().0, 200);
    let answer = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(c.http_addr).await.unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    };
    assert!(!answer.starts_with("HTTP/"), "plain HTTP on the TLS port gets no HTTP answer: {answer}");
    agent.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_gateway_is_slowed_without_losing_anything_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[mqtt]\nlisten = \"127.0.0.1:0\"\ngateway_rate = 100\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n", dir.path().join("store").display());
    let cfg: collector::config::CollectorConfig = shared::config::parse("rate collector", &text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let c = collector::Collector::start(cfg).await.unwrap();
    let http = c.http_addr;
    // 100 readings/s with the 10,000-reading burst floor: 6,000 pass, the next 6,000 at once do not.
    let mut flood = FakeGateway::connect(&c.mqtt_url, "gw-flood").await;
    let batch = |from: i64| (from..from + 6000).map(|i| Reading { ts_ms: 1_700_000_000_000 + i, ..water(1.0) }).collect::<Vec<_>>();
    let first = flood.send(batch(0)).await;
    flood.wait_acked(first, Duration::from_secs(20)).await;
    flood.send(batch(6000)).await;
    wait_for("the flood refused", Duration::from_secs(20), || async move { (rejected(http, "rate_limited").await == 1.0).then_some(()) }).await;
    // Another gateway is not held back.
    let mut calm = FakeGateway::connect(&c.mqtt_url, "gw-calm").await;
    let seq = calm.send(vec![Reading { sensor: "wl-2".into(), ..water(2.0) }]).await;
    calm.wait_acked(seq, Duration::from_secs(20)).await;
    // The refused batch is neither stored nor acknowledged: its agent still holds it and sends it again.
    assert_eq!(metric(http, "citysense_readings_stored_total").await, 6001.0);
    assert_eq!(series_values(http, "wl-1", "water_level_m").await.len(), 6000);
    c.shutdown().await;
}

/// The deploy guide's Mosquitto setup: its password file and
/// deploy/mosquitto-acl.conf keep gateways to their own topics there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_with_the_deployed_acl_keeps_each_gateway_to_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let passwd = d.join("passwd");
    for (i, (user, pw)) in [("gw-a", PW_A), ("gw-b", PW_B), ("citysense-collector", "collector-password-0123456789")].iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd.arg(&passwd).arg(user).arg(pw).status().expect("mosquitto_passwd (Debian's mosquitto package): run ./tests/run");
        assert!(ok.success());
    }
    let acl = workspace().join("deploy/mosquitto-acl.conf");
    let mosquitto = Mosquitto::start(d, &format!("allow_anonymous false\npassword_file {}\nacl_file {}", passwd.display(), acl.display())).unwrap_or_else(|e| panic!("{e:#}"));
    let url = mosquitto.url();
    let text = format!(
        "[mqtt]\nexternal = \"{url}\"\nusername = \"citysense-collector\"\npassword_file = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n{}",
        secret_file(d, "collector.password", "collector-password-0123456789").display(),
        d.join("store").display(),
        keys_only_toml(d)
    );
    let cfg: collector::config::CollectorConfig = shared::config::parse("mosquitto collector", &text, d).unwrap_or_else(|e| panic!("{e}"));
    let c = collector::Collector::start(cfg).await.unwrap();
    let http = c.http_addr;

    assert!(FakeGateway::connect_as(&url, "gw-a", Identity { login: Some(("gw-a".into(), "guess".into())), ..gw_a() }).await.is_err(), "wrong password");
    let mut a = FakeGateway::connect_as(&url, "gw-a", gw_a()).await.unwrap();
    let mut b = FakeGateway::connect_as(&url, "gw-b", Identity { login: Some(("gw-b".into(), PW_B.into())), key: Some(KEY_B.as_bytes().to_vec()), tls: None }).await.unwrap();
    // A asks for B's acks and publishes on B's topic; Mosquitto drops both silently.
    a.client.subscribe(shared::topics::ack("gw-b"), rumqttc::QoS::AtLeastOnce).await.unwrap();
    let sealed_by_a = shared::auth::seal_batch(KEY_A.as_bytes(), shared::Batch::new("gw-b", 1, vec![Reading { seq: shared::Seq(1), ..water(9.1) }]).encode());
    a.client.publish(shared::topics::up("gw-b"), rumqttc::QoS::AtLeastOnce, false, sealed_by_a).await.unwrap();
    for _ in 0..3 {
        let seq = b.send(vec![Reading { sensor: "wl-2".into(), ..water(2.5) }]).await;
        b.wait_acked(seq, Duration::from_secs(20)).await;
    }
    let seq = a.send(vec![water(1.5)]).await;
    a.wait_acked(seq, Duration::from_secs(20)).await;
    assert_eq!(a.foreign.load(std::sync::atomic::Ordering::Relaxed), 0, "A received B's acks");
    assert_eq!(rejected(http, "unauthenticated").await, 0.0, "A's publish on B's topic never reached the collector");
    assert_eq!(metric(http, "citysense_readings_stored_total").await, 4.0);
    c.shutdown().await;
}
