//! No batch or ack can break delivery: the poisoning found on the demo (one
//! batch at seq 2^62 made the collector ack 2^62 and take every later honest
//! reading for a replay) is refused, counted and shown, while a real agent's
//! readings keep being stored; a forged ack above anything sent deletes
//! nothing at the agent. Through the real broker, collector and agent, in
//! open mode and with batch keys (where the only sender that can seal a batch
//! is the gateway itself: a broken agent, a restored disk image).

mod common;

use std::time::Duration;

use common::*;
use rumqttc::QoS;
use serde_json::Value;
use shared::{Batch, Quality, Reading, Seq};
use sim::{City, RunningCity};

const LIMIT: Duration = Duration::from_secs(30);
const POISON: u64 = 1 << 62;
const KEY: &str = "batch-key-of-gw-guard-0123456789abcdef";

fn poison_batch(epoch: u64) -> Vec<u8> {
    let r = Reading { seq: Seq(POISON), sensor: "aq-001".into(), metric: "pm25".into(), ts_ms: shared::now_ms(), value: 999.0, quality: Quality::Good };
    Batch::new("gw-guard", POISON, vec![r]).in_epoch(epoch).encode()
}

async fn gateway_view(http: std::net::SocketAddr) -> Value {
    let gws = get_json(http, "/api/v1/gateways").await;
    gws.as_array().unwrap().iter().find(|g| g["id"] == "gw-guard").cloned().unwrap_or(Value::Null)
}

