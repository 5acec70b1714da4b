//! Alerts through the real interfaces: rules from the config and the API, a
//! forced anomaly in the simulator, the alert on SSE and MQTT, acknowledge and
//! resolve over HTTP, and a restart that neither forgets nor refires.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
use serde_json::Value;
use sim::{City, RunningCity};

const LIMIT: Duration = Duration::from_secs(30);

const RULES: &str = r#"
[[rule]]
id = "pm25-high"
kind = "threshold"
metric = "pm25"
op = ">"
value = 75
clear = 60
severity = "emergency"
select = { sensor = "aq-*", kind = "air_quality" }

[[rule]]
id = "gateway-down"
kind = "gateway_offline"
severity = "critical"
"#;

async fn next_mqtt(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Value)>, event: &str) -> (String, Value) {
    loop {
        let (topic, v) = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap_or_else(|_| panic!("no MQTT `{event}` alert")).unwrap();
        if v["event"] == event {
            return (topic, v);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_anomaly_raises_an_alert_on_every_feed_and_its_lifecycle_follows() {
    let dir = tempfile::tempdir().unwrap();
    let plan = City { air: 2, traffic: 0, water: 0, noise: 0 };
    let catalogue = format!("{}\n{RULES}", sim::run::catalogue_toml(&plan.sensors()));
    let c = collector(dir.path(), None, &catalogue).await;
    let b = shared::url::BrokerUrl::parse(&c.mqtt_url).unwrap();
    let city = RunningCity::start(plan, Some((b.host.clone(), b.port)), Duration::from_secs(1)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let agent = agent::Agent::start(agent_config(dir.path(), "gw-aq", &c.mqtt_url, &sim::run::modbus_toml(&devices, Duration::from_millis(200)), None)).await.unwrap();
    let mut sse = SseClient::connect(c.http_addr, "/api/v1/stream?types=alert").await;
    let mut mqtt = json_feed(&c.mqtt_url, "command-centre", "citysense/v1/alerts/#", QoS::AtLeastOnce).await;
    wait_for("normal readings", LIMIT, || async { latest(c.http_addr, "aq-001", "pm25").await }).await;

    city.control.force("aq-001", "pm25", 150.0);
    let fired = sse.next_where("alert", LIMIT, |v| v["event"] == "fired").await;
    assert_eq!((fired["rule"].as_str(), fired["sensor"].as_str(), fired["state"].as_str()), (Some("pm25-high"), Some("aq-001"), Some("firing")));
    assert_eq!((fired["value"].as_f64(), fired["threshold"].as_f64(), fired["severity"].as_str()), (Some(150.0), Some(75.0), Some("emergency")));
    let (topic, on_mqtt) = next_mqtt(&mut mqtt, "fired").await;
    assert_eq!(topic, "citysense/v1/alerts/emergency/aq-001");
    assert_eq!(on_mqtt["id"], fired["id"]);
    let id = fired["id"].as_u64().unwrap();

    // Between clear and the limit: no new alert, no resolution.
    city.control.force("aq-001", "pm25", 70.0);
    let (status, body) = post(c.http_addr, &format!("/api/v1/alerts/{id}/ack"), r#"{"by":"duty officer Li","note":"street sweeper sent"}"#).await;
    assert_eq!(status, 200, "{body}");
    let acked = sse.next_where("alert", LIMIT, |v| v["event"] == "acknowledged").await;
    assert_eq!((acked["acked_by"].as_str(), acked["note"].as_str()), (Some("duty officer Li"), Some("street sweeper sent")));
    assert_eq!(next_mqtt(&mut mqtt, "acknowledged").await.1["id"], id);
    let open = get_json(c.http_addr, "/api/v1/alerts?state=open").await;
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");

    city.control.force("aq-001", "pm25", 20.0);
    let resolved = sse.next_where("alert", LIMIT, |v| v["event"] == "resolved").await;
    assert_eq!((resolved["id"].as_u64(), resolved["state"].as_str()), (Some(id), Some("resolved")));
    assert_eq!(next_mqtt(&mut mqtt, "resolved").await.1["id"], id);

    // Bad lifecycle calls answer 4xx with a reason.
    assert_eq!(post(c.http_addr, &format!("/api/v1/alerts/{id}/ack"), r#"{"by":"x"}"#).await.0, 409);
    assert_eq!(post(c.http_addr, "/api/v1/alerts/999999/ack", r#"{"by":"x"}"#).await.0, 404);
    let (status, body) = post(c.http_addr, &format!("/api/v1/alerts/{id}/ack"), r#"{"who":"x"}"#).await;
    assert_eq!(status, 400, "{body}");

    // Fire again and leave it open across a restart.
    city.control.force("aq-002", "pm25", 200.0);
    let second = sse.next_where("alert", LIMIT, |v| v["event"] == "fired" && v["sensor"] == "aq-002").await;
    drop(sse);
    agent.shutdown().await;
    // The agent's clean stop says offline: wait for the gateway rule to notice.
    wait_for("gateway-down after the agent stopped", LIMIT, || async {
        let all = get_json(c.http_addr, "/api/v1/alerts?sensor=gw-aq").await;
        all.as_array().unwrap().iter().any(|a| a["rule"] == "gateway-down").then_some(())
    })
    .await;
    // Every stored reading reached the rules: evaluated, or counted as lagged.
    wait_for("the rules to have seen every stored reading", LIMIT, || async {
        let stored = metric(c.http_addr, "citysense_readings_stored_total").await;
        let seen = metric(c.http_addr, "citysense_rules_readings_evaluated_total").await + metric(c.http_addr, "citysense_rules_lagged_readings_total").await;
        (stored > 0.0 && seen == stored).then_some(())
    })
    .await;
    c.shutdown().await;

    let c2 = collector(dir.path(), None, &catalogue).await;
    let history = get_json(c2.http_addr, "/api/v1/alerts").await;
    let ids: Vec<u64> = history.as_array().unwrap().iter().filter(|a| a["rule"] == "pm25-high").map(|a| a["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![second["id"].as_u64().unwrap(), id], "history survives, newest first: {history}");
    // ...and it survived the restart too.
    assert!(history.as_array().unwrap().iter().any(|a| a["rule"] == "gateway-down" && a["sensor"] == "gw-aq"), "{history}");
    let devices: Vec<_> = city.devices.iter().collect();
    let agent = agent::Agent::start(agent_config(dir.path(), "gw-aq", &c2.mqtt_url, &sim::run::modbus_toml(&devices, Duration::from_millis(200)), None)).await.unwrap();
    let before = series_values(c2.http_addr, "aq-002", "pm25").await.len();
    wait_for("new readings after the restart", LIMIT, || async { (series_values(c2.http_addr, "aq-002", "pm25").await.len() > before + 5).then_some(()) }).await;
    let open = get_json(c2.http_addr, "/api/v1/alerts?state=open&sensor=aq-002").await;
    assert_eq!(open.as_array().unwrap().len(), 1, "still one open alert, not a second firing: {open}");
    agent.shutdown().await;
    c2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_dies_raises_gateway_offline_from_its_last_will() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, RULES).await;
    let mut sse = SseClient::connect(c.http_addr, "/api/v1/stream?types=alert,gateway").await;
    let b = shared::url::BrokerUrl::parse(&c.mqtt_url).unwrap();
    let mut opts = MqttOptions::new("citysense-agent-gw-doomed", b.host, b.port);
    let offline = serde_json::json!({"status": "offline", "ts_ms": 1}).to_string();
    opts.set_last_will(LastWill::new(shared::topics::state("gw-doomed"), offline, QoS::AtLeastOnce, true));
    let (client, mut el) = AsyncClient::new(opts, 10);
    let online = serde_json::json!({"status": "online", "ts_ms": 1}).to_string();
    client.publish(shared::topics::state("gw-doomed"), QoS::AtLeastOnce, true, online).await.unwrap();
    let conn = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    sse.next_where("gateway", LIMIT, |v| v["id"] == "gw-doomed" && v["status"] == "online").await;
    // Power cut: the connection drops without a DISCONNECT, so the broker sends the will.
    conn.abort();
    drop(client);
    let fired = sse.next_where("alert", LIMIT, |v| v["event"] == "fired").await;
    assert_eq!((fired["rule"].as_str(), fired["sensor"].as_str(), fired["severity"].as_str()), (Some("gateway-down"), Some("gw-doomed"), Some("critical")));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_listed_added_and_deleted_over_the_api_with_field_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, RULES).await;
    let listed = get_json(c.http_addr, "/api/v1/rules").await;
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let (status, body) = post(c.http_addr, "/api/v1/rules", r#"{"id":"river","kind":"threshold","metric":"water_level_m","value":3.0,"severity":"critical"}"#).await;
    assert_eq!(status, 400);
    assert!(body.contains("op: is required for kind threshold"), "{body}");
    let (status, body) = post(c.http_addr, "/api/v1/rules", r#"{"id":"river","kind":"threshold","metric":"water_level_m","op":">","value":3.0,"severity":"loud"}"#).await;
    assert_eq!(status, 400);
    assert!(body.contains("loud"), "{body}");
    let good = r#"{"id":"river","kind":"threshold","metric":"water_level_m","op":">","value":3.0,"clear":2.8,"for":"30s","severity":"critical"}"#;
    assert_eq!(post(c.http_addr, "/api/v1/rules", good).await.0, 201);
    assert_eq!(post(c.http_addr, "/api/v1/rules", good).await.0, 409);
    assert_eq!(get_json(c.http_addr, "/api/v1/rules").await.as_array().unwrap().len(), 3);
    assert_eq!(request(c.http_addr, "DELETE", "/api/v1/rules/river", "").await.0, 204);
    assert_eq!(request(c.http_addr, "DELETE", "/api/v1/rules/river", "").await.0, 404);
    // A rule made over the API survives a restart.
    assert_eq!(post(c.http_addr, "/api/v1/rules", good).await.0, 201);
    c.shutdown().await;
    let c = collector(dir.path(), None, RULES).await;
    assert!(get_json(c.http_addr, "/api/v1/rules").await.as_array().unwrap().iter().any(|r| r["id"] == "river"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_that_was_down_gets_the_alert_once_it_is_up() {
    // The receiver answers 503 until it is "up"; the listener is ours from the
    // start, so no other test can take its port.
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let (sink, is_up) = (got.clone(), up.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let (sink, is_up) = (sink.clone(), is_up.clone());
            async move {
                if !is_up.load(std::sync::atomic::Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                sink.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{RULES}\n[[rule]]\nid = \"pm25-any\"\nkind = \"threshold\"\nmetric = \"pm25\"\nop = \">\"\nvalue = 100\nseverity = \"critical\"\n\n[[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\nmin_severity = \"warning\"\n"
    );
    let c = collector(dir.path(), None, &cfg).await;
    let b = shared::url::BrokerUrl::parse(&c.mqtt_url).unwrap();
    let (client, mut el) = AsyncClient::new(MqttOptions::new("gw-direct", b.host, b.port), 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let reading = shared::Reading { seq: shared::Seq(1), sensor: "aq-777".into(), metric: "pm25".into(), ts_ms: shared::now_ms(), value: 300.0, quality: shared::Quality::Good };
    client.publish(shared::topics::up("gw-direct"), QoS::AtLeastOnce, false, shared::Batch::new("gw-direct", 1, vec![reading]).encode()).await.unwrap();

    // The receiver is down: deliveries fail, are kept and retried.
    wait_for("failed webhook attempts", LIMIT, || async { (metric(c.http_addr, "citysense_webhook_failures_total").await >= 2.0).then_some(()) }).await;
    assert!(metric(c.http_addr, "citysense_webhook_backlog").await >= 1.0);
    assert!(got.lock().unwrap().is_empty());

    up.store(true, std::sync::atomic::Ordering::SeqCst);
    let delivered = wait_for("the webhook delivery", Duration::from_secs(60), || {
        let got = got.clone();
        async move { got.lock().unwrap().iter().find(|v| v["event"] == "fired").cloned() }
    })
    .await;
    assert_eq!((delivered["rule"].as_str(), delivered["sensor"].as_str(), delivered["value"].as_f64()), (Some("pm25-any"), Some("aq-777"), Some(300.0)));
    wait_for("an empty webhook outbox", LIMIT, || async { (metric(c.http_addr, "citysense_webhook_backlog").await == 0.0).then_some(()) }).await;
    c.shutdown().await;
}
