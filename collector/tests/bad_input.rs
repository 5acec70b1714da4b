//! Malformed, foreign-version and mislabelled batches are rejected and counted;
//! the collector keeps serving and still stores good batches exactly once.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shared::{topics, Batch, Quality, Reading};
use support::*;

fn reading(seq: u64) -> Reading {
    Reading {
        seq: shared::Seq(seq),
        sensor: "wl-900".into(),
        metric: "water_level_m".into(),
        ts_ms: 1_700_000_000_000 + seq as i64 * 1000,
        value: 2.0 + seq as f64 / 100.0,
        quality: Quality::Good,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_rejected_counted_and_never_stop_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, "").await;
    let broker = shared::url::BrokerUrl::parse(&c.mqtt_url).unwrap();
    let mut opts = MqttOptions::new("forger", broker.host.clone(), broker.port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, 100);
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<u64>();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let a: shared::wire::Ack = serde_json::from_slice(&p.payload).unwrap();
                    let _ = acks_tx.send(a.seq.get());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    client.subscribe(topics::ack("gw-a"), QoS::AtLeastOnce).await.unwrap();
    let up = topics::up("gw-a");

    client.publish(&up, QoS::AtLeastOnce, false, b"\x01garbage that is no batch".to_vec()).await.unwrap();
    client.publish(&up, QoS::AtLeastOnce, false, Vec::new()).await.unwrap();
    let mut future = Batch::new("gw-a", 1, vec![reading(1)]);
    future.version = 9;
    client.publish(&up, QoS::AtLeastOnce, false, future.encode()).await.unwrap();
    // A batch that claims another gateway than its topic.
    client.publish(&up, QoS::AtLeastOnce, false, Batch::new("gw-b", 1, vec![reading(1)]).encode()).await.unwrap();
    let out_of_order = Batch::new("gw-a", 1, vec![reading(2), reading(1)]);
    client.publish(&up, QoS::AtLeastOnce, false, out_of_order.encode()).await.unwrap();

    // Then good batches, one of them twice.
    let good = Batch::new("gw-a", 1, vec![reading(1), reading(2), reading(3)]);
    client.publish(&up, QoS::AtLeastOnce, false, good.encode()).await.unwrap();
    client.publish(&up, QoS::AtLeastOnce, false, good.encode()).await.unwrap();
    client.publish(&up, QoS::AtLeastOnce, false, Batch::new("gw-a", 1, vec![reading(4)]).encode()).await.unwrap();

    let mut last_ack = 0;
    while last_ack < 4 {
        last_ack = tokio::time::timeout(Duration::from_secs(20), acks.recv()).await.expect("an ack within 20 s").unwrap();
    }
    assert_eq!(last_ack, 4);
    assert_eq!(rejected(c.http_addr, "undecodable").await, 2.0);
    assert_eq!(rejected(c.http_addr, "unknown_version").await, 1.0);
    assert_eq!(rejected(c.http_addr, "gateway_mismatch").await, 1.0);
    assert_eq!(rejected(c.http_addr, "invalid").await, 1.0);
    assert_eq!(metric(c.http_addr, "citysense_readings_stored_total").await, 4.0);
    assert_eq!(metric(c.http_addr, "citysense_readings_duplicate_total").await, 3.0);
    let values = series_values(c.http_addr, "wl-900", "water_level_m").await;
    assert_eq!(values, vec![2.01, 2.02, 2.03, 2.04]);
    assert!(get_json(c.http_addr, "/api/v1/sensors").await.as_array().unwrap().iter().any(|s| s["id"] == "wl-900" && s["catalogued"] == false));

    let (status, _) = get(c.http_addr, "/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = get(c.http_addr, "/api/v1/series?metric=pm25").await;
    assert_eq!((status, body.contains("`sensor` is required")), (400, true), "{body}");
    let (status, body) = get(c.http_addr, "/api/v1/series?sensor=a&metric=b&from=yesterday").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(c.http_addr, "/api/v1/nothing").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    c.shutdown().await;
}

/// Parameters at the edges of their types get a 400 naming the parameter:
/// no panic (debug builds check overflow), no endless loop, no unbounded
/// allocation, and the collector keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_query_parameters_get_a_400_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, "").await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-q").await;
    let seq = gw.send((1..=3).map(reading).collect()).await;
    gw.wait_acked(seq, Duration::from_secs(20)).await;
    let s = "/api/v1/series?sensor=wl-900&metric=water_level_m";
    let cases = [
        (format!("{s}&from=-9223372036854775808"), "from"),
        (format!("{s}&to=9223372036854775807"), "to"),
        (format!("{s}&from=-1"), "from"),
        (format!("{s}&from=-584542046091y"), "from"),
        (format!("{s}&from=0&to=-99999999999y"), "to"),
        (format!("{s}&from=0&step=0"), "step"),
        (format!("{s}&from=0&step=-5"), "step"),
        (format!("{s}&from=0&step=9223372036854775807"), "step"),
        (format!("{s}&from=0&step=10000000y"), "step"),
        (format!("{s}&from=0&step=1s&agg=median"), "agg"),
        (format!("{s}&from=10&to=5"), "from"),
        ("/api/v1/export?from=-9223372036854775808".to_string(), "from"),
        ("/api/v1/export?from=0&to=9223372036854775807".to_string(), "to"),
        ("/api/v1/audit?limit=-1".to_string(), "limit"),
        ("/api/v1/audit?from=99999999999999999999".to_string(), "from"),
        ("/api/v1/stream?types=everything".to_string(), "types"),
        ("/api/v1/gateways/gw-q/progress?x=1".to_string(), "x"),
    ];
    for (path, param) in &cases {
        let (status, body) = get(c.http_addr, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(param), "{path}: the answer does not name `{param}`: {body}");
    }
    // A whole-range query with the finest step is answered (buckets exist only where samples are).
    let (status, body) = get(c.http_addr, &format!("{s}&from=0&to=253402300799999&step=1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["points"].as_array().unwrap().len(), 3);
    assert_eq!(get(c.http_addr, "/healthz").await.0, 200);
    c.shutdown().await;
}