fn agent_status(agent: &agent::Agent) -> Value {
    let addr = agent.status_addr;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(s, "GET /status HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap()
}

async fn poisoning_is_refused(keyed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let plan = City { air: 1, traffic: 0, water: 0, noise: 0 };
    let mut catalogue = sim::run::catalogue_toml(&plan.sensors());
    let key_file = dir.path().join("gw-guard.key");
    std::fs::write(&key_file, KEY).unwrap();
    if keyed {
        catalogue.push_str(&format!("\n[[gateway]]\nid = \"gw-guard\"\nbatch_key_file = \"{}\"\n", key_file.display()));
    }
    let c = collector(dir.path(), None, &catalogue).await;
    let broker = shared::url::BrokerUrl::parse(&c.mqtt_url).unwrap();
    let city = RunningCity::start(plan, Some((broker.host.clone(), broker.port)), Duration::from_millis(200)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let mut cfg = agent_config(dir.path(), "gw-guard", &c.mqtt_url, &sim::run::modbus_toml(&devices, Duration::from_millis(200)), None);
    if keyed {
        cfg.uplink.batch_key_file = Some(key_file.clone());
    }
    let agent = agent::Agent::start(cfg).await.unwrap();
    let http = c.http_addr;
    wait_for("the agent's first readings", LIMIT, || async { latest(http, "aq-001", "pm25").await }).await;
    let epoch = agent_status(&agent)["epoch"].as_u64().expect("the agent reports its outbox epoch");
    assert_ne!(epoch, 0, "a new outbox has an epoch of its own");

    // The poison, on the gateway's own topic, in its own epoch (sealed with its key when keys are on).
    let (evil, mut el) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("evil", broker.host.clone(), broker.port), 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let seal = |b: Vec<u8>| if keyed { shared::auth::seal_batch(KEY.as_bytes(), b) } else { b };
    evil.publish(shared::topics::up("gw-guard"), QoS::AtLeastOnce, false, seal(poison_batch(epoch))).await.unwrap();
    // And an empty batch whose only content is a floor at 2^62.
    evil.publish(shared::topics::up("gw-guard"), QoS::AtLeastOnce, false, seal(Batch::new("gw-guard", POISON, vec![]).in_epoch(epoch).encode())).await.unwrap();
    wait_for("the seq jump to be refused", LIMIT, || async { (rejected(http, "seq_jump").await >= 1.0).then_some(()) }).await;
    wait_for("the empty batch to be refused", LIMIT, || async { (rejected(http, "invalid").await >= 1.0).then_some(()) }).await;

    // Nothing acked beyond what was received, no absurd drop count, honest readings still stored.
    let stored_before = metric(http, "citysense_readings_stored_total").await;
    wait_for("honest readings after the poison", LIMIT, || async { (metric(http, "citysense_readings_stored_total").await > stored_before + 5.0).then_some(()) }).await;
    let gw = gateway_view(http).await;
    assert!(gw["acked_seq"].as_u64().unwrap() < 1_000_000, "acked seq jumped: {gw}");
    assert_eq!(gw["epoch"].as_u64(), Some(epoch), "{gw}");
    assert!(metric(http, "citysense_readings_dropped_at_agent_total").await < 1_000.0);
    let progress = get_json(http, "/api/v1/gateways/gw-guard/progress").await;
    assert!(progress[0]["acked_seq"].as_u64().unwrap() < 1_000_000, "{progress}");
    // The honest value is the latest, not the poison's 999.
    assert_ne!(latest(http, "aq-001", "pm25").await, Some(999.0));

    // A forged ack far above anything sent deletes nothing at the agent.
    let acked_before = agent_status(&agent)["acked_seq"].as_u64().unwrap();
    let mac = keyed.then(|| shared::auth::ack_mac(KEY.as_bytes(), "gw-guard", epoch, Seq(POISON)));
    let forged = serde_json::to_vec(&shared::wire::Ack { seq: Seq(POISON), epoch, mac, ts_ms: None }).unwrap();
    evil.publish(shared::topics::ack("gw-guard"), QoS::AtLeastOnce, false, forged).await.unwrap();
    let ignored = wait_for("the agent to ignore the forged ack", LIMIT, || async { Some(agent_status(&agent)).filter(|s| s["acks_ignored"].as_u64() >= Some(1)) }).await;
    assert!(ignored["acked_seq"].as_u64().unwrap() < 1_000_000, "the agent took the forged ack: {ignored}");
    assert!(ignored["acked_seq"].as_u64().unwrap() >= acked_before);
    // And it goes on delivering.
    let stored = metric(http, "citysense_readings_stored_total").await;
    wait_for("delivery after the forged ack", LIMIT, || async { (metric(http, "citysense_readings_stored_total").await > stored + 5.0).then_some(()) }).await;
    agent.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_sequence_is_refused_and_the_gateway_keeps_delivering_in_open_mode() {
    poisoning_is_refused(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_sequence_is_refused_and_the_gateway_keeps_delivering_with_batch_keys() {
    poisoning_is_refused(true).await;
}

/// An operator can see and reset a gateway's progress (admin, audited): for
/// a gateway that restarted its seqs in the same epoch (a restored image).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_resets_a_gateways_progress_and_its_restarted_seqs_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, "").await;
    let http = c.http_addr;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-img").await;
    let r =
        |v: f64| Reading { seq: Seq(0), sensor: "wl-9".into(), metric: "water_level_m".into(), ts_ms: 1_700_000_000_000 + (v * 1000.0) as i64, value: v, quality: Quality::Good };
    let seq = gw.send((1..=5).map(|i| r(i as f64)).collect()).await;
    gw.wait_acked(seq, LIMIT).await;
    let p = get_json(http, "/api/v1/gateways/gw-img/progress").await;
    assert_eq!(p[0]["acked_seq"], 5, "{p}");
    // Restored from an old image: seqs 1.. again, with new readings: taken for replays.
    let mut restored = FakeGateway::connect(&c.mqtt_url, "gw-img").await;
    restored.send(vec![r(6.0)]).await;
    wait_for("the restored gateway's reading to count as a duplicate", LIMIT, || async { (metric(http, "citysense_readings_duplicate_total").await >= 1.0).then_some(()) }).await;
    assert_eq!(request(http, "DELETE", "/api/v1/gateways/gw-img/progress?epoch=x", "").await.0, 400);
    let (status, body) = request(http, "DELETE", "/api/v1/gateways/gw-img/progress?epoch=0", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(request(http, "GET", "/api/v1/gateways/gw-img/progress", "").await.0, 404);
    drop(restored);
    // The image's agent sends its seqs from 1 again: now a sequence of their own.
    let mut again = FakeGateway::connect(&c.mqtt_url, "gw-img").await;
    let seq = again.send(vec![r(7.0)]).await;
    again.wait_acked(seq, LIMIT).await;
    assert_eq!(latest(http, "wl-9", "water_level_m").await, Some(7.0));
    let audit = get_json(http, "/api/v1/audit").await;
    assert!(audit.as_array().unwrap().iter().any(|e| e["method"] == "DELETE" && e["path"] == "/api/v1/gateways/gw-img/progress"), "{audit}");
    c.shutdown().await;
}
