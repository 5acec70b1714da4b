//! TLS through the real listeners: only certified gateways get in, a real
//! agent delivers through it, HTTPS answers and plain HTTP on it does not.

mod common;

use std::time::Duration;

use common::credentials::*;
use common::*;
use sim::{City, RunningCity};

/// Test certificates: a CA the collector trusts, its server and client
/// certificates, an expired client certificate, and one from a foreign CA.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    client_b: (String, String),
    expired: (String, String),
    foreign: (String, String),
}

fn pki() -> Pki {
    use common::pki::{authority, leaf};
    use rcgen::ExtendedKeyUsagePurpose;
    let (ca, issuer) = authority("citysense test CA");
    let (_, stranger) = authority("someone else's CA");
    Pki {
        server: leaf(&issuer, "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth, false),
        client: leaf(&issuer, "gw-a", ExtendedKeyUsagePurpose::ClientAuth, false),
        client_b: leaf(&issuer, "gw-b", ExtendedKeyUsagePurpose::ClientAuth, false),
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

    // gw-a's certificate with gw-b's password: the certificate must name its user.
    let b_with_a_cert = Identity { login: Some(("gw-b".into(), PW_B.into())), key: Some(KEY_B.as_bytes().to_vec()), tls: tls(Some(&pki.client)) };
    assert!(FakeGateway::connect_as(&c.mqtt_url, "gw-b", b_with_a_cert).await.is_err(), "gw-a's certificate admitted gw-b");
    // Another authenticated gateway trying to ack for A is cut off.
    let mut b =
        FakeGateway::connect_as(&c.mqtt_url, "gw-b", Identity { login: Some(("gw-b".into(), PW_B.into())), key: Some(KEY_B.as_bytes().to_vec()), tls: tls(Some(&pki.client_b)) })
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

/// The collector reaches an external broker over TLS: Mosquitto with a TLS
/// listener that requires a client certificate, the collector given the CA
/// (`mqtt.ca_file`) and its own certificate (`cert_file`, `key_file`). A
/// gateway's batch on that listener is acknowledged through it. A CA file
/// that holds no certificate stops the start, naming the setting and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_reaches_an_external_broker_over_tls_with_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki();
    let f = |name: &str, pem: &str| secret_file(d, name, pem).display().to_string();
    let (ca, cert, key) = (f("ca.pem", &pki.ca), f("server.pem", &pki.server.0), f("server.key", &pki.server.1));
    let broker = support::Mosquitto::start(d, &format!("allow_anonymous true\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\npersistence false")).unwrap();
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let (own_cert, own_key) = (f("collector.pem", &pki.client_b.0), f("collector.key", &pki.client_b.1));
    let config = |ca_file: &str| {
        let text = format!(
            "[mqtt]\nexternal = \"{url}\"\nca_file = \"{ca_file}\"\ncert_file = \"{own_cert}\"\nkey_file = \"{own_key}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n",
            d.join("store").display()
        );
        shared::config::parse::<collector::config::CollectorConfig>("collector over mqtts", &text, d).unwrap_or_else(|e| panic!("{e}"))
    };

    let not_pem = f("not-a-ca.pem", "this is no certificate");
    let e = collector::Collector::start(config(&not_pem)).await.err().expect("a CA file without a certificate stops the start").to_string();
    assert!(e.contains("mqtt.ca_file") && e.contains("not-a-ca.pem") && e.contains("no PEM certificate"), "{e}");

    let c = collector::Collector::start(config(&ca)).await.unwrap();
    let tls = Some(rumqttc::Transport::tls(pki.ca.clone().into_bytes(), Some((pki.client.0.clone().into_bytes(), pki.client.1.clone().into_bytes())), None));
    let mut gw = FakeGateway::connect_as(&url, "gw-a", Identity { tls, ..Identity::default() }).await.expect("the gateway gets in with its certificate");
    let reading =
        shared::Reading { seq: shared::Seq(0), sensor: "wl-1".into(), metric: "water_level_m".into(), ts_ms: shared::now_ms(), value: 2.5, quality: shared::Quality::Good };
    let seq = gw.send(vec![reading]).await;
    gw.wait_acked(seq, Duration::from_secs(30)).await;
    assert_eq!(c.store.last("wl-1", "water_level_m").unwrap().map(|s| s.value), Some(2.5));
    c.shutdown().await;
}
