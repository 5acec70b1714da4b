//! The operations dashboard in a real browser: Debian's Chromium, headless,
//! driven over WebDriver (chromedriver) against the demo's collector fed by
//! the simulator. A forced anomaly appears without a reload, is acknowledged
//! by clicking, and resolves; screenshots land in target/dashboard/.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(30);

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    let dir = target.join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn browser(profile: &std::path::Path) -> (Child, Client) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}): run ./tests/run, which installs chromium and chromium-driver"));
    let driver = Child(driver);
    wait_for_port(port, "chromedriver").await;
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-quic", "--no-first-run", "--window-size=1920,1080", format!("--user-data-dir={}", profile.display())]
        }
    });
    let caps = caps.as_object().unwrap().clone().into_iter().collect();
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// Polls a JavaScript expression in the page until it is truthy.
async fn until(page: &Client, what: &str, js: &str) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let v = page.execute(&format!("return ({js});"), vec![]).await.unwrap();
        if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {LIMIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn save_screenshot(page: &Client, name: &str) {
    let png = page.screenshot().await.unwrap();
    assert!(png.len() > 10_000, "{name}: a real picture, not a blank page");
    std::fs::write(artifacts().join(name), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_acknowledges_and_watches_an_alert_resolve_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let opts = demo::DemoOptions { data: Some(dir.path().join("demo")), http: Some("127.0.0.1:0".into()), control: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let demo = demo::Demo::start(opts).await.unwrap();
    let http = demo.collector.http_addr;
    let (_driver, page) = browser(&dir.path().join("profile")).await;

    let started = Instant::now();
    page.goto(&format!("http://{http}/")).await.unwrap();
    let loaded_ms = page.execute("return performance.getEntriesByType('navigation')[0].loadEventEnd", vec![]).await.unwrap();
    until(&page, "the live feed", "document.querySelector('#conn')?.textContent.trim().toLowerCase() === 'live'").await;
    let markers =
        until(&page, "24 sensors on the map", "document.querySelectorAll('#map [data-sensor]').length >= 24 && document.querySelectorAll('#map [data-sensor]').length").await;
    eprintln!("dashboard: load event after {loaded_ms} ms, live with {markers} markers {:.1} s after navigation", started.elapsed().as_secs_f64());
    until(&page, "the gateways panel", "document.querySelectorAll('#gateways [data-gateway]').length >= 1").await;
    // Marks this page load: a reload would lose it.
    page.execute("window.__sameLoad = 'yes'; return true;", vec![]).await.unwrap();

    // A forced anomaly becomes an alert on the page without a reload.
    let (status, body) = post(demo.control, "/force?sensor=aq-003&metric=pm25&value=180", "").await;
    assert_eq!(status, 200, "{body}");
    let id = wait_for("the pm25 alert in the API", LIMIT, || async move {
        let open = get_json(http, "/api/v1/alerts?state=open&sensor=aq-003").await;
        open.as_array()?.iter().find(|a| a["rule"] == "pm25-high").map(|a| a["id"].as_u64().unwrap())
    })
    .await;
    let row = format!("#alerts .alert[data-alert-id='{id}']");
    until(&page, "the alert on the page", &format!("document.querySelector(\"{row}\")?.dataset.state === 'firing'")).await;
    assert_eq!(page.execute("return window.__sameLoad", vec![]).await.unwrap(), json!("yes"), "the page was not reloaded");
    let row_text = page.find(Locator::Css(&row)).await.unwrap().text().await.unwrap();
    assert!(row_text.contains("aq-003") && row_text.contains("180"), "sensor and value shown: {row_text}");
    until(&page, "the sensor's marker alerting", "document.querySelector(\"#map [data-sensor='aq-003']\")?.dataset.state === 'alerting'").await;
    save_screenshot(&page, "dashboard.png").await;

    // Acknowledge by clicking, with a name and a note.
    page.find(Locator::Css(&format!("{row} .ack"))).await.unwrap().click().await.unwrap();
    let by = page.wait().at_most(LIMIT).for_element(Locator::Css("#ack-by")).await.unwrap();
    by.clear().await.unwrap();
    by.send_keys("duty officer").await.unwrap();
    page.find(Locator::Css("#ack-note")).await.unwrap().send_keys("crew sent to check the station").await.unwrap();
    page.find(Locator::Css("#ack-submit")).await.unwrap().click().await.unwrap();
    until(&page, "the row acknowledged", &format!("document.querySelector(\"{row}\")?.dataset.state === 'acknowledged'")).await;
    let alert = get_json(http, "/api/v1/alerts?sensor=aq-003").await;
    let alert = alert.as_array().unwrap().iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!(alert["state"], "acknowledged", "{alert}");
    assert_eq!(alert["acked_by"], "duty officer", "{alert}");
    assert_eq!(alert["note"], "crew sent to check the station", "{alert}");

    // A sensor's detail with its charts.
    page.execute("document.querySelector(\"#map [data-sensor='wl-001']\").dispatchEvent(new MouseEvent('click', {bubbles: true})); return true;", vec![]).await.unwrap();
    until(&page, "the detail chart", "!document.querySelector('#detail').hidden && document.querySelector('#detail .uplot')").await;
    let detail = page.find(Locator::Css("#detail")).await.unwrap().text().await.unwrap();
    assert!(detail.contains("wl-001") && detail.contains("Water Resources"), "catalogue entry shown: {detail}");

    // Cleared, the alert resolves and leaves the open list for the history.
    post(demo.control, "/clear?sensor=aq-003", "").await;
    until(&page, "the alert resolved", &format!("!document.querySelector(\"{row}\") && document.querySelector(\"[data-resolved-id='{id}']\")")).await;

    page.goto(&format!("http://{http}/?mode=wall")).await.unwrap();
    until(&page, "big-screen mode", "document.body.classList.contains('wall') && document.querySelectorAll('#map [data-sensor]').length >= 24").await;
    let fits = page.execute("return document.documentElement.scrollHeight <= window.innerHeight + 1", vec![]).await.unwrap();
    assert_eq!(fits, json!(true), "the wall layout fits 1920x1080 without scrolling");
    save_screenshot(&page, "wall.png").await;
    page.close().await.unwrap();
    demo.shutdown().await;
}
