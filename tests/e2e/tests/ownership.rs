//! Sensor ownership through the real broker and collector: a gateway speaks
//! only for its own sensors, in open mode and with batch keys.

mod common;

use std::time::Duration;

use common::credentials::*;
use common::*;
use serde_json::Value;
use shared::{Quality, Reading};

const LIMIT: Duration = Duration::from_secs(20);

/// wl-b is gw-b's; a rule that would raise an emergency on a forged flood.
const CATALOGUE: &str = r#"
[[sensor]]
id = "wl-b"
kind = "water_level"
gateway = "gw-b"

[[rule]]
id = "flood"
kind = "threshold"
metric = "water_level_m"
op = ">"
value = 5
clear = 3
severity = "emergency"
select = { sensor = "wl-*" }
"#;

fn level(sensor: &str, value: f64) -> Reading {
    Reading { seq: shared::Seq(0), sensor: sensor.into(), metric: "water_level_m".into(), ts_ms: now_ms() - 1_000, value, quality: Quality::Good }
}

async fn gateway(http: std::net::SocketAddr, id: &str) -> Value {
    let all = get_json(http, "/api/v1/gateways").await;
    all.as_array().unwrap().iter().find(|g| g["id"] == id).cloned().unwrap_or(Value::Null)
}

/// A's forged reading of B's sensor: refused (but acked), counted, shown on
/// A; B's own readings stored and alerting as before; nothing of A's raises
/// an alert.
async fn a_cannot_speak_for_b(c: &collector::Collector, a: &mut FakeGateway, b: &mut FakeGateway) {
    let http = c.http_addr;
    // A's batch: B's sensor (refused) and one of its own (kept).
    let seq = a.send(vec![level("wl-b", 9.9), level("wl-a", 1.0)]).await;
    a.wait_acked(seq, LIMIT).await;
    assert_eq!(metric(http, "citysense_readings_sensor_not_owned_total").await, 1.0);
    assert_eq!(series_values(http, "wl-a", "water_level_m").await, vec![1.0], "the rest of A's batch is stored");
    let ga = gateway(http, "gw-a").await;
    assert_eq!(ga["refused_readings"], 1, "{ga}");
    assert_eq!((ga["last_refused"]["sensor"].as_str(), ga["last_refused"]["owners"][0].as_str()), (Some("wl-b"), Some("gw-b")), "{ga}");
    // B's readings go on: low, then high enough for the rule.
    let seq = b.send(vec![level("wl-b", 1.2)]).await;
    b.wait_acked(seq, LIMIT).await;
    let seq = b.send(vec![level("wl-b", 7.7)]).await;
    b.wait_acked(seq, LIMIT).await;
    assert_eq!(series_values(http, "wl-b", "water_level_m").await, vec![1.2, 7.7], "only B's readings of wl-b are stored");
    let alerts = wait_for("B's flood alert", LIMIT, || async {
        let a = get_json(http, "/api/v1/alerts").await;
        (!a.as_array().unwrap().is_empty()).then_some(a)
    })
    .await;
    // Had A's 9.9 reached the rules, B's 1.2 would have resolved that alert and 7.7 opened a second.
    assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts[0]["value"], 7.7, "{alerts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_open_mode_a_gateway_speaks_only_for_its_own_sensors() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, CATALOGUE).await;
    let http = c.http_addr;
    let mut a = FakeGateway::connect(&c.mqtt_url, "gw-a").await;
    let mut b = FakeGateway::connect(&c.mqtt_url, "gw-b").await;
    a_cannot_speak_for_b(&c, &mut a, &mut b).await;

    // wl-a, uncatalogued, was bound to gw-a when first heard: B cannot take it over.
    let seq = b.send(vec![level("wl-a", 2.0)]).await;
    b.wait_acked(seq, LIMIT).await;
    assert_eq!(series_values(http, "wl-a", "water_level_m").await, vec![1.0]);
    assert_eq!(metric(http, "citysense_readings_sensor_not_owned_total").await, 2.0);
    // Until an operator moves it.
    let (status, body) = request(http, "PUT", "/api/v1/sensors/wl-a/gateway", r#"{"gateway": "gw-b"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""before":["gw-a"]"#), "{body}");
    let seq = b.send(vec![level("wl-a", 2.5)]).await;
    b.wait_acked(seq, LIMIT).await;
    assert_eq!(series_values(http, "wl-a", "water_level_m").await, vec![1.0, 2.5]);
    // A catalogued sensor's gateway is the config's.
    let (status, body) = request(http, "PUT", "/api/v1/sensors/wl-b/gateway", r#"{"gateway": "gw-a"}"#).await;
    assert_eq!(status, 409, "{body}");

    // Gateway ids nobody configured are listed as unknown.
    let mut evil = FakeGateway::connect(&c.mqtt_url, "gw-evil").await;
    let seq = evil.send(vec![level("wl-b", 9.9)]).await;
    evil.wait_acked(seq, LIMIT).await;
    let unknown = get_json(http, "/api/v1/gateways?known=false").await;
    let ids: Vec<&str> = unknown.as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"gw-evil") && ids.contains(&"gw-a") && !ids.contains(&"gw-b"), "{unknown}");
    assert_eq!(get(http, "/api/v1/gateways?known=maybe").await.0, 400);
    assert_eq!(series_values(http, "wl-b", "water_level_m").await, vec![1.2, 7.7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_batch_keys_a_gateway_cannot_get_another_gateways_sensor_stored() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, &format!("{}\n{CATALOGUE}", keys_only_toml(dir.path()))).await;
    let http = c.http_addr;
    let key = |k: &str| Identity { key: Some(k.as_bytes().to_vec()), ..Identity::default() };
    let mut a = FakeGateway::connect_as(&c.mqtt_url, "gw-a", key(KEY_A)).await.unwrap();
    let mut b = FakeGateway::connect_as(&c.mqtt_url, "gw-b", key(KEY_B)).await.unwrap();
    a_cannot_speak_for_b(&c, &mut a, &mut b).await;
    // Nor by claiming to be B, on B's topic, sealed with its own key.
    let (forged, _) = a.batch("gw-b", vec![level("wl-b", 9.8)]);
    a.client.publish(shared::topics::up("gw-b"), rumqttc::QoS::AtLeastOnce, false, forged).await.unwrap();
    wait_for("the forged batch refused", LIMIT, || async { (rejected(http, "unauthenticated").await >= 1.0).then_some(()) }).await;
    assert_eq!(series_values(http, "wl-b", "water_level_m").await, vec![1.2, 7.7]);
    let known = get_json(http, "/api/v1/gateways?known=true").await;
    assert_eq!(known.as_array().unwrap().len(), 2, "{known}");
}

/// Gateways whose clocks say 1970 and 2100 (batches as their agents would
/// send them, `sent_ms` by the same wrong clock): readings land on the
/// collector's time line, the offset is shown, `latest` stays sane, and
/// retention has nothing to delete because of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_from_a_wrong_clock_land_on_the_collectors_time() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, "").await;
    let http = c.http_addr;
    let mut client = FakeGateway::connect(&c.mqtt_url, "gw-1970").await;
    let mut other = FakeGateway::connect(&c.mqtt_url, "gw-2100").await;
    const Y2100: i64 = 4_102_444_800_000;
    for (gw, g, clock, value) in [("gw-1970", &mut client, 5_000i64, 1.5), ("gw-2100", &mut other, Y2100, 2.5)] {
        let reading = Reading { seq: shared::Seq(1), sensor: format!("wl-{gw}").into(), metric: "water_level_m".into(), ts_ms: clock - 1_000, value, quality: Quality::Good };
        let batch = shared::Batch::new(gw, 1, vec![reading]).sent_at(clock).encode();
        g.client.publish(shared::topics::up(gw), rumqttc::QoS::AtLeastOnce, false, batch).await.unwrap();
        g.wait_acked(1, LIMIT).await;
    }
    let before = now_ms();
    for (gw, value) in [("gw-1970", 1.5), ("gw-2100", 2.5)] {
        let sensor = format!("wl-{gw}");
        let v = get_json(http, &format!("/api/v1/series?sensor={sensor}&metric=water_level_m&from=0")).await;
        let p = &v["points"][0];
        assert_eq!(p["value"], value, "{v}");
        let ts = p["ts_ms"].as_i64().or_else(|| p["ts"].as_i64()).unwrap_or_else(|| panic!("{v}"));
        assert!((before - ts).abs() < 60_000, "stored near the collector's now, not at the gateway's: {v}");
        assert_eq!(latest(http, &sensor, "water_level_m").await, Some(value));
        let g = gateway(http, gw).await;
        let offset = g["clock_offset_ms"].as_i64().unwrap();
        assert!(offset.abs() > 1_000_000_000, "{g}");
        assert_eq!(g["clock_skewed_readings"], 1, "{g}");
    }
    assert_eq!(metric(http, "citysense_readings_clock_skew_total").await, 2.0);
}
