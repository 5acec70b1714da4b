//! Incidents through the real collector: a river rise across three sensors
//! of one district (readings from a fake gateway) becomes one incident of
//! the Water Authority; nobody acknowledges, so the reminder and then the
//! escalation to district command come on time by the collector's clock
//! (a ManualClock the test moves), across a restart; water transfers it to
//! roads with a reason; roads acknowledges, resolves with the action taken;
//! command rates it bad, roads rectifies; and the performance API gives the
//! figures computed by hand for this timeline.

use std::sync::Arc;
use std::time::Duration;

use collector::config::CollectorConfig;
use collector::{Collector, Parts};
use serde_json::Value;
use shared::clock::ManualClock;
use shared::{Quality, Reading};
use support::{get, json_feed, request_as, FakeGateway, SseClient};

const LIMIT: Duration = Duration::from_secs(30);
const M: i64 = 60_000;

/// Each token is its name backwards, so the test can present it.
const TOKENS: [(&str, &str, Option<&str>); 5] =
    [("water-op", "operator", Some("water")), ("roads-op", "operator", Some("roads")), ("commander", "command", None), ("viewer", "viewer", None), ("auditor", "admin", None)];

fn token(name: &str) -> String {
    format!("{}-secret", name.chars().rev().collect::<String>())
}

fn config_text(dir: &std::path::Path, water_webhook: Option<u16>) -> String {
    let mut tokens = String::new();
    for (name, role, dept) in TOKENS {
        tokens.push_str(&format!("[[auth.token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n", shared::auth::sha256_hex(&token(name))));
        if let Some(d) = dept {
            tokens.push_str(&format!("department = \"{d}\"\n"));
        }
    }
    let sensors: String = (1..=3)
        .map(|n| format!("[[sensor]]\nid = \"wl-00{n}\"\nkind = \"water_level\"\ndistrict = \"Xihu\"\nowner = \"Water Resources Bureau\"\ngateway = \"gw-river\"\n"))
        .collect();
    format!(
        r#"[mqtt]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
[store]
path = "{store}"

{sensors}
[[sensor]]
id = "wl-009"
kind = "water_level"
district = "Binjiang"
owner = "Water Resources Bureau"
gateway = "gw-river"

[[rule]]
id = "river-high"
kind = "threshold"
metric = "water_level_m"
op = ">"
value = 3.0
clear = 2.8
severity = "critical"
select = {{ kind = "water_level" }}

# Fires on the same reading of the same gauge as river-high: a duplicate, merged.
[[rule]]
id = "gauge-1-high"
kind = "threshold"
metric = "water_level_m"
op = ">"
value = 3.1
severity = "warning"
select = {{ sensor = "wl-001" }}

[incidents]
group_by = ["district", "kind"]
group_window = "30m"
escalate_after = "5m"

[[department]]
id = "water"
name = "Water Authority"
owners = ["Water Resources Bureau"]
contacts = ["water duty desk"]
escalate_to = "xihu-command"
{webhook}
sla = [{{ severity = "critical", acknowledge = "10m", resolve = "1h" }}]

[[department]]
id = "roads"
name = "Roads and Drainage"
escalate_to = "xihu-command"
sla = [{{ severity = "critical", acknowledge = "15m", resolve = "2h" }}]

[[department]]
id = "xihu-command"
name = "Xihu District Emergency Office"
escalate_to = "city-command"

[[department]]
id = "city-command"
name = "City Emergency Command"

{tokens}"#,
        store = dir.join("collector").display(),
        webhook = water_webhook.map(|p| format!("webhook = \"http://127.0.0.1:{p}/water\"")).unwrap_or_default()
    )
}

