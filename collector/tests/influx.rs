//! The InfluxDB sink against a real server speaking the v2 write API
//! (VictoriaMetrics, started here on loopback with its data in a temp dir),
//! and against a server that refuses one bad point.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shared::{Quality, Reading};
use support::*;

/// VictoriaMetrics started and answering `/health`.
async fn start_vm(data: &Path, port: u16) -> Victoria {
    let vm = Victoria::start(data, port).unwrap_or_else(|e| panic!("{e:#}"));
    answering(&vm).await;
    vm
}

async fn answering(vm: &Victoria) {
    wait_for("VictoriaMetrics /health", Duration::from_secs(30), || async { (get(vm.addr(), "/health").await.0 == 200).then_some(()) }).await;
}

/// Every exported sample of series whose name matches `name_re`:
/// (name, labels without the name) → (ts_ms, value) in export order.
async fn export(vm: &Victoria, name_re: &str) -> BTreeMap<(String, BTreeMap<String, String>), Vec<(i64, f64)>> {
    assert_eq!(get(vm.addr(), "/internal/force_flush").await.0, 200);
    let q = format!("{{__name__=~\"{name_re}\"}}");
    let enc: String = q.bytes().map(|b| format!("%{b:02X}")).collect();
    let (status, body) = get(vm.addr(), &format!("/api/v1/export?match[]={enc}")).await;
    assert_eq!(status, 200, "{body}");
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let mut labels: BTreeMap<String, String> = v["metric"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
        let name = labels.remove("__name__").unwrap();
        let ts = v["timestamps"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap());
        let vals = v["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap());
        out.entry((name, labels)).or_insert_with(Vec::new).extend(ts.zip(vals));
    }
    out
}

const CATALOGUE: &str = r#"
[[sensor]]
id = "aq-001"
kind = "air_quality"
district = "Xihu"
owner = "Environment Bureau"
"#;

fn influx_toml(port: u16) -> String {
    format!("[influxdb]\nurl = \"http://127.0.0.1:{port}\"\norg = \"city\"\nbucket = \"sensors\"\nbatch_points = 500\ntimeout = \"2s\"\n")
}

fn reading(sensor: &str, metric: &str, ts_ms: i64, value: f64) -> Reading {
    Reading { seq: shared::Seq(0), sensor: sensor.into(), metric: metric.into(), ts_ms, value, quality: Quality::Good }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn wait_drained(addr: SocketAddr, written: f64) {
    wait_for("the InfluxDB backlog to drain", Duration::from_secs(60), || async move {
        (metric(addr, "citysense_influx_backlog").await == 0.0 && metric(addr, "citysense_influx_points_written_total").await >= written).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_reach_victoria_metrics_with_their_tags_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let vm = start_vm(dir.path().join("vm").as_path(), free_port()).await;
    let c = collector(dir.path(), None, &format!("{}{CATALOGUE}", influx_toml(vm.port))).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-v").await;
    let t0 = shared::now_ms() - 3_600_000;
    let mut last = 0;
    for b in 0..10 {
        let mut rs = Vec::new();
        for i in 0..20 {
            let n = b * 20 + i;
            rs.push(Reading { quality: if n % 7 == 0 { Quality::Uncertain } else { Quality::Good }, ..reading("aq-001", "pm25", t0 + n * 1000, 10.0 + n as f64 / 4.0) });
            rs.push(reading("zz-900", "noise_laeq", t0 + n * 1000 + 1, 50.5 + n as f64));
        }
        last = gw.send(rs).await;
    }
    gw.wait_acked(last, Duration::from_secs(20)).await;
    wait_drained(c.http_addr, 400.0).await;

    let pm25_tags = labels(&[("sensor", "aq-001"), ("gateway", "gw-v"), ("district", "Xihu"), ("kind", "air_quality"), ("owner", "Environment Bureau")]);
    let want_pm25: Vec<(i64, f64)> = (0..200).map(|n| (t0 + n * 1000, 10.0 + n as f64 / 4.0)).collect();
    let want_quality: Vec<(i64, f64)> = (0..200).map(|n| (t0 + n * 1000, if n % 7 == 0 { 1.0 } else { 0.0 })).collect();
    // Uncatalogued: only the tags the collector knows.
    let noise_tags = labels(&[("sensor", "zz-900"), ("gateway", "gw-v")]);
    let want_noise: Vec<(i64, f64)> = (0..200).map(|n| (t0 + n * 1000 + 1, 50.5 + n as f64)).collect();
    let got = wait_for("all 400 points in VictoriaMetrics' export", Duration::from_secs(60), || {
        let vm = &vm;
        async move {
            let got = export(vm, "pm25_.*|noise_laeq_.*").await;
            let n: usize = got.values().map(Vec::len).sum();
            (n >= 800).then_some(got)
        }
    })
    .await;
    let series: Vec<_> = got.keys().cloned().collect();
    assert_eq!(got.get(&("pm25_value".to_string(), pm25_tags.clone())), Some(&want_pm25), "series: {series:?}");
    assert_eq!(got.get(&("pm25_quality".to_string(), pm25_tags)), Some(&want_quality));
    assert_eq!(got.get(&("noise_laeq_value".to_string(), noise_tags)), Some(&want_noise), "series: {series:?}");
    assert_eq!(got.len(), 4, "exactly value and quality of two series: {series:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_second_outage_delays_points_and_loses_or_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = start_vm(dir.path().join("vm").as_path(), free_port()).await;
    let c = collector(dir.path(), None, &format!("{}{CATALOGUE}", influx_toml(vm.port))).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-o").await;
    let t0 = shared::now_ms() - 3_600_000;
    let (batches, per_batch) = (300i64, 20i64);
    let publisher = tokio::spawn(async move {
        let mut last = 0;
        for b in 0..batches {
            let rs = (0..per_batch).map(|i| b * per_batch + i).map(|n| reading("aq-001", "pm25", t0 + n * 10, n as f64)).collect();
            last = gw.send(rs).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        gw.wait_acked(last, Duration::from_secs(30)).await;
    });
    // Mid-stream: some points are in, then the server goes away for 20 s.
    wait_for("the first points written", Duration::from_secs(20), || async { (metric(c.http_addr, "citysense_influx_points_written_total").await > 0.0).then_some(()) }).await;
    vm.stop();
    let stopped = tokio::time::Instant::now();
    wait_for("a backlog while the server is down", Duration::from_secs(20), || async { (metric(c.http_addr, "citysense_influx_backlog").await > 0.0).then_some(()) }).await;
    tokio::time::sleep_until(stopped + Duration::from_secs(20)).await;
    let backlog = metric(c.http_addr, "citysense_influx_backlog").await;
    let errors = metric(c.http_addr, "citysense_influx_write_errors_total").await;
    assert!(backlog >= 1000.0, "20 s of a 200 readings/s stream waits in the log, found {backlog}");
    assert!(errors > 0.0);
    vm.restart().unwrap();
    answering(&vm).await;
    let drain_from = std::time::Instant::now();
    publisher.await.unwrap();
    let total = (batches * per_batch) as f64;
    wait_drained(c.http_addr, total).await;
    eprintln!(
        "backlog of {backlog} readings after a 20 s outage ({errors} failed writes); stream and backlog drained {:.1} s after the restart",
        drain_from.elapsed().as_secs_f64()
    );

    let got = wait_for("every point in VictoriaMetrics' export", Duration::from_secs(60), || {
        let vm = &vm;
        async move {
            let got = export(vm, "pm25_value").await;
            let n: usize = got.values().map(Vec::len).sum();
            (n >= total as usize).then_some(got)
        }
    })
    .await;
    assert_eq!(got.len(), 1, "one series: {:?}", got.keys().collect::<Vec<_>>());
    let mut count: HashMap<i64, (usize, f64)> = HashMap::new();
    for (ts, v) in got.values().next().unwrap() {
        let e = count.entry(*ts).or_insert((0, *v));
        e.0 += 1;
    }
    let missing: Vec<i64> = (0..batches * per_batch).filter(|n| !count.contains_key(&(t0 + n * 10))).collect();
    let twice: Vec<i64> = count.iter().filter(|(_, (k, _))| *k > 1).map(|(ts, _)| (ts - t0) / 10).collect();
    assert!(missing.is_empty(), "{} points missing, first {:?}", missing.len(), &missing[..missing.len().min(10)]);
    assert!(twice.is_empty(), "{} points twice, first {:?}", twice.len(), &twice[..twice.len().min(10)]);
    assert!(count.iter().all(|(ts, (_, v))| *v == ((ts - t0) / 10) as f64), "values match their timestamps");
    assert_eq!(metric(c.http_addr, "citysense_influx_points_rejected_total").await, 0.0);
}

/// A server that refuses any request holding a point of `bad-1` and records
/// the lines it accepted.
async fn picky_server() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::StatusCode;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let keep = accepted.clone();
    let app = axum::Router::new().route(
        "/api/v2/write",
        axum::routing::post(move |body: String| {
            let keep = keep.clone();
            async move {
                if body.contains("sensor=bad-1") {
                    return (StatusCode::BAD_REQUEST, "{\"code\":\"invalid\",\"message\":\"unable to parse point\"}");
                }
                keep.lock().unwrap().extend(body.lines().map(str::to_string));
                (StatusCode::NO_CONTENT, "")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_point_is_logged_and_dropped_without_blocking_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (server, accepted) = picky_server().await;
    let c = collector(dir.path(), None, &influx_toml(server.port())).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-p").await;
    let t0 = 1_700_000_000_000;
    let mut rs: Vec<Reading> = (0..99).map(|n| reading("good-1", "pm25", t0 + n, n as f64)).collect();
    rs.insert(40, reading("bad-1", "pm25", t0, 1.0));
    let last = gw.send(rs).await;
    let after = gw.send(vec![reading("good-2", "pm25", t0, 7.0)]).await;
    gw.wait_acked(after.max(last), Duration::from_secs(20)).await;
    wait_drained(c.http_addr, 100.0).await;
    assert_eq!(metric(c.http_addr, "citysense_influx_points_rejected_total").await, 1.0);
    let lines = accepted.lock().unwrap().clone();
    assert_eq!(lines.len(), 100, "every good point once: {lines:?}");
    assert!(lines.iter().all(|l| !l.contains("bad-1")));
    assert!(lines.iter().any(|l| l == &format!("pm25,gateway=gw-p,sensor=good-2 value=7.0,quality=1i {t0}")), "{lines:?}");
}
