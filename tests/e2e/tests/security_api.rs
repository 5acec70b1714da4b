//! API security through the real interfaces: roles and the audit log,
//! oversized input, and the refusal to listen beyond loopback unprotected.

mod common;

use std::process::Command;
use std::time::Duration;

use common::credentials::*;
use common::*;
use shared::{Quality, Reading};

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
    // Newest first: the ack, the refused ack without a token, the viewer's refused ack, the rule, two refused rules.
    let outcomes: Vec<_> = log.iter().map(|e| (e["who"].as_str().unwrap().to_string(), e["status"].as_u64().unwrap())).collect();
    let expected = [("duty-officer", 200), ("(no token)", 401), ("wall-screen", 403), ("platform-team", 201), ("duty-officer", 403), ("wall-screen", 403)];
    assert_eq!(outcomes, expected.map(|(w, s)| (w.to_string(), s)).to_vec(), "{log:?}");
    assert_eq!((log[0]["role"].as_str(), log[0]["method"].as_str()), (Some("operator"), Some("POST")));
    assert_eq!(log[0]["path"], ack.as_str());
    assert_eq!(log[2]["path"], ack.as_str(), "a viewer's attempt to silence an alert is on record");
    assert!(log[1]["role"].is_null());
    assert!(log[0]["body"].as_str().unwrap().contains("on my way"));
    assert!(log[0]["ts_ms"].as_i64().unwrap() > shared::now_ms() - 60_000);
    // The token in the query is for the stream only (URLs end up in logs).
    assert_eq!(get(http, &format!("/api/v1/alerts?access_token={VIEWER}")).await.0, 401);

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
