//! The dashboard at city scale (issue 23), in a real browser (headless
//! Chromium over WebDriver): a collector with 10,000 catalogued sensors in
//! ten districts behind ten gateways, fed every sensor every few seconds by
//! fake gateways while the page is open. The page paints the map within
//! 1.5 s, answers a script within 100 ms while readings flow, keeps its JS
//! heap under 150 MB, shows districts as regions and the sensors as
//! clusters, individual sensors once zoomed into a district, turns a
//! district and its cluster the alert's colour within 2 s of the reading
//! that raised it, and fits the wall at 1920x1080 and 3840x2160 without
//! scrollbars. Figures are printed; screenshots land in target/artifacts/city/.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::browser::{browser, until};
use common::*;
use fantoccini::Client;
use serde_json::{json, Value};
use shared::{Quality, Reading, Seq};

const DISTRICTS: usize = 10;
const PER_DISTRICT: usize = 1_000;
/// Every sensor sends once per round: 5 s (~2,000 readings/s) in the suite;
/// `CITYSENSE_CITY_ROUND_MS=500` feeds the 20,000 readings/s the wall must
/// keep up with, for a run by hand.
fn round_every() -> Duration {
    let ms = std::env::var("CITYSENSE_CITY_ROUND_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    Duration::from_millis(ms)
}
/// How long the page takes live updates before its heap is read: the
/// minute the issue asks for.
const LIVE: Duration = Duration::from_secs(60);
const DISTRICT_NAMES: [&str; DISTRICTS] = ["Xihu", "Shangcheng", "Gongshu", "Binjiang", "Xiaoshan", "Yuhang", "Linping", "Qiantang", "Fuyang", "Linan"];
const KINDS: [&str; 4] = ["air_quality", "water_level", "noise", "traffic"];

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    let dir = target.join("artifacts").join("city");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sensor_id(d: usize, i: usize) -> String {
    format!("{}-{d}-{i:04}", &KINDS[i % KINDS.len()][..2])
}

/// Ten districts on a 5 x 2 grid, each a disc of 1,000 sensors (a sunflower
/// spiral, so none sits on another).
fn catalogue() -> String {
    let mut t = String::with_capacity(DISTRICTS * PER_DISTRICT * 140);
    for (d, name) in DISTRICT_NAMES.iter().enumerate() {
        let (clat, clon) = (30.20 + 0.08 * (d / 5) as f64, 120.00 + 0.08 * (d % 5) as f64);
        for i in 0..PER_DISTRICT {
            let r = 0.03 * ((i as f64 + 0.5) / PER_DISTRICT as f64).sqrt();
            let a = i as f64 * 2.399963;
            t.push_str(&format!(
                "[[sensor]]\nid = \"{}\"\nkind = \"{}\"\ndistrict = \"{name}\"\nlat = {:.5}\nlon = {:.5}\ngateway = \"gw-{d}\"\n",
                sensor_id(d, i),
                KINDS[i % KINDS.len()],
                clat + r * a.sin(),
                clon + r * a.cos()
            ));
        }
    }
    t.push_str("[[rule]]\nid = \"pm25-high\"\nkind = \"threshold\"\nmetric = \"pm25\"\nop = \">\"\nvalue = 75\nseverity = \"critical\"\nselect = { kind = \"air_quality\" }\n");
    t.push_str(
        "[[rule]]\nid = \"river-high\"\nkind = \"threshold\"\nmetric = \"water_level_m\"\nop = \">\"\nvalue = 4.0\nseverity = \"emergency\"\nselect = { kind = \"water_level\" }\n",
    );
    t
}

/// The sensor the test raises an alert on, in district 3.
const VICTIM: (usize, usize) = (3, 40);

/// One round of a district's readings: ordinary values, clear of every limit
/// (but the victim's PM2.5 once it is `forced`).
fn round(d: usize, ts_ms: i64, n: u64, forced: bool) -> Vec<Reading> {
    let mut out = Vec::with_capacity(PER_DISTRICT * 2);
    let mut r = |sensor: String, metric: &str, value: f64| out.push(Reading { seq: Seq(0), sensor: sensor.into(), metric: metric.into(), ts_ms, value, quality: Quality::Good });
    for i in 0..PER_DISTRICT {
        let wobble = ((i as u64 * 7 + n * 3) % 10) as f64;
        match i % KINDS.len() {
            0 => {
                let high = forced && (d, i) == VICTIM;
                r(sensor_id(d, i), "pm25", if high { 180.0 } else { 20.0 + wobble + d as f64 * 4.0 });
                r(sensor_id(d, i), "pm10", 40.0 + wobble);
            }
            1 => r(sensor_id(d, i), "water_level_m", 2.0 + wobble / 10.0),
            2 => r(sensor_id(d, i), "noise_laeq", 55.0 + wobble),
            _ => r(sensor_id(d, i), "speed_kmh", 30.0 + wobble),
        }
    }
    out
}

async fn js(page: &Client, script: &str) -> Value {
    page.execute(script, vec![]).await.unwrap()
}

async fn screenshot(page: &Client, name: &str) {
    let png = page.screenshot().await.unwrap();
    assert!(png.len() > 10_000, "{name}: a real picture");
    std::fs::write(artifacts().join(name), png).unwrap();
}

const NO_SCROLLBARS: &str = "return [document.documentElement.scrollWidth <= innerWidth && document.documentElement.scrollHeight <= innerHeight, innerWidth, innerHeight, document.documentElement.scrollWidth, document.documentElement.scrollHeight]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sensors_on_the_map_the_league_and_the_wall() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let c = collector(dir.path(), None, &catalogue()).await;
    let http = c.http_addr;
    eprintln!("city: collector with {} sensors up in {:.1} s", DISTRICTS * PER_DISTRICT, started.elapsed().as_secs_f64());

    // Ten gateways send every sensor once a round, in batches of 500.
    let mut gws = Vec::new();
    for d in 0..DISTRICTS {
        gws.push(FakeGateway::connect(&c.mqtt_url, &format!("gw-{d}")).await);
    }
    // The test sends through the feeder's own gateways: a second connection
    // under a gateway's id would end the first, and its sequence would start over.
    let gws = Arc::new(tokio::sync::Mutex::new(gws));
    let forced = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let feeder = {
        let (sent, stop, gws, forced) = (sent.clone(), stop.clone(), gws.clone(), forced.clone());
        tokio::spawn(async move {
            let mut first = Some(first_tx);
            let mut n = 0u64;
            let mut tick = tokio::time::interval(round_every());
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let ts = shared::now_ms();
                let mut last = Vec::new();
                let mut gws = gws.lock().await;
                for (d, gw) in gws.iter_mut().enumerate() {
                    let readings = round(d, ts, n, forced.load(Ordering::Relaxed));
                    let count = readings.len() as u64;
                    let mut seq = 0;
                    for chunk in readings.chunks(500) {
                        seq = gw.send(chunk.to_vec()).await;
                    }
                    last.push(seq);
                    sent.fetch_add(count, Ordering::Relaxed);
                }
                if let Some(tx) = first.take() {
                    for (gw, seq) in gws.iter_mut().zip(&last) {
                        gw.wait_acked(*seq, Duration::from_secs(60)).await;
                    }
                    let _ = tx.send(());
                }
                n += 1;
            }
        })
    };
    first_rx.await.unwrap();
    eprintln!("city: first round of {} readings stored {:.1} s after start", sent.load(Ordering::Relaxed), started.elapsed().as_secs_f64());

    // The compact snapshot and the league, as the page reads them.
    let asked = Instant::now();
    let (status, body) = get(http, "/api/v1/map").await;
    eprintln!("city: /api/v1/map answered in {} ms", asked.elapsed().as_millis());
    assert_eq!(status, 200);
    let snapshot: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snapshot["id"].as_array().unwrap().len(), DISTRICTS * PER_DISTRICT);
    let full = get(http, "/api/v1/sensors").await.1.len();
    eprintln!("city: /api/v1/map {} kB against /api/v1/sensors {} kB", body.len() / 1024, full / 1024);
    // The league's figures (a snapshot is reused for half a second, so the first may predate the readings).
    let league = wait_for("the city's AQI", Duration::from_secs(10), || async move {
        let l = get_json(http, "/api/v1/districts").await;
        l["city"]["indicators"]["aqi"]["aqi"].as_u64().is_some().then_some(l)
    })
    .await;
    assert_eq!(league["districts"].as_array().unwrap().len(), DISTRICTS);
    eprintln!(
        "city: league worst first {:?}; city {}",
        league["districts"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect::<Vec<_>>(),
        league["city"]["indicators"]
    );

    let (_driver, page) = browser(&dir.path().join("profile")).await;
    page.goto(&format!("http://{http}/")).await.unwrap();
    let paint = until(&page, "the first map paint", "window.__cityPaint").await.as_f64().unwrap();
    let regions = until(&page, "ten district regions", "document.querySelectorAll('#map .region').length === 10 && document.querySelectorAll('#map .cluster').length").await;
    let timing = js(&page, "const n = performance.getEntriesByType('navigation')[0]; const m = performance.getEntriesByType('resource').find((e) => e.name.endsWith('/api/v1/map')); return [Math.round(n.domContentLoadedEventEnd), m && Math.round(m.startTime), m && Math.round(m.responseEnd)]").await;
    eprintln!("city: first meaningful paint (map with sensors) {paint:.0} ms after navigation start, {regions} clusters at city zoom; [DOMContentLoaded, /map asked, /map received] at {timing} ms");
    assert!(paint <= 1_500.0, "first meaningful paint after {paint} ms");
    let nodes = js(&page, "return document.querySelectorAll('#map *').length").await;
    let rows = js(&page, "return document.querySelectorAll('#sensors tr').length").await;
    eprintln!("city: {nodes} map elements, {rows} table rows for {} sensors", DISTRICTS * PER_DISTRICT);
    assert!(nodes.as_u64().unwrap() < 3_000 && rows.as_u64().unwrap() <= 50, "{nodes} map elements, {rows} rows");
    until(&page, "the table sorted worst first, paged", "document.querySelector('#sensors-pageinfo')?.textContent.includes('of 10000')").await;
    screenshot(&page, "desk-city.png").await;

    // Live updates for a while: script round trips measured throughout, and
    // the page's own long tasks (over 50 ms on its main thread) recorded.
    js(&page, "window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(Math.round(e.duration)); }).observe({ type: 'longtask' }); window.__loaf = []; new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__loaf.push([Math.round(e.duration), Math.round(e.renderStart ? e.startTime + e.duration - e.renderStart : 0), Math.round(e.styleAndLayoutStart ? e.startTime + e.duration - e.styleAndLayoutStart : 0), e.scripts.map((x) => [x.invoker, x.sourceFunctionName, Math.round(x.duration)])]); }).observe({ type: 'long-animation-frame' }); window.__lag = []; window.__probe = setInterval(() => { const t = performance.now(); setTimeout(() => window.__lag.push(performance.now() - t), 0); }, 200); return true").await;
    let live = Instant::now();
    let mut trips = Vec::new();
    while live.elapsed() < LIVE {
        let t = Instant::now();
        js(&page, "return 1").await;
        trips.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    trips.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p95, max) = (trips[trips.len() / 2], trips[trips.len() * 95 / 100], trips[trips.len() - 1]);
    let long = js(&page, "return window.__long").await;
    let loaf = js(&page, "return window.__loaf.map((f) => f[0] > 150 ? f : f[0])").await;
    eprintln!("city: the page's long animation frames (ms) while live: {loaf}");
    let lag = js(
        &page,
        "clearInterval(window.__probe); const l = window.__lag.slice().sort((a, b) => a - b); return [l.length, l[l.length >> 1], l[Math.floor(l.length * 0.95)], l[l.length - 1]]",
    )
    .await;
    let (lag_p95, lag_max) = (lag[2].as_f64().unwrap(), lag[3].as_f64().unwrap());
    eprintln!("city: in-page task delay over {} probes: p50 {:.1} ms, p95 {lag_p95:.1} ms, max {lag_max:.1} ms", lag[0], lag[1].as_f64().unwrap());
    eprintln!("city: the page's long tasks (ms) while live: {long}");
    let heap = js(&page, "return performance.memory.usedJSHeapSize").await.as_f64().unwrap() / 1_048_576.0;
    let rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    eprintln!("city: after {} s of live updates ({rate:.0} readings/s sent on average): JS heap {heap:.1} MB; script round trip p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms over {} trips", LIVE.as_secs(), trips.len());
    assert!(heap <= 150.0, "JS heap {heap} MB");
    // Responsiveness, two ways: a task queued inside the page runs within
    // 100 ms at the 95th percentile, and a script sent over WebDriver comes
    // back within 100 ms typically (the median). The WebDriver trip also
    // waits for chromedriver and this test to be scheduled, which on two cores
    // shared with a debug collector ingesting (and whatever else runs) is not
    // the page's doing: its p95 and max are printed with the machine's load.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("city: machine load {}", load.trim());
    assert!(lag_p95 <= 100.0, "in-page task delay p95 {lag_p95} ms (max {lag_max} ms)");
    assert!(p50 <= 100.0, "script round trip p50 {p50} ms (p95 {p95} ms, max {max} ms), load {}", load.trim());

    // An alert on one sensor: its district and its cluster turn the alert's colour.
    let (d, victim) = (VICTIM.0, sensor_id(VICTIM.0, VICTIM.1));
    let district = DISTRICT_NAMES[d];
    let before = js(
        &page,
        &format!(
            "return [document.querySelector(\"#map .region[data-district='{district}']\").dataset.severity || null, citysense.clusterOf('{victim}')?.dataset.severity || null]"
        ),
    )
    .await;
    assert_eq!(before, json!([null, null]), "calm before");
    let mut all = gws.lock().await;
    forced.store(true, Ordering::Relaxed);
    let at = Instant::now();
    all[d].send(vec![Reading { seq: Seq(0), sensor: victim.clone().into(), metric: "pm25".into(), ts_ms: shared::now_ms(), value: 180.0, quality: Quality::Good }]).await;
    drop(all);
    until(
        &page,
        "district and cluster critical",
        &format!("document.querySelector(\"#map .region[data-district='{district}']\")?.dataset.severity === 'critical' && citysense.clusterOf('{victim}')?.dataset.severity === 'critical'"),
    )
    .await;
    let took = at.elapsed();
    let colour = js(&page, &format!("return [document.querySelector(\"#map .region[data-district='{district}']\").getAttribute('fill'), citysense.clusterOf('{victim}').querySelector('circle').getAttribute('fill')]")).await;
    eprintln!("city: {victim}'s alert coloured district {district} and its cluster {colour} {:.0} ms after the reading was sent", took.as_secs_f64() * 1000.0);
    assert_eq!(colour, json!(["#ff4d4f", "#ff4d4f"]), "the critical colour");
    assert!(took <= Duration::from_secs(2), "alert colour after {took:?}");
    screenshot(&page, "desk-alert.png").await;

    // The table's API: worst first by default, filtered by state and district, bad input named.
    // The table's snapshot may be up to 500 ms older than the live stream that coloured the map.
    let worst = wait_for("the alerting sensor at the top of the table", Duration::from_secs(5), || {
        let victim = victim.clone();
        async move {
            let worst = get_json(http, "/api/v1/sensors/page?limit=3").await;
            (worst["rows"][0]["id"].as_str() == Some(victim.as_str())).then_some(worst)
        }
    })
    .await;
    assert_eq!((worst["total"].as_u64(), worst["rows"][0]["id"].as_str(), worst["rows"][0]["state"].as_str()), (Some(10_000), Some(victim.as_str()), Some("alerting")), "{worst}");
    let here = get_json(http, &format!("/api/v1/sensors/page?state=alerting&district={district}&q=ai")).await;
    assert_eq!(here["total"], 1, "{here}");
    assert_eq!(get(http, "/api/v1/sensors/page?limit=0").await, (400, r#"{"error":"limit 0 must be 1 to 500"}"#.to_string()));
    assert_eq!(get(http, "/api/v1/sensors/page?state=red").await.0, 400);
    assert_eq!(get(http, "/api/v1/map/boundaries").await.0, 404, "none configured");

    // Zooming into the district: a click on its region, then on its clusters, shows its sensors one by one.
    js(&page, &format!("document.querySelector(\"#map .region[data-district='{district}']\").dispatchEvent(new MouseEvent('click', {{bubbles: true}})); return true")).await;
    let click_centre =
        "const r = c.getBoundingClientRect(); c.dispatchEvent(new MouseEvent('click', {bubbles: true, clientX: r.x + r.width / 2, clientY: r.y + r.height / 2})); return true";
    let mut singles = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        singles = js(&page, &format!("return document.querySelectorAll(\"#map [data-sensor][data-district='{district}']\").length")).await.as_u64().unwrap();
        if singles > 0 {
            break;
        }
        js(&page, &format!("const c = document.querySelector(\"#map .cluster[data-district='{district}'] circle\"); {click_centre}")).await;
    }
    assert!(singles > 0, "zoomed into {district}, no individual sensor drawn");
    eprintln!("city: zoomed into {district}: {singles} of its sensors drawn one by one");
    // Further in, on the alerting sensor's cluster, until the sensor itself is drawn, in its alert's colour.
    let mut state = Value::Null;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        state = js(&page, &format!("return document.querySelector(\"#map [data-sensor='{victim}']\")?.dataset.state || null")).await;
        if !state.is_null() {
            break;
        }
        js(&page, &format!("const c = citysense.clusterOf('{victim}')?.querySelector('circle'); if (!c) return false; {click_centre}")).await;
    }
    assert_eq!(state, json!("alerting"), "{victim} drawn on its own, alerting");
    // Its detail: the page holds no values in a big city, so it fetches this sensor's row first.
    js(&page, &format!("document.querySelector(\"#map [data-sensor='{victim}']\").dispatchEvent(new MouseEvent('click', {{bubbles: true}})); return true")).await;
    until(
        &page,
        "the alerting sensor's detail and its pm25 chart",
        "!document.querySelector('#detail').hidden && document.querySelector(\"#detail .chart-card[data-metric='pm25'] .uplot\")",
    )
    .await;
    screenshot(&page, "desk-zoomed.png").await;

    // The wall at both sizes.
    for (w, h) in [(1920u32, 1080u32), (3840, 2160)] {
        // The viewport itself at that size: the window is the viewport plus whatever the browser keeps around it.
        page.set_window_size(w, h).await.unwrap();
        let around = js(&page, "return [outerWidth - innerWidth, outerHeight - innerHeight]").await;
        page.set_window_size(w + around[0].as_u64().unwrap() as u32, h + around[1].as_u64().unwrap() as u32).await.unwrap();
        page.goto(&format!("http://{http}/?mode=wall")).await.unwrap();
        until(&page, "the wall's map and league", "document.querySelectorAll('#map .region').length === 10 && document.querySelectorAll('#district-league tr[data-district]').length > 1 && document.querySelector('#alerts .alert:not([hidden])')").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let fit = js(&page, NO_SCROLLBARS).await;
        assert_eq!((fit[1].as_u64(), fit[2].as_u64()), (Some(w as u64), Some(h as u64)), "the viewport: {fit}");
        eprintln!("city: wall at {w}x{h}: fits, inner size and scroll size {fit}");
        assert_eq!(fit[0], json!(true), "wall at {w}x{h} scrolls: {fit}");
        let font = js(&page, "return parseFloat(getComputedStyle(document.querySelector('#district-league td.dname')).fontSize)").await;
        eprintln!("city: wall at {w}x{h}: district names in {font} px");
        screenshot(&page, &format!("wall-{w}x{h}.png")).await;
    }

    stop.store(true, Ordering::Relaxed);
    let _ = feeder.await;
    page.close().await.unwrap();
    c.shutdown().await;
    eprintln!("city: whole test {:.1} s", started.elapsed().as_secs_f64());
}

