//! The operations dashboard in a real browser: Debian's Chromium, headless,
//! driven over WebDriver (chromedriver) against the demo's collector fed by
//! the simulator. A forced anomaly appears without a reload, is acknowledged
//! by clicking, and resolves; a silent sensor turns stale and back, a
//! gateway with a dropped device shows degraded with the device named, and a
//! gateway whose batches are refused shows refusing; a chart's line breaks
//! across an outage, in stored and in live data; a real agent's refused
//! config reload is stated on its row and in the strip until a good one.
//! Screenshots land in target/dashboard/.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::{browser, until, Driver};
use common::*;
use fantoccini::{Client, Locator};
use rumqttc::QoS;
use serde_json::{json, Value};
use shared::{Batch, Quality, Reading, Seq};

const LIMIT: Duration = Duration::from_secs(30);

/// Each test runs a demo and a Chromium: on two cores, one at a time keeps
/// their timings (staleness within its limit) honest.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    let dir = target.join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo on free loopback ports and a headless browser ready to open it.
async fn demo_in_browser(dir: &std::path::Path) -> (demo::Demo, Driver, Client) {
    let opts = demo::DemoOptions { data: Some(dir.join("demo")), http: Some("127.0.0.1:0".into()), control: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let demo = demo::Demo::start(opts).await.unwrap();
    let (driver, page) = browser(&dir.join("profile")).await;
    (demo, driver, page)
}

async fn save_screenshot(page: &Client, name: &str) {
    let png = page.screenshot().await.unwrap();
    assert!(png.len() > 10_000, "{name}: a real picture, not a blank page");
    std::fs::write(artifacts().join(name), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_acknowledges_and_watches_an_alert_resolve_in_the_browser() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (demo, _driver, page) = demo_in_browser(dir.path()).await;
    let http = demo.collector.http_addr;

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

async fn sensor_view(http: std::net::SocketAddr, id: &str) -> Value {
    let all = get_json(http, "/api/v1/sensors").await;
    all.as_array().unwrap().iter().find(|s| s["id"] == id).cloned().unwrap_or_else(|| panic!("{id} not in /api/v1/sensors"))
}

/// A gateway that sends one good batch and then only a batch whose seq
/// jumps to 2^62 in the same epoch: every batch after the first is refused,
/// so it stays `refusing` (a demo gateway's next honest batch would end it
/// within a second, before the page's next poll).
async fn refused_gateway(mqtt_url: &str, http: std::net::SocketAddr) -> rumqttc::AsyncClient {
    let broker = shared::url::BrokerUrl::parse(mqtt_url).unwrap();
    let (client, mut el) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("dashboard-test-gw", broker.host.clone(), broker.port), 10);
    // Keeps polling through a refused or reset connection: rumqttc
    // reconnects on the next poll and resends what was not acknowledged.
    tokio::spawn(async move {
        loop {
            if let Err(e) = el.poll().await {
                eprintln!("dashboard: test gateway connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let reading = |seq: u64| Reading { seq: Seq(seq), sensor: "tst-001".into(), metric: "pm25".into(), ts_ms: shared::now_ms(), value: 12.0, quality: Quality::Good };
    let topic = shared::topics::up("gw-test");
    client.publish(topic.clone(), QoS::AtLeastOnce, false, Batch::new("gw-test", 1, vec![reading(1)]).in_epoch(7).encode()).await.unwrap();
    // Stored before the poison goes out: the registry hears of a stored batch
    // after its sync, so one still syncing would clear a refusal recorded meanwhile.
    wait_for("gw-test's first batch acked", LIMIT, || async {
        let gws = get_json(http, "/api/v1/gateways").await;
        gws.as_array().unwrap().iter().find(|g| g["id"] == "gw-test" && g["acked_seq"] == 1).map(|_| ())
    })
    .await;
    const POISON: u64 = 1 << 62;
    client.publish(topic, QoS::AtLeastOnce, false, Batch::new("gw-test", POISON, vec![reading(POISON)]).in_epoch(7).encode()).await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_turns_stale_a_dropped_device_degrades_its_gateway_and_refused_batches_show() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (demo, _driver, page) = demo_in_browser(dir.path()).await;
    let http = demo.collector.http_addr;
    let started = Instant::now();
    page.goto(&format!("http://{http}/")).await.unwrap();
    until(&page, "the live feed", "document.querySelector('#conn')?.textContent.trim().toLowerCase() === 'live'").await;

    // A noise sensor (MQTT, every second): once two readings are in, the
    // server knows its interval and its stale limit is 3 s clamped up to 10 s.
    const QUIET: &str = "ns-002";
    let marker = format!("#map [data-sensor='{QUIET}']");
    let stale_after = wait_for("the sensor's interval", LIMIT, || async {
        let s = sensor_view(http, QUIET).await;
        s["interval_ms"].as_i64().and(s["stale_after_ms"].as_i64()).filter(|_| s["state"] == "ok")
    })
    .await;
    assert_eq!(stale_after, 10_000, "3 x 1 s, clamped up to 10 s");
    until(&page, "the sensor ok on the page", &format!("document.querySelector(\"{marker}\")?.dataset.state === 'ok'")).await;

    // Silence it, drop a device of gw-river off the network, and start a gateway whose batches are refused.
    let silenced = Instant::now();
    assert_eq!(post(demo.control, &format!("/silent?sensor={QUIET}&on=true"), "").await.0, 200);
    assert_eq!(post(demo.control, "/drop?sensor=wl-001&on=true", "").await.0, 200);
    let _refused = refused_gateway(&demo.collector.mqtt_url, http).await;

    until(&page, "the silent sensor stale on the map", &format!("document.querySelector(\"{marker}\")?.dataset.state === 'stale'")).await;
    let took = silenced.elapsed();
    eprintln!("dashboard: {QUIET} stale on the page {:.1} s after it fell silent (limit {stale_after} ms)", took.as_secs_f64());
    // Its last reading may arrive up to a poll and a linger after the silence began; the page re-derives every second.
    assert!(took <= Duration::from_millis(stale_after as u64 + 4_000), "stale after {took:?}, limit {stale_after} ms");
    until(&page, "the silent sensor's row stale", &format!("document.querySelector(\"#sensors [data-row='{QUIET}'] .pill\")?.textContent === 'stale'")).await;
    // The API says so too (within a second or two: page and server read different clocks).
    wait_for("the API to call it stale", Duration::from_secs(5), || async { (sensor_view(http, QUIET).await["state"] == "stale").then_some(()) }).await;

    until(&page, "gw-river degraded", "document.querySelector(\"#gateways [data-gateway='gw-river']\")?.dataset.state === 'degraded'").await;
    until(&page, "wl-001 listed as failing", "document.querySelector(\"#gateways [data-gateway-why='gw-river'] [data-device='wl-001']\")").await;
    let why = page.find(Locator::Css("#gateways [data-gateway-why='gw-river']")).await.unwrap().text().await.unwrap();
    assert!(why.contains("wl-001") && why.to_lowercase().contains("degraded"), "the failing device in the panel, no hover: {why}");
    let gw = get_json(http, "/api/v1/gateways").await;
    let river = gw.as_array().unwrap().iter().find(|g| g["id"] == "gw-river").unwrap();
    assert_eq!(river["failing_devices"], json!(["wl-001"]), "{river}");

    let deadline = Instant::now() + LIMIT;
    loop {
        let gws = get_json(http, "/api/v1/gateways").await;
        let gw = gws.as_array().unwrap().iter().find(|g| g["id"] == "gw-test").cloned().unwrap_or(Value::Null);
        if gw["delivery"] == "refusing" && gw["refusing"]["reason"] == "seq_jump" {
            break;
        }
        assert!(Instant::now() < deadline, "gw-test not refusing seq_jump in the API: {gw}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until(&page, "gw-test refusing", "document.querySelector(\"#gateways [data-gateway='gw-test']\")?.dataset.state === 'refusing'").await;
    let why = page.find(Locator::Css("#gateways [data-gateway-why='gw-test']")).await.unwrap().text().await.unwrap();
    assert!(why.contains("seq_jump") && why.to_lowercase().contains("refusing"), "reason and count shown: {why}");
    let issues = page.find(Locator::Css("#gw-issues")).await.unwrap().text().await.unwrap();
    assert!(issues.contains("gw-test") && issues.contains("seq_jump") && issues.contains("gw-river") && issues.contains("wl-001"), "{issues}");
    page.execute("document.querySelector('#gateways-panel').scrollIntoView(); return true;", vec![]).await.unwrap();
    save_screenshot(&page, "gateways-refusing-degraded.png").await;

    // The wall has no gateways panel: the strip and the counters carry it.
    page.goto(&format!("http://{http}/?mode=wall")).await.unwrap();
    until(
        &page,
        "refusing and degraded on the wall",
        "document.querySelector(\"#gw-issues [data-gateway='gw-test']\")?.dataset.state === 'refusing' && document.querySelector(\"#gw-issues [data-gateway='gw-river']\")?.dataset.state === 'degraded'",
    )
    .await;
    assert_eq!(page.execute("return document.querySelector('#kpi-gw-refusing').textContent", vec![]).await.unwrap(), json!("1"));
    let fits = page.execute("return document.documentElement.scrollHeight <= window.innerHeight + 1", vec![]).await.unwrap();
    assert_eq!(fits, json!(true), "the wall still fits 1920x1080 with the strip");
    save_screenshot(&page, "wall-gateways.png").await;

    // Back on the network: the sensor is ok again and the gateway no longer degraded.
    assert_eq!(post(demo.control, &format!("/silent?sensor={QUIET}&on=false"), "").await.0, 200);
    assert_eq!(post(demo.control, "/drop?sensor=wl-001&on=false", "").await.0, 200);
    until(&page, "the sensor ok again", &format!("document.querySelector(\"{marker}\")?.dataset.state === 'ok'")).await;
    wait_for("the API to call it ok", Duration::from_secs(5), || async { (sensor_view(http, QUIET).await["state"] == "ok").then_some(()) }).await;
    until(&page, "gw-river well again", "!document.querySelector(\"#gw-issues [data-gateway='gw-river']\") && document.querySelector(\"#gw-issues [data-gateway='gw-test']\")")
        .await;
    eprintln!("dashboard: stale, degraded and refusing shown and cleared in {:.1} s", started.elapsed().as_secs_f64());
    page.close().await.unwrap();
    demo.shutdown().await;
}

/// The page keeps its state in a closure; this records each uPlot chart it
/// makes (through the global constructor app.js calls), so the test reads the
/// very data uPlot draws. Run before the charts are made.
const RECORD_CHARTS: &str =
    "const Real = window.uPlot; window.__charts = []; window.uPlot = new Proxy(Real, { construct(t, args) { const u = Reflect.construct(t, args); window.__charts.push(u); return u; } }); return true;";

/// `[xs, ys]` of the newest pm25 chart (seconds, values; a null breaks the line).
const CHART_DATA: &str =
    "(() => { const u = (window.__charts || []).filter((c) => c.series[1] && c.series[1].label === 'pm25').pop(); return u ? [u.data[0], u.data[1]] : null; })()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_breaks_its_line_where_readings_are_missing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (demo, _driver, page) = demo_in_browser(dir.path()).await;
    let http = demo.collector.http_addr;

    // A sensor read every 10 s (the hour chart's step) for 15 minutes, then
    // silent for 5 (an outage of 30 intervals), then 15 minutes more.
    const STEP: i64 = 10_000;
    let t0 = (shared::now_ms() - 40 * 60_000) / STEP * STEP;
    let before: Vec<i64> = (0..90).map(|i| t0 + i * STEP).collect();
    let after: Vec<i64> = (0..90).map(|i| t0 + 20 * 60_000 + i * STEP).collect();
    let reading = |ts_ms: i64, value: f64| Reading { seq: Seq(0), sensor: "gap-001".into(), metric: "pm25".into(), ts_ms, value, quality: Quality::Good };
    let mut gw = FakeGateway::connect(&demo.collector.mqtt_url, "gw-gaps").await;
    let last = gw.send(before.iter().chain(&after).enumerate().map(|(i, &t)| reading(t, 20.0 + (i % 7) as f64)).collect()).await;
    gw.wait_acked(last, LIMIT).await;

    page.goto(&format!("http://{http}/")).await.unwrap();
    until(&page, "the live feed", "document.querySelector('#conn')?.textContent.trim().toLowerCase() === 'live'").await;
    page.execute(RECORD_CHARTS, vec![]).await.unwrap();
    until(&page, "gap-001 in the sensors table", "document.querySelector(\"#sensors tr[data-row='gap-001']\")").await;
    page.execute("document.querySelector(\"#sensors tr[data-row='gap-001']\").dispatchEvent(new MouseEvent('click', {bubbles: true})); return true;", vec![]).await.unwrap();
    let data = until(&page, "the pm25 chart of gap-001 drawn", CHART_DATA).await;
    let (xs, ys) = (data[0].as_array().unwrap(), data[1].as_array().unwrap());
    let nulls: Vec<usize> = ys.iter().enumerate().filter(|(_, y)| y.is_null()).map(|(i, _)| i).collect();
    assert_eq!(nulls.len(), 1, "one break, at the outage, none between readings 10 s apart: nulls at {nulls:?} of {} points", ys.len());
    let k = nulls[0];
    let ms = |i: usize| (xs[i].as_f64().unwrap() * 1000.0).round() as i64;
    assert_eq!((ms(k - 1), ms(k + 1)), (*before.last().unwrap(), after[0]), "the line stops at the last reading before the outage and starts again at the first after");
    assert!(ms(k - 1) < ms(k) && ms(k) < ms(k + 1), "{xs:?}");
    assert_eq!(ys.len(), before.len() + after.len() + 1, "every reading is its own point");

    // A live reading after minutes of silence breaks the line the same way.
    let now = shared::now_ms();
    let live = gw.send(vec![reading(now, 42.5)]).await;
    gw.wait_acked(live, LIMIT).await;
    let tail = until(
        &page,
        "the live point after a break",
        &format!("(() => {{ const d = {CHART_DATA}; const n = d ? d[1].length : 0; return n > 2 && d[1][n - 1] === 42.5 ? [d[0][n - 3], d[1][n - 3], d[1][n - 2], d[0][n - 1]] : null; }})()"),
    )
    .await;
    assert_eq!(tail[1].as_f64(), Some(20.0 + ((before.len() + after.len() - 1) % 7) as f64), "the last stored reading before the break: {tail}");
    assert!(tail[2].is_null(), "a null between the last stored reading and the live one: {tail}");
    assert_eq!((tail[0].as_f64().unwrap() * 1000.0).round() as i64, *after.last().unwrap(), "{tail}");
    assert_eq!((tail[3].as_f64().unwrap() * 1000.0) as i64, now / STEP * STEP, "the live point in its 10 s bucket: {tail}");
    page.execute("document.querySelector('#detail').scrollIntoView(); return true;", vec![]).await.unwrap();
    save_screenshot(&page, "chart-gap.png").await;
    page.close().await.unwrap();
    demo.shutdown().await;
}

/// `HH:MM` of an epoch-ms time in the page's time zone, by the browser's own
/// `toTimeString` (not the dashboard's formatting).
async fn page_hh_mm(page: &Client, ms: i64) -> String {
    page.execute(&format!("return new Date({ms}).toTimeString().slice(0, 5);"), vec![]).await.unwrap().as_str().unwrap().to_string()
}

/// A SIGHUP refused at the cabinet, seen in the operations centre: the real
/// agent binary reloads a broken file; the gateway's row says in words when,
/// why and which config it runs instead, the issues strip (the wall's view)
/// lists it, and both clear once a good file is reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_config_reload_is_stated_on_the_gateway_row_and_in_the_strip_until_a_good_one() {
    use common::reloading::{gateway_view, ReloadingAgent};
    let _one = ONE_AT_A_TIME.lock().await;
    const GW: &str = "gw-cabinet";
    let dir = tempfile::tempdir().unwrap();
    let city = sim::RunningCity::start(sim::City { air: 0, traffic: 0, water: 1, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    let c = collector(dir.path(), None, &sim::run::catalogue_toml(&city.sensors())).await;
    let http = c.http_addr;
    let modbus = sim::run::modbus_toml(&[city.device("wl-001").unwrap()], Duration::from_millis(200));
    let good = agent_toml(dir.path(), GW, &c.mqtt_url, &modbus, None);
    let agent = ReloadingAgent::start(dir.path(), &good);
    wait_for("the agent's config in the API", LIMIT, || async move { gateway_view(http, GW).await["config"]["loaded_ms"].as_i64() }).await;
    let (_driver, page) = browser(&dir.path().join("profile")).await;
    page.goto(&format!("http://{http}/")).await.unwrap();
    let row = format!("#gateways tr[data-gateway='{GW}']");
    until(&page, "the gateway's row, its config fine", &format!("document.querySelector(\"{row}\")?.dataset.config === 'ok'")).await;

    agent.reload(&good.replacen("unit = 1", "unit = \"one\"", 1));
    let g = wait_for("the refused reload in the API", LIMIT, || async move {
        let g = gateway_view(http, GW).await;
        g["config"]["reload_refused"].is_object().then_some(g)
    })
    .await;
    let (config, refused) = (&g["config"], &g["config"]["reload_refused"]);
    let reason = refused["reasons"][0].as_str().unwrap();
    assert!(reason.contains("modbus[0].unit"), "{g}");
    let said = format!(
        "config reload refused at {}: {reason} (running the config loaded at {})",
        page_hh_mm(&page, refused["at_ms"].as_i64().unwrap()).await,
        page_hh_mm(&page, config["loaded_ms"].as_i64().unwrap()).await
    );
    until(&page, "the row marked", &format!("document.querySelector(\"{row}\")?.dataset.config === 'refused'")).await;
    let line = until(&page, "the refusal in words on the row", &format!("document.querySelector(\"#gateways [data-gateway-why='{GW}'] .gw-config\")?.textContent")).await;
    assert_eq!(line, json!(said), "no hover needed");
    let color = page.execute(&format!("return getComputedStyle(document.querySelector(\"#gateways [data-gateway-why='{GW}'] .gw-config\")).color"), vec![]).await.unwrap();
    let warning = page.execute("return getComputedStyle(document.querySelector('.pill.st-degraded')).backgroundColor", vec![]).await.unwrap();
    assert_eq!(color, warning, "in the warning colour");
    assert_eq!(page.execute(&format!("return document.querySelector(\"{row}\").dataset.state"), vec![]).await.unwrap(), json!("online"), "it keeps running");
    let strip = until(&page, "the refusal in the issues strip", &format!("document.querySelector(\"#gw-issues [data-gateway='{GW}']\")?.textContent")).await;
    let strip = strip.as_str().unwrap();
    assert!(strip.contains(&said[..said.find(": ").unwrap()]) && strip.contains("agent.toml:") && strip.contains("modbus[0].unit"), "{strip}");
    page.execute("document.querySelector('#gateways-panel').scrollIntoView(); return true;", vec![]).await.unwrap();
    save_screenshot(&page, "reload-refused.png").await;

    // The wall, which has no gateways panel, lists it in its strip.
    page.goto(&format!("http://{http}/?mode=wall")).await.unwrap();
    let wall = until(&page, "the refusal on the wall", &format!("document.querySelector(\"#gw-issues [data-gateway='{GW}'] .issue-config\")?.textContent")).await;
    assert!(wall.as_str().unwrap().contains("reload refused at "), "{wall}");

    // A good file reloaded: the row and the strip clear.
    agent.reload(&good);
    until(&page, "the strip cleared", &format!("!document.querySelector(\"#gw-issues [data-gateway='{GW}']\") && document.querySelector('#gw-issues').hidden")).await;
    page.goto(&format!("http://{http}/")).await.unwrap();
    until(
        &page,
        "the row cleared",
        &format!("document.querySelector(\"{row}\")?.dataset.config === 'ok' && !document.querySelector(\"#gateways [data-gateway-why='{GW}'] .gw-config\")"),
    )
    .await;
    page.close().await.unwrap();
    agent.stop();
    c.shutdown().await;
}