async fn start(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Collector {
    start_hooked(dir, clock, None).await
}

async fn start_hooked(dir: &std::path::Path, clock: &Arc<ManualClock>, water_webhook: Option<u16>) -> Collector {
    let cfg: CollectorConfig = shared::config::parse("incidents test", &config_text(dir, water_webhook), dir).unwrap_or_else(|d| panic!("{d}"));
    Collector::start_with(cfg, Parts { clock: clock.clone(), store: None }).await.expect("collector starts")
}

async fn act(c: &Collector, who: &str, id: u64, action: &str, body: &str) -> (u16, Value) {
    let (status, text) = request_as(c.http_addr, &token(who), "POST", &format!("/api/v1/incidents/{id}/{action}"), body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn read(c: &Collector, path: &str) -> Value {
    let (status, text) = request_as(c.http_addr, &token("viewer"), "GET", path, "").await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn incident_events(c: &Collector) -> SseClient {
    SseClient::connect(c.http_addr, &format!("/api/v1/stream?types=incident&access_token={}", token("viewer"))).await
}

async fn next_mqtt(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Value)>, event: &str) -> (String, Value) {
    loop {
        let (topic, v) = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap_or_else(|_| panic!("no `{event}` incident on MQTT")).unwrap();
        if v["event"] == event {
            return (topic, v);
        }
    }
}

fn reading(sensor: &str, ts: i64, value: f64) -> Reading {
    Reading { seq: shared::Seq(0), sensor: sensor.into(), metric: "water_level_m".into(), ts_ms: ts, value, quality: Quality::Good }
}

fn events(v: &Value) -> Vec<String> {
    v["timeline"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_river_rise_is_one_incident_chased_escalated_transferred_resolved_rated_and_measured() {
    let dir = tempfile::tempdir().unwrap();
    // The gateway stamps its batches with the real time: start the collector's clock there.
    let t0 = shared::now_ms() / M * M;
    let clock = ManualClock::at(t0);
    let c = start(dir.path(), &clock).await;
    let mut sse = incident_events(&c).await;
    let mut mqtt = json_feed(&c.mqtt_url, "duty-desk", "citysense/v1/incidents/#", rumqttc::QoS::AtLeastOnce).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-river").await;

    // The river rises past 3 m at three gauges of Xihu at once; Binjiang's stays low.
    let last = gw.send(vec![reading("wl-001", t0, 3.2), reading("wl-002", t0, 3.35), reading("wl-003", t0, 3.5), reading("wl-009", t0, 1.0)]).await;
    gw.wait_acked(last, LIMIT).await;
    let assigned = sse.next_where("incident", LIMIT, |v| v["event"] == "assigned").await;
    assert_eq!((assigned["id"].as_u64(), assigned["department"].as_str(), assigned["status"].as_str()), (Some(1), Some("water"), Some("assigned")));
    let (topic, _) = next_mqtt(&mut mqtt, "assigned").await;
    assert_eq!(topic, "citysense/v1/incidents/water/1");
    let joined = sse.next_where("incident", LIMIT, |v| v["event"] == "alert_joined" && v["alerts"].as_array().unwrap().len() == 3).await;
    let mut sensors: Vec<&str> = joined["sensors"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    sensors.sort();
    assert_eq!(sensors, ["wl-001", "wl-002", "wl-003"]);
    let all = read(&c, "/api/v1/incidents").await;
    assert_eq!(all.as_array().unwrap().len(), 1, "one incident, not three: {all}");
    let fired = read(&c, "/api/v1/alerts?sensor=wl-001").await;
    assert_eq!(fired.as_array().unwrap().len(), 2, "two rules fired on wl-001: {fired}");
    let linked: Vec<u64> = all[0]["alerts"].as_array().unwrap().iter().filter(|a| a["sensor"] == "wl-001").map(|a| a["id"].as_u64().unwrap()).collect();
    let merged: Vec<u64> = all[0]["merged"].as_array().unwrap().iter().map(|a| a.as_u64().unwrap()).collect();
    assert_eq!((linked.len(), merged.len()), (1, 1), "the near-simultaneous duplicate is merged: {all}");
    let one = read(&c, "/api/v1/incidents/1").await;
    assert_eq!((one["deadlines"]["ack_due_ms"].as_i64(), one["deadlines"]["resolve_due_ms"].as_i64()), (Some(t0 + 10 * M), Some(t0 + 60 * M)));
    assert_eq!(one["group"], "district=Xihu kind=water_level");
    assert_eq!(one["title"], "water_level in Xihu: river-high");

    // Nobody acknowledges: the reminder to water at the deadline, not before.
    clock.set(t0 + 10 * M - 1);
    assert_eq!(read(&c, "/api/v1/incidents?overdue=true").await, serde_json::json!([]));
    clock.set(t0 + 10 * M);
    let overdue = sse.next_where("incident", LIMIT, |v| v["event"] == "overdue").await;
    assert_eq!((overdue["to"].as_str(), overdue["overdue"].as_str()), (Some("water"), Some("acknowledge")));
    assert_eq!(next_mqtt(&mut mqtt, "overdue").await.0, "citysense/v1/incidents/water/1");
    assert_eq!(read(&c, "/api/v1/incidents?overdue=true&department=water").await.as_array().unwrap().len(), 1);

    // A restart between the reminder and the escalation: the timer survives it.
    clock.set(t0 + 12 * M);
    drop(sse);
    drop(gw);
    c.shutdown().await;
    let c = start(dir.path(), &clock).await;
    let mut sse = incident_events(&c).await;
    let mut mqtt = json_feed(&c.mqtt_url, "duty-desk", "citysense/v1/incidents/#", rumqttc::QoS::AtLeastOnce).await;
    let after = read(&c, "/api/v1/incidents/1").await;
    assert_eq!(events(&after), ["opened", "assigned", "alert_joined", "alert_joined", "overdue"], "nothing repeated or lost: {after}");
    clock.set(t0 + 15 * M);
    let escalated = sse.next_where("incident", LIMIT, |v| v["event"] == "escalated").await;
    assert_eq!(escalated["to"], "xihu-command");
    let entry = escalated["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((entry["ts_ms"].as_i64(), entry["from"].as_str(), entry["department"].as_str()), (Some(t0 + 15 * M), Some("water"), Some("xihu-command")), "on time");
    assert_eq!(next_mqtt(&mut mqtt, "escalated").await.0, "citysense/v1/incidents/xihu-command/1");

    // Roles: a viewer may not act, roads may not act on water's incident, water may not rate.
    clock.set(t0 + 16 * M);
    assert_eq!(act(&c, "viewer", 1, "acknowledge", "").await.0, 403);
    let (status, body) = act(&c, "roads-op", 1, "acknowledge", "").await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("belongs to water"), "{body}");
    let (status, body) = act(&c, "water-op", 1, "transfer", r#"{"department":"roads"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`reason`"), "{body}");
    assert_eq!(act(&c, "water-op", 1, "transfer", r#"{"department":"nowhere","reason":"x"}"#).await.0, 400);
    assert_eq!(act(&c, "water-op", 1, "teleport", "").await.0, 404);
    assert_eq!(act(&c, "water-op", 1, "resolve", r#"{"action":"x"}"#).await.0, 409, "not acknowledged");

    // Water hands it to roads with a reason; roads' own deadlines start then.
    let (status, moved) = act(&c, "water-op", 1, "transfer", r#"{"department":"roads","reason":"a blocked culvert under Road 5, not the river"}"#).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!((moved["department"].as_str(), moved["status"].as_str(), moved["deadlines"]["ack_due_ms"].as_i64()), (Some("roads"), Some("assigned"), Some(t0 + 31 * M)));
    let (topic, _) = next_mqtt(&mut mqtt, "transferred").await;
    assert!(topic == "citysense/v1/incidents/roads/1" || topic == "citysense/v1/incidents/water/1", "{topic}");
    assert_eq!(act(&c, "water-op", 1, "acknowledge", "").await.0, 403, "no longer water's");
    clock.set(t0 + 20 * M);
    assert_eq!(act(&c, "roads-op", 1, "acknowledge", r#"{"note":"crew on the way"}"#).await.0, 200);
    clock.set(t0 + 21 * M);
    assert_eq!(act(&c, "roads-op", 1, "start", "").await.0, 200);
    assert_eq!(act(&c, "roads-op", 1, "note", r#"{"text":"pumping"}"#).await.0, 200);
    clock.set(t0 + 50 * M);
    let (status, resolved) = act(&c, "roads-op", 1, "resolve", r#"{"action":"cleared the culvert; pumped Road 5 dry"}"#).await;
    assert_eq!((status, resolved["status"].as_str(), resolved["action"].as_str()), (200, Some("resolved"), Some("cleared the culvert; pumped Road 5 dry")));

    // Command rates it bad: a rectification task for roads, tracked until done.
    clock.set(t0 + 52 * M);
    assert_eq!(act(&c, "roads-op", 1, "rate", r#"{"rating":"good"}"#).await.0, 403);
    assert_eq!(act(&c, "commander", 1, "rate", r#"{"rating":"bad"}"#).await.0, 400, "a bad rating needs its reason");
    let (status, rated) = act(&c, "commander", 1, "rate", r#"{"rating":"bad","reason":"the crew came without pumps"}"#).await;
    assert_eq!(status, 200, "{rated}");
    assert_eq!(
        (rated["rectification"]["task"].as_str(), rated["rectification"]["department"].as_str(), rated["rectification"]["done_ms"].as_i64()),
        (Some("the crew came without pumps"), Some("roads"), None)
    );
    clock.set(t0 + 70 * M);
    let (status, done) = act(&c, "roads-op", 1, "rectify", r#"{"result":"pumps on every crew van"}"#).await;
    assert_eq!((status, done["rectification"]["done_ms"].as_i64()), (200, Some(t0 + 70 * M)));
    clock.set(t0 + 71 * M);
    assert_eq!(act(&c, "roads-op", 1, "close", "").await.0, 200);
    let closed = read(&c, "/api/v1/incidents/1").await;
    assert_eq!(
        events(&closed),
        [
            "opened",
            "assigned",
            "alert_joined",
            "alert_joined",
            "overdue",
            "escalated",
            "transferred",
            "acknowledged",
            "started",
            "note",
            "resolved",
            "rated",
            "rectified",
            "closed"
        ]
    );
    let transfer = closed["timeline"].as_array().unwrap().iter().find(|e| e["event"] == "transferred").unwrap().clone();
    assert_eq!((transfer["by"].as_str(), transfer["text"].as_str()), (Some("water-op"), Some("a blocked culvert under Road 5, not the river")));

    // The performance API against the figures computed by hand from the timeline above.
    let period = format!("from={t0}&to={}", t0 + 2 * 60 * M);
    let water = read(&c, &format!("/api/v1/departments/water/performance?{period}")).await;
    let expect_water = serde_json::json!({
        "department": "water", "from_ms": t0, "to_ms": t0 + 120 * M, "volume": 1, "acknowledged": 0, "ack_median_ms": null, "ack_p90_ms": null,
        "resolved": 0, "resolve_median_ms": null, "resolve_p90_ms": null, "ack_breaches": 1, "resolve_breaches": 0, "overdue_now": 0,
        "escalations": 1, "transfers": 1, "reopened": 0, "reopen_rate": null, "rated_good": 0, "rated_bad": 0, "bad_rectified": 0
    });
    assert_eq!(water, expect_water);
    let roads = read(&c, &format!("/api/v1/departments/roads/performance?{period}")).await;
    let expect_roads = serde_json::json!({
        "department": "roads", "from_ms": t0, "to_ms": t0 + 120 * M, "volume": 1, "acknowledged": 1, "ack_median_ms": 4 * M, "ack_p90_ms": 4 * M,
        "resolved": 1, "resolve_median_ms": 34 * M, "resolve_p90_ms": 34 * M, "ack_breaches": 0, "resolve_breaches": 0, "overdue_now": 0,
        "escalations": 0, "transfers": 0, "reopened": 0, "reopen_rate": 0.0, "rated_good": 0, "rated_bad": 1, "bad_rectified": 1
    });
    assert_eq!(roads, expect_roads);
    let (status, csv) = request_as(c.http_addr, &token("viewer"), "GET", &format!("/api/v1/departments/performance?{period}&format=csv"), "").await;
    assert_eq!(status, 200);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 5, "a header and four departments: {csv}");
    assert_eq!(rows[2], format!("roads,{t0},{},1,1,240000,240000,1,2040000,2040000,0,0,0,0,0,0,0.000,0,1,1", t0 + 120 * M));
    // The trend: the same period in two hours; the rectification came in the second.
    let trend = read(&c, &format!("/api/v1/departments/roads/performance?{period}&step=1h")).await;
    let pick = |n: usize, f: &str| trend[n][f].as_u64().unwrap();
    assert_eq!(trend.as_array().unwrap().len(), 2, "{trend}");
    assert_eq!((pick(0, "volume"), pick(0, "resolved"), pick(0, "rated_bad"), pick(0, "bad_rectified")), (1, 1, 1, 0));
    assert_eq!((pick(1, "volume"), pick(1, "resolved"), pick(1, "bad_rectified")), (0, 0, 1));
    assert_eq!(trend[1]["from_ms"].as_i64(), Some(t0 + 60 * M));
    let (status, body) = request_as(c.http_addr, &token("viewer"), "GET", &format!("/api/v1/departments/roads/performance?{period}&step=1s"), "").await;
    assert!(status == 400 && body.contains("step"), "{body}");
    let (status, body) = request_as(c.http_addr, &token("viewer"), "GET", "/api/v1/departments/nowhere/performance", "").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = request_as(c.http_addr, &token("viewer"), "GET", &format!("/api/v1/departments/water/performance?from={}&to={t0}", t0 + 1), "").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = request_as(c.http_addr, &token("viewer"), "GET", "/api/v1/incidents?overdue=maybe", "").await;
    assert!(status == 400 && body.contains("overdue"), "{body}");
    let departments = read(&c, "/api/v1/departments").await;
    assert_eq!(departments[0]["chain"], serde_json::json!(["xihu-command", "city-command"]));

    // Every action is in the audit log under the token that took it.
    let (_, audit) = request_as(c.http_addr, &token("auditor"), "GET", "/api/v1/audit?limit=100", "").await;
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let who = |path: &str, status: u64| {
        audit.as_array().unwrap().iter().filter(|e| e["path"] == path && e["status"] == status).map(|e| e["who"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(who("/api/v1/incidents/1/transfer", 200), ["water-op"]);
    assert_eq!(who("/api/v1/incidents/1/acknowledge", 403), ["water-op", "roads-op", "viewer"], "refusals too, newest first");
    assert_eq!(who("/api/v1/incidents/1/rate", 200), ["commander"]);
    assert_eq!(get(c.http_addr, "/api/v1/incidents").await.0, 401, "no token, no incidents");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_records_alerts_without_raising_an_incident() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = shared::now_ms() / M * M;
    let clock = ManualClock::at(t0);
    let c = start(dir.path(), &clock).await;
    let spec = format!(r#"{{"match":{{"district":"Xihu"}},"schedule":{{"type":"once","from_ms":{t0},"until_ms":{}}},"comment":"gauge recalibration"}}"#, t0 + 60 * M);
    let (status, body) = request_as(c.http_addr, &token("water-op"), "POST", "/api/v1/silences", &spec).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        request_as(c.http_addr, &token("water-op"), "POST", "/api/v1/silences", r#"{"match":{},"schedule":{"type":"once","from_ms":1,"until_ms":2},"comment":"x"}"#).await;
    assert!(status == 400 && body.contains("match"), "{body}");
    let mut alerts_feed = SseClient::connect(c.http_addr, &format!("/api/v1/stream?types=alert&access_token={}", token("viewer"))).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-river").await;
    let last = gw.send(vec![reading("wl-001", t0, 3.2), reading("wl-009", t0, 3.9)]).await;
    gw.wait_acked(last, LIMIT).await;
    // Both fire in one evaluation, wl-001 first: only Binjiang's is announced.
    let announced = std::sync::Mutex::new(Vec::new());
    alerts_feed
        .next_where("alert", LIMIT, |v| {
            announced.lock().unwrap().push(v["sensor"].as_str().unwrap().to_string());
            v["sensor"] == "wl-009"
        })
        .await;
    assert_eq!(*announced.lock().unwrap(), ["wl-009"], "the silenced alert is not raised");
    // Binjiang's alert is raised; Xihu's, in the window, is recorded on the silence.
    support::wait_for("Binjiang's incident", LIMIT, || async {
        let v = read(&c, "/api/v1/incidents").await;
        (v.as_array().unwrap().len() == 1 && v[0]["district"] == "Binjiang").then_some(())
    })
    .await;
    let silences = read(&c, "/api/v1/silences").await;
    assert_eq!((silences[0]["created_by"].as_str(), silences[0]["active"].as_bool()), (Some("water-op"), Some(true)));
    let alerts = read(&c, "/api/v1/alerts?sensor=wl-001").await;
    let mut ids: Vec<u64> = alerts.as_array().unwrap().iter().map(|a| a["id"].as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids.len(), 2, "both rules' alerts on wl-001 are stored: {alerts}");
    assert_eq!(silences[0]["held"], serde_json::json!(ids), "and held: {silences}");
    assert_eq!(read(&c, "/api/v1/incidents").await.as_array().unwrap().len(), 1);
    let (status, _) = request_as(c.http_addr, &token("viewer"), "DELETE", "/api/v1/silences/1", "").await;
    assert_eq!(status, 403);
    let (status, _) = request_as(c.http_addr, &token("water-op"), "DELETE", "/api/v1/silences/1", "").await;
    assert_eq!(status, 200);
    c.shutdown().await;
}

/// A department's duty desk: records each incident event POSTed to it.
async fn duty_desk(port: u16) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/water",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_str::<Value>(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_webhook_gets_its_incident_events_even_when_its_desk_was_down_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = shared::now_ms() / M * M;
    let clock = ManualClock::at(t0);
    // The desk's port, with nothing listening on it yet.
    let port = support::free_port();
    let c = start_hooked(dir.path(), &clock, Some(port)).await;
    let mut sse = incident_events(&c).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-river").await;
    let last = gw.send(vec![reading("wl-002", t0, 3.3)]).await;
    gw.wait_acked(last, LIMIT).await;
    sse.next_where("incident", LIMIT, |v| v["event"] == "assigned").await;
    clock.set(t0 + 10 * M);
    sse.next_where("incident", LIMIT, |v| v["event"] == "overdue").await;
    // Down while both were due; the collector restarts before the desk is back.
    drop(sse);
    drop(gw);
    c.shutdown().await;
    let c = start_hooked(dir.path(), &clock, Some(port)).await;
    let mut desk = duty_desk(port).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let v = tokio::time::timeout(LIMIT, desk.recv()).await.expect("the queued deliveries arrive").unwrap();
        got.push((v["event"].as_str().unwrap().to_string(), v["to"].as_str().map(String::from), v["id"].as_u64()));
    }
    let water = |e: &str| (e.to_string(), Some("water".to_string()), Some(1));
    assert_eq!(got, [water("opened"), water("assigned"), water("overdue")], "in order, none lost");
    // The owner hears of its escalation too (addressed to district command, which has no webhook).
    clock.set(t0 + 15 * M);
    let v = tokio::time::timeout(LIMIT, desk.recv()).await.expect("the escalation").unwrap();
    assert_eq!((v["event"].as_str(), v["to"].as_str()), (Some("escalated"), Some("xihu-command")));
    c.shutdown().await;
}
