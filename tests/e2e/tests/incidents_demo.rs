//! The README's incident recipe against the demo: the simulator's control
//! endpoint forces the river up at three gauges, the demo's departments take
//! it (one incident of the Water Authority, its deadline from the demo's
//! emergency SLA), and it is transferred, acknowledged, resolved, rated and
//! closed over the API as the recipe does, ending in the performance figures.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

async fn act(addr: std::net::SocketAddr, id: u64, action: &str, body: &str) -> Value {
    let (status, text) = post(addr, &format!("/api/v1/incidents/{id}/{action}"), body).await;
    assert_eq!(status, 200, "{action}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_recipe_turns_a_forced_river_rise_into_one_handled_incident() {
    let dir = tempfile::tempdir().unwrap();
    let opts = demo::DemoOptions { data: Some(dir.path().join("demo")), http: Some("127.0.0.1:0".into()), control: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let demo = demo::Demo::start(opts).await.unwrap();
    let http = demo.collector.http_addr;
    for s in ["wl-001", "wl-002", "wl-003"] {
        assert_eq!(post(demo.control, &format!("/force?sensor={s}&metric=water_level_m&value=4.6"), "").await.0, 200);
    }
    let incident = wait_for("one incident with the three gauges", LIMIT, || async {
        let open = get_json(http, "/api/v1/incidents?status=open").await;
        let all = open.as_array().unwrap();
        (all.len() == 1 && all[0]["sensors"].as_array().unwrap().len() == 3).then(|| all[0].clone())
    })
    .await;
    assert_eq!((incident["department"].as_str(), incident["severity"].as_str(), incident["group"].as_str()), (Some("water"), Some("emergency"), Some("rule=river-flood-warning")));
    let opened = incident["opened_ms"].as_i64().unwrap();
    assert_eq!(incident["deadlines"]["ack_due_ms"].as_i64(), Some(opened + 120_000), "the demo's emergency SLA: acknowledge within 2 min");
    let departments = get_json(http, "/api/v1/departments").await;
    let water = departments.as_array().unwrap().iter().find(|d| d["id"] == "water").unwrap();
    assert_eq!(water["chain"], serde_json::json!(["district-command", "city-command"]));

    let id = incident["id"].as_u64().unwrap();
    let moved = act(http, id, "transfer", r#"{"department":"traffic","reason":"flooded underpass: close the road first"}"#).await;
    assert_eq!(moved["department"], "traffic");
    act(http, id, "acknowledge", "{}").await;
    act(http, id, "resolve", r#"{"action":"underpass closed, pumps on"}"#).await;
    let rated = act(http, id, "rate", r#"{"rating":"bad","reason":"closed 20 minutes late"}"#).await;
    assert_eq!(rated["rectification"]["department"], "traffic");
    act(http, id, "rectify", r#"{"result":"barriers kept at the underpass"}"#).await;
    let closed = act(http, id, "close", "{}").await;
    assert_eq!(closed["status"], "closed");
    let traffic = get_json(http, "/api/v1/departments/traffic/performance").await;
    assert_eq!((traffic["volume"].as_u64(), traffic["resolved"].as_u64(), traffic["rated_bad"].as_u64(), traffic["bad_rectified"].as_u64()), (Some(1), Some(1), Some(1), Some(1)));
    let water = get_json(http, "/api/v1/departments/water/performance").await;
    assert_eq!((water["volume"].as_u64(), water["transfers"].as_u64()), (Some(1), Some(1)));
    let (status, csv) = get(http, "/api/v1/departments/performance?format=csv").await;
    assert_eq!((status, csv.lines().count()), (200, 6), "a header and five departments: {csv}");
    for s in ["wl-001", "wl-002", "wl-003"] {
        post(demo.control, &format!("/clear?sensor={s}"), "").await;
    }
    demo.shutdown().await;
}
