//! Gateway security through the real broker and collector: batch keys,
//! passwords and topic grants on the embedded broker and on Mosquitto with
//! the deployed ACL, and a flooding gateway slowed without loss.

mod common;

use std::process::Command;
use std::time::Duration;

use common::credentials::*;
use common::*;
use shared::Reading;
use sim::{City, RunningCity};

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
    drop(a);

    // Each on its own topics is served, acks signed.
    let mut a = FakeGateway::connect_as(&c.mqtt_url, "gw-a", gw_a()).await.unwrap();
    let seq = a.send(vec![water(1.5)]).await;
    a.wait_acked(seq, Duration::from_secs(20)).await;
    let seq = b.send(vec![Reading { sensor: "wl-2".into(), ..water(2.5) }]).await;
    b.wait_acked(seq, Duration::from_secs(20)).await;
    assert_eq!(series_values(http, "wl-1", "water_level_m").await, vec![1.5], "nothing forged was stored");
    assert_eq!(metric(http, "citysense_readings_stored_total").await, 2.0);
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