/// The response head of `GET path`, by hand (the support helpers keep only the body).
async fn head_of(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split_once("\r\n\r\n").map(|(h, _)| h.to_string()).unwrap_or(text)
}

/// `[map]`: the boundaries file is served back with only names, the tile
/// server is handed to the page, and the page's CSP admits images from that
/// origin and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_boundaries_and_tile_server_reach_the_page() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("districts.geojson"), demo::DISTRICTS_GEOJSON).unwrap();
    let map = format!(
        "[map]\nboundaries = \"{}\"\ntile_url = \"http://10.20.0.5:8081/{{z}}/{{x}}/{{y}}.png\"\ntile_attribution = \"ops tiles\"\n\n[[sensor]]\nid = \"aq-1\"\nkind = \"air_quality\"\ndistrict = \"Xihu\"\nlat = 30.25\nlon = 120.13\n",
        dir.path().join("districts.geojson").display()
    );
    let c = collector(dir.path(), None, &map).await;
    let shapes = get_json(c.http_addr, "/api/v1/map/boundaries").await;
    let names: Vec<&str> = shapes["features"].as_array().unwrap().iter().map(|f| f["properties"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Gongshu", "Xihu", "Shangcheng", "Binjiang"]);
    assert_eq!(shapes["features"][0]["geometry"]["type"], "MultiPolygon");
    let snapshot = get_json(c.http_addr, "/api/v1/map").await;
    assert_eq!(
        (&snapshot["tiles"]["url"], &snapshot["tiles"]["attribution"], &snapshot["boundaries"]),
        (&json!("http://10.20.0.5:8081/{z}/{x}/{y}.png"), &json!("ops tiles"), &json!(true))
    );
    let head = head_of(c.http_addr, "/").await.to_lowercase();
    let csp = head.lines().find(|l| l.starts_with("content-security-policy:")).unwrap_or_default().to_string();
    assert!(csp.contains("img-src 'self' data: http://10.20.0.5:8081;"), "{csp}");
    assert!(csp.contains("connect-src 'self';") && csp.contains("script-src 'self';"), "nothing else widened: {csp}");
    c.shutdown().await;
}
