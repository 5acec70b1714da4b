//! Incidents on the dashboard, in a real browser (headless Chromium over
//! WebDriver) against a collector on a ManualClock: a river rise appears as
//! one incident of the Water Authority; when the clock passes its deadline
//! the row, the strip, the KPI and the map's markers show it overdue (on the
//! wall too); it is acknowledged and resolved from the page; the
//! departments' league table shows the figures.

mod common;

use std::time::Duration;

use collector::config::CollectorConfig;
use collector::{Collector, Parts};
use common::browser::{browser, until};
use common::*;
use fantoccini::Locator;
use serde_json::json;
use shared::clock::ManualClock;
use shared::{Quality, Reading};

const LIMIT: Duration = Duration::from_secs(30);
const M: i64 = 60_000;

const CONFIG: &str = r#"
[[sensor]]
id = "wl-001"
kind = "water_level"
district = "Xihu"
owner = "Water Resources Bureau"
lat = 30.259
lon = 120.130
[[sensor]]
id = "wl-002"
kind = "water_level"
district = "Xihu"
owner = "Water Resources Bureau"
lat = 30.262
lon = 120.136
[[sensor]]
id = "wl-003"
kind = "water_level"
district = "Xihu"
owner = "Water Resources Bureau"
lat = 30.255
lon = 120.127
[[sensor]]
id = "wl-009"
kind = "water_level"
district = "Binjiang"
owner = "Water Resources Bureau"
lat = 30.208
lon = 120.211

[[rule]]
id = "river-high"
kind = "threshold"
metric = "water_level_m"
op = ">"
value = 3.0
severity = "critical"
select = { kind = "water_level" }

[incidents]
escalate_after = "5m"

[[department]]
id = "water"
name = "Water Authority"
owners = ["Water Resources Bureau"]
escalate_to = "xihu-command"
sla = [{ severity = "critical", acknowledge = "10m", resolve = "1h" }]

[[department]]
id = "xihu-command"
name = "Xihu District Emergency Office"
"#;

