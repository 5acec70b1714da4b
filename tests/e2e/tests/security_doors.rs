//! The side doors of issue 24, tried as an attacker on the city network
//! would, through the real listeners: wills, second CONNECTs and client-id
//! takeovers against the embedded broker's front (and its loopback port),
//! ids in batches, and cross-site, rebinding and slow clients against an
//! open-mode API.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::credentials::*;
use common::raw_mqtt::Raw;
use common::*;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use shared::topics;

fn refused(metrics: &str, reason: &str) -> f64 {
    metric_in(metrics, &format!("citysense_mqtt_refused_total{{reason=\"{reason}\"}}")).unwrap_or(-1.0)
}

fn feed_user() -> String {
    format!("[[mqtt.user]]\nname = \"emergency-command\"\npassword_sha256 = \"{}\"\n", shared::auth::sha256_hex("feed-password-0123456789"))
}

const FEED: (&str, &str) = ("emergency-command", "feed-password-0123456789");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_second_connects_and_foreign_client_ids_are_refused_at_the_front() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, &format!("{}{}", gateways_toml(dir.path()), feed_user())).await;
    let (url, http) = (c.mqtt_url.clone(), c.http_addr);
    let emergency = format!("{}alerts/emergency/wl-001", topics::PREFIX);
    // The emergency-command subscriber, listening to alerts and gateway state.
    let (mut watcher, ok) = Raw::login(&url, "emergency-command-1", Some(FEED), None).await;
    assert_eq!(ok, Ok(()));
    watcher.subscribe(&format!("{}alerts/#", topics::PREFIX)).await;
    assert!(matches!(watcher.next().await, Some(Packet::SubAck(_))));

    // 1. A forged retained will, as gw-a and as the read-only feed user: refused at CONNECT.
    let (_, r) = Raw::login(&url, "citysense-agent-gw-a", Some(("gw-a", PW_A)), Some((&emergency, b"levee breach, evacuate", true))).await;
    assert_eq!(r, Err(Some(ConnectReturnCode::NotAuthorized)), "gw-a's will on the emergency alert topic");
    let (_, r) = Raw::login(&url, "citysense-agent-gw-a", Some(("gw-a", PW_A)), Some((&topics::state("gw-b"), br#"{"status":"offline","ts_ms":1}"#, true))).await;
    assert_eq!(r, Err(Some(ConnectReturnCode::NotAuthorized)), "gw-a's will on gw-b's state");
    let (_, r) = Raw::login(&url, "emergency-command-2", Some(FEED), Some((&topics::state("gw-ghost"), br#"{"status":"online","ts_ms":1}"#, true))).await;
    assert_eq!(r, Err(Some(ConnectReturnCode::NotAuthorized)), "a reader's will");
    // The agent's own will (its offline state, retained) is what a gateway may leave.
    let (own, r) = Raw::login(&url, "citysense-agent-gw-a", Some(("gw-a", PW_A)), Some((&topics::state("gw-a"), br#"{"status":"offline","ts_ms":1}"#, true))).await;
    assert_eq!(r, Ok(()), "the agent's own will");
    own.vanish();

    // 2. A second CONNECT, as gw-b with a wrong password: the connection is closed.
    let (mut a, r) = Raw::login(&url, "citysense-agent-gw-a", Some(("gw-a", PW_A)), None).await;
    assert_eq!(r, Ok(()));
    a.connect("citysense-agent-gw-b", Some(("gw-b", "guess")), None).await;
    a.publish(&topics::state("gw-b"), br#"{"status":"online","ts_ms":1}"#, true).await;
    assert!(a.closed().await, "a second CONNECT keeps the connection");

    // 3. Client ids: the collector's own namespace and another gateway's id are refused.
    for id in ["citysense-collector-1", "citysense-collector-1-live", "citysense-agent-gw-b", ""] {
        let (_, r) = Raw::login(&url, id, Some(("gw-a", PW_A)), None).await;
        assert_eq!(r, Err(Some(ConnectReturnCode::BadClientId)), "gw-a as client id {id:?}");
    }
    let (_, r) = Raw::login(&url, "citysense-agent-gw-a", Some(("emergency-command", FEED.1)), None).await;
    assert_eq!(r, Err(Some(ConnectReturnCode::BadClientId)), "a reader as a gateway's client id");

    // 4. The broker's loopback port behind the front takes no gateway's password.
    let (_, r) = Raw::login(&c.mqtt_inner, "citysense-agent-gw-a", Some(("gw-a", PW_A)), None).await;
    assert!(r.is_err(), "the inner port admitted gw-a's real login");
    let (_, r) = Raw::login(&c.mqtt_inner, "citysense-collector-x", Some(("citysense-collector", "")), None).await;
    assert!(r.is_err(), "the inner port admitted the collector's user without its run password");

    // Nothing forged reached the subscriber; every refusal is counted.
    let m = wait_for("the refusals counted", Duration::from_secs(10), || async move {
        let (_, m) = get(http, "/metrics").await;
        (refused(&m, "will") == 3.0 && refused(&m, "second_connect") == 1.0 && refused(&m, "client_id") == 5.0).then_some(m)
    })
    .await;
    assert_eq!(refused(&m, "login"), 0.0, "{m}");
    let (_, gws) = get(http, "/api/v1/gateways").await;
    assert!(!gws.contains("gw-ghost"), "a gateway that does not exist is listed: {gws}");

    // The collector's own connections were never knocked off: gateways are still served.
    let mut b = FakeGateway::connect_as(&url, "gw-b", Identity { login: Some(("gw-b".into(), PW_B.into())), key: Some(KEY_B.as_bytes().to_vec()), tls: None }).await.unwrap();
    let seq = b.send(vec![shared::Reading { sensor: "wl-2".into(), ..water(2.5) }]).await;
    b.wait_acked(seq, Duration::from_secs(20)).await;
    // The subscriber got no forged alert (the first packet it sees now is the broker closing, or nothing).
    let forged = tokio::time::timeout(Duration::from_millis(300), watcher.next()).await;
    assert!(!matches!(forged, Ok(Some(Packet::Publish(_)))), "a forged alert reached the emergency subscriber: {forged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_and_metric_ids_in_batches_follow_the_config_rules() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, "").await;
    let http = c.http_addr;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-ids").await;
    for (sensor, metric) in [("<img src=x onerror=alert(1)>", "m"), ("wl-1", "a/b/#"), ("ctl\u{7}", "m"), (&"x".repeat(100_000) as &str, "m")] {
        gw.send(vec![shared::Reading { sensor: sensor.into(), metric: metric.into(), ..water(1.0) }]).await;
    }
    wait_for("four batches refused as invalid_id", Duration::from_secs(20), || async move { (rejected(http, "invalid_id").await == 4.0).then_some(()) }).await;
    // A gateway with valid ids is served (a fresh one: the refused seqs leave a gap in gw-ids').
    let mut ok = FakeGateway::connect(&c.mqtt_url, "gw-valid").await;
    let seq = ok.send(vec![water(1.5)]).await;
    ok.wait_acked(seq, Duration::from_secs(20)).await;
    assert_eq!(metric(http, "citysense_readings_stored_total").await, 1.0, "only the valid reading was stored");
    let (_, sensors) = get(http, "/api/v1/sensors").await;
    assert!(!sensors.contains("img") && !sensors.contains("a/b"), "{sensors}");
}

/// Against an open-mode (loopback, token-less) collector, what a web page in
/// the operator's browser could send: a text/plain "simple" request, a
/// foreign Origin, a rebinding Host. Then slow and piled-up connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_rebinding_and_slow_clients_are_refused_by_an_open_api() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\nheader_timeout = \"1s\"\nmax_connections_per_peer = 8\n[store]\npath = \"{}\"\n",
        dir.path().join("store").display()
    );
    let cfg: collector::config::CollectorConfig = shared::config::parse("open collector", &text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let c = collector::Collector::start(cfg).await.unwrap();
    let http = c.http_addr;
    let rule = r#"{"id":"csrf","kind":"threshold","metric":"water_level_m","op":">","value":0.0,"severity":"info"}"#;
    let raw = |head: String| async move {
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let t = String::from_utf8_lossy(&buf).into_owned();
        (t.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0), t)
    };
    let post = |host: String, extra: &str, ctype: &str| {
        format!("POST /api/v1/rules HTTP/1.0\r\nHost: {host}\r\n{extra}Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{rule}", rule.len())
    };
    // A form or no-preflight fetch: text/plain.
    assert_eq!(raw(post(http.to_string(), "", "text/plain")).await.0, 415);
    // JSON from another origin (would need a preflight a browser never gets granted; curl-like senders are checked too).
    assert_eq!(raw(post(http.to_string(), "Origin: http://evil.example\r\n", "application/json")).await.0, 403);
    // DNS rebinding: same origin as far as the browser knows, foreign Host.
    assert_eq!(raw(post("evil.example:8080".into(), "Origin: http://evil.example:8080\r\n", "application/json")).await.0, 403);
    assert_eq!(raw(format!("GET /api/v1/sensors HTTP/1.0\r\nHost: evil.example:{}\r\n\r\n", http.port())).await.0, 403);
    let (_, rules) = get(http, "/api/v1/rules").await;
    assert!(!rules.contains("csrf"), "a cross-site write created a rule: {rules}");
    // The dashboard's own JSON write still works.
    assert_eq!(raw(post(http.to_string(), &format!("Origin: http://{http}\r\n"), "application/json")).await.0, 201);
    // Refusals are counted and the refused writes audited.
    let (_, m) = get(http, "/metrics").await;
    for (reason, n) in [("content_type", 1.0), ("origin", 1.0), ("host", 2.0)] {
        assert_eq!(metric_in(&m, &format!("citysense_http_refused_total{{reason=\"{reason}\"}}")), Some(n), "{reason}\n{m}");
    }
    let log: Vec<serde_json::Value> = serde_json::from_str(&get(http, "/api/v1/audit").await.1).unwrap();
    let statuses: Vec<u64> = log.iter().map(|e| e["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 403, 403, 415], "{log:?}");

    // Security headers on the page.
    let (_, page) = raw(format!("GET / HTTP/1.0\r\nHost: {http}\r\n\r\n")).await;
    assert!(page.contains("frame-ancestors 'none'") && page.to_ascii_lowercase().contains("x-content-type-options: nosniff"), "{page}");

    // A half-sent request is closed after the header timeout (1 s here).
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(http).await.unwrap();
    slow.write_all(b"GET /api/v1/sensors HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await.expect("a half-sent request is closed").ok();
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(900) && held < Duration::from_secs(5), "held for {held:?}");
    // At most 8 connections from one peer: the 9th is closed at once.
    let mut held_open = Vec::new();
    for _ in 0..8 {
        held_open.push(tokio::net::TcpStream::connect(http).await.unwrap());
    }
    let mut ninth = tokio::net::TcpStream::connect(http).await.unwrap();
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), ninth.read(&mut b)).await.expect("the 9th connection is closed at once").unwrap_or(0);
    assert_eq!(n, 0);
    drop(held_open);
    let counted = wait_for("the capped connection counted", Duration::from_secs(10), || async move {
        let (_, m) = get(http, "/metrics").await;
        metric_in(&m, "citysense_http_refused_total{reason=\"connection_cap\"}").filter(|n| *n >= 1.0)
    })
    .await;
    // The 9th, and any request that came while the 8 were still being closed on the server's side.
    assert!(counted >= 1.0);
    c.shutdown().await;
}