fn reading(sensor: &str, ts: i64, value: f64) -> Reading {
    Reading { seq: shared::Seq(0), sensor: sensor.into(), metric: "water_level_m".into(), ts_ms: ts, value, quality: Quality::Good }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_shows_overdue_and_is_acknowledged_and_resolved_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() / M * M;
    let clock = ManualClock::at(t0);
    let text = format!("[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n{CONFIG}", dir.path().join("collector").display());
    let cfg: CollectorConfig = shared::config::parse("incidents browser test", &text, dir.path()).unwrap_or_else(|d| panic!("{d}"));
    let c = Collector::start_with(cfg, Parts { clock: clock.clone(), store: None }).await.unwrap();
    let (_driver, page) = browser(&dir.path().join("profile")).await;
    let url = format!("http://{}/", c.http_addr);
    page.goto(&url).await.unwrap();
    until(&page, "the league table", "document.querySelector('#league tr[data-department=\"water\"]')").await;

    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-river").await;
    let last = gw.send(vec![reading("wl-001", t0, 3.2), reading("wl-002", t0, 3.3), reading("wl-003", t0, 3.4)]).await;
    gw.wait_acked(last, LIMIT).await;
    let row = "#incidents tr[data-incident-id=\"1\"]";
    until(&page, "the incident with its three sensors", &format!("document.querySelector('{row}') && document.querySelector('{row}').textContent.includes('wl-003')")).await;
    let text = page.find(Locator::Css(row)).await.unwrap().text().await.unwrap().to_lowercase();
    assert!(text.contains("water") && text.contains("assigned") && text.contains("wl-001"), "{text}");
    assert_eq!(page.execute("return document.querySelectorAll('#incidents tr').length", vec![]).await.unwrap(), json!(1), "one incident, not three");
    assert_eq!(page.execute("return document.querySelector('#kpi-inc-open').textContent", vec![]).await.unwrap(), json!("1"));
    assert_eq!(page.execute(&format!("return document.querySelector('{row}').classList.contains('inc-overdue')"), vec![]).await.unwrap(), json!(false));

    // Past the acknowledge deadline: marked in the row, the strip, the KPI and on the map.
    clock.set(t0 + 10 * M);
    until(&page, "the overdue marking", &format!("document.querySelector('{row}.inc-overdue')")).await;
    let strip = until(&page, "the overdue strip", "!document.querySelector('#inc-issues').hidden && document.querySelector('#inc-issues').textContent").await;
    assert!(strip.as_str().unwrap().contains("not acknowledged"), "{strip}");
    assert_eq!(page.execute("return document.querySelector('#kpi-inc-overdue').textContent", vec![]).await.unwrap(), json!("1"));
    let marked = page.execute("return [...document.querySelectorAll('#map .inc-overdue')].map((m) => m.getAttribute('data-sensor')).sort()", vec![]).await.unwrap();
    assert_eq!(marked, json!(["wl-001", "wl-002", "wl-003"]));
    until(&page, "water's breach in the league table", "document.querySelector('#league tr[data-department=\"water\"].inc-overdue')").await;

    // The wall shows open and overdue incidents.
    page.goto(&format!("{url}?mode=wall")).await.unwrap();
    until(&page, "the wall's overdue count", "document.querySelector('#kpi-inc-overdue').textContent === '1'").await;
    let wall = page
        .execute("return [getComputedStyle(document.querySelector('#kpi-incidents')).display, getComputedStyle(document.querySelector('#inc-issues')).display]", vec![])
        .await
        .unwrap();
    assert_ne!(wall[0], json!("none"), "{wall}");
    assert_ne!(wall[1], json!("none"), "{wall}");

    // Acknowledged from the page: no longer overdue (the resolve deadline is an hour).
    page.goto(&url).await.unwrap();
    until(&page, "the acknowledge button", &format!("document.querySelector('{row} .inc-ack')")).await;
    clock.set(t0 + 12 * M);
    page.find(Locator::Css(&format!("{row} .inc-ack"))).await.unwrap().click().await.unwrap();
    until(&page, "acknowledged", &format!("document.querySelector('{row}[data-status=\"acknowledged\"]') && !document.querySelector('{row}.inc-overdue')")).await;
    let acked = get_json(c.http_addr, "/api/v1/incidents/1").await;
    assert_eq!((acked["status"].as_str(), acked["acknowledged_ms"].as_i64()), (Some("acknowledged"), Some(t0 + 12 * M)));
    assert!(page.execute("return document.querySelector('#inc-issues').hidden", vec![]).await.unwrap() == json!(true));

    // Resolved from the page, with the action taken.
    clock.set(t0 + 40 * M);
    page.find(Locator::Css(&format!("{row} .inc-resolve"))).await.unwrap().click().await.unwrap();
    until(&page, "a refusal without an action", "!document.querySelector('#toast').hidden && document.querySelector('#toast').textContent.includes('what was done')").await;
    page.find(Locator::Css(&format!("{row} .inc-action"))).await.unwrap().send_keys("sluice opened, pumps on").await.unwrap();
    page.find(Locator::Css(&format!("{row} .inc-resolve"))).await.unwrap().click().await.unwrap();
    until(&page, "the resolved incident leaving the open list", &format!("!document.querySelector('{row}')")).await;
    let done = get_json(c.http_addr, "/api/v1/incidents/1").await;
    assert_eq!((done["status"].as_str(), done["action"].as_str(), done["resolved_ms"].as_i64()), (Some("resolved"), Some("sluice opened, pumps on"), Some(t0 + 40 * M)));
    page.find(Locator::Css("#inc-show-closed")).await.unwrap().click().await.unwrap();
    until(
        &page,
        "the resolved row with its action",
        &format!("document.querySelector('{row}[data-status=\"resolved\"]') && document.querySelector('{row}').textContent.includes('sluice opened')"),
    )
    .await;

    // The league table: water had one incident, acknowledged in 12 minutes, one breach, resolved in 40.
    let cells = until(&page, "water's row", "[...document.querySelectorAll('#league tr[data-department=\"water\"] td')].map((t) => t.textContent)").await;
    assert_eq!(cells[0], json!("water"));
    assert_eq!(cells[1], json!("1"), "{cells}");
    assert_eq!(cells[5], json!("1"), "one breach: {cells}");
    assert_eq!(cells[6], json!("0"), "nothing overdue now: {cells}");
    // Its trend chart, per day, drawn when its row is clicked.
    page.find(Locator::Css("#league tr[data-department=\"water\"]")).await.unwrap().click().await.unwrap();
    until(&page, "the trend chart of water", "document.querySelector('#league-trend-name').textContent === 'water' && document.querySelector('#league-trend canvas')").await;
    let perf = get_json(c.http_addr, "/api/v1/departments/water/performance").await;
    assert_eq!((perf["ack_median_ms"].as_i64(), perf["resolve_median_ms"].as_i64()), (Some(12 * M), Some(40 * M)));
    page.execute("document.querySelector('#inc-grid').scrollIntoView(); return true;", vec![]).await.unwrap();
    let png = page.screenshot().await.unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| workspace().join("target")).join("dashboard");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("incidents.png"), png).unwrap();
    page.close().await.unwrap();
    c.shutdown().await;
}
