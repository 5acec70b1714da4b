//! `/healthz` tells the truth: a store that refuses writes or panics, or an
//! ingest stuck on a write that never returns, makes it answer 503 naming
//! the component; recovery makes it 200 again (a component whose task has
//! ended is named `stopped`: `liveness`'s unit test). The store is the real redb engine behind a wrapper that fails
//! or panics on command (the `Parts::store` seam).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use collector::config::CollectorConfig;
use collector::store::{Expired, Forward, Keep, Level, Progress, RedbStore, Rollup, Sample, SeqSpace, Store, StoreError, Write};
use collector::{Collector, Parts};
use serde_json::Value;
use shared::{Metric, Quality, Reading, SensorId};
use support::*;

const OK: u8 = 0;
const FAIL: u8 = 1;
const PANIC: u8 = 2;
/// Writes block until the mode changes: a hung disk.
const HANG: u8 = 3;
/// The next write fails, the ones after it land.
const FAIL_ONCE: u8 = 4;

/// The real store, whose writes fail or panic when told.
struct Flaky {
    inner: RedbStore,
    mode: AtomicU8,
    /// Writes begun.
    writes: AtomicUsize,
}

impl Flaky {
    fn open(path: &std::path::Path) -> Arc<Flaky> {
        Arc::new(Flaky { inner: RedbStore::open(path).unwrap(), mode: AtomicU8::new(OK), writes: AtomicUsize::new(0) })
    }
}

impl Store for Flaky {
    fn write(&self, w: &Write) -> Result<(), StoreError> {
        self.writes.fetch_add(1, SeqCst);
        while self.mode.load(SeqCst) == HANG {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.mode.compare_exchange(FAIL_ONCE, OK, SeqCst, SeqCst).is_ok() {
            return Err(StoreError::Corrupt { path: "flaky".into(), detail: "one write refused".into() });
        }
        match self.mode.load(SeqCst) {
            FAIL => Err(StoreError::Corrupt { path: "flaky".into(), detail: "disk refuses writes".into() }),
            PANIC => panic!("store write panicked"),
            _ => self.inner.write(w),
        }
    }
    fn forward_next(&self, max: usize) -> Result<Vec<Forward>, StoreError> {
        self.inner.forward_next(max)
    }
    fn forward_done(&self, id: u64) -> Result<(), StoreError> {
        self.inner.forward_done(id)
    }
    fn forward_backlog(&self) -> u64 {
        self.inner.forward_backlog()
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }
    fn progress(&self) -> Result<Vec<(SeqSpace, Progress)>, StoreError> {
        self.inner.progress()
    }
    fn query(&self, sensor: &str, metric: &str, from: i64, to: i64, limit: usize) -> Result<Vec<Sample>, StoreError> {
        self.inner.query(sensor, metric, from, to, limit)
    }
    fn last(&self, sensor: &str, metric: &str) -> Result<Option<Sample>, StoreError> {
        self.inner.last(sensor, metric)
    }
    fn series(&self) -> Vec<(SensorId, Metric)> {
        self.inner.series()
    }
    fn roll_up(&self) -> Result<u64, StoreError> {
        self.inner.roll_up()
    }
    fn pack(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.inner.pack(now_ms)
    }
    fn rollups(&self, sensor: &str, metric: &str, level: Level, from: i64, to: i64) -> Result<Vec<Rollup>, StoreError> {
        self.inner.rollups(sensor, metric, level, from, to)
    }
    fn expire(&self, now_ms: i64, keep: &dyn Fn(&str, &str) -> Keep) -> Result<Expired, StoreError> {
        self.inner.expire(now_ms, keep)
    }
    fn size_on_disk(&self) -> u64 {
        self.inner.size_on_disk()
    }
    fn bind(&self, bindings: &[(SensorId, shared::GatewayId)]) -> Result<(), StoreError> {
        self.inner.bind(bindings)
    }
    fn bindings(&self) -> Result<Vec<(SensorId, shared::GatewayId)>, StoreError> {
        self.inner.bindings()
    }
}

fn reading(v: f64) -> Reading {
    Reading { seq: shared::Seq(0), sensor: "wl-1".into(), metric: "water_level_m".into(), ts_ms: shared::now_ms(), value: v, quality: Quality::Good }
}

/// A collector on the flaky store in `dir`.
async fn start(dir: &tempfile::TempDir) -> (Arc<Flaky>, Collector) {
    let text = format!("[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n", dir.path().join("store").display());
    let cfg: CollectorConfig = shared::config::parse("health collector", &text, dir.path()).unwrap_or_else(|d| panic!("{d}"));
    let flaky = Flaky::open(&dir.path().join("store"));
    let c = Collector::start_with(cfg, Parts { store: Some(flaky.clone()), ..Parts::default() }).await.unwrap();
    (flaky, c)
}

async fn health(addr: std::net::SocketAddr) -> (u16, Value) {
    let (status, body) = get(addr, "/healthz").await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz: {e}: {body}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_a_failing_store_and_a_stalled_ingest_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, c) = start(&dir).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-h").await;
    let seq = gw.send(vec![reading(1.0)]).await;
    gw.wait_acked(seq, Duration::from_secs(20)).await;
    let (status, body) = health(c.http_addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["components"], serde_json::json!(["rules", "ingest", "store"]));

    // The store refuses writes: nothing is acked, and /healthz says which part fails.
    flaky.mode.store(FAIL, SeqCst);
    gw.send(vec![reading(2.0)]).await;
    let body = wait_for("/healthz to name the store", Duration::from_secs(20), || async {
        let (status, body) = health(c.http_addr).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["failing"][0]["component"], "store", "{body}");
    assert!(body["failing"][0]["problem"].as_str().unwrap().contains("disk refuses writes"), "{body}");

    // It recovers with the next write that lands.
    flaky.mode.store(OK, SeqCst);
    gw.send(vec![reading(3.0)]).await;
    wait_for("/healthz to recover", Duration::from_secs(20), || async { (health(c.http_addr).await.0 == 200).then_some(()) }).await;

    // A write that never returns: ingest has work waiting and makes no
    // progress, and is named once that has lasted 10 s.
    flaky.mode.store(HANG, SeqCst);
    gw.send(vec![reading(4.0)]).await;
    let body = wait_for("/healthz to name the stalled ingest", Duration::from_secs(30), || async {
        let (status, body) = health(c.http_addr).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["failing"][0]["component"], "ingest", "{body}");
    assert!(body["failing"][0]["problem"].as_str().unwrap().starts_with("no progress for"), "{body}");
    flaky.mode.store(OK, SeqCst);
    wait_for("/healthz to recover after the stall", Duration::from_secs(20), || async { (health(c.http_addr).await.0 == 200).then_some(()) }).await;

    // A write that panics: the store is named.
    flaky.mode.store(PANIC, SeqCst);
    gw.send(vec![reading(5.0)]).await;
    let body = wait_for("/healthz to name the panicking store", Duration::from_secs(20), || async {
        let (status, body) = health(c.http_addr).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body["failing"].as_array().unwrap().iter().any(|f| f["component"] == "store" && f["problem"] == "a write panicked"), "{body}");
    c.shutdown().await;
}

/// Ingest admits the next batches while the store writes the last ones, its
/// trackers ahead of the disk. When that write fails, what was admitted on
/// top of it must be neither acked nor stored with its progress, and the
/// resent batches must not be taken for duplicates: all three readings end
/// up stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_admitted_behind_a_failed_write_are_not_acked_and_are_stored_when_resent() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, c) = start(&dir).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-p").await;
    let first = gw.send(vec![reading(1.0)]).await;
    gw.wait_acked(first, Duration::from_secs(20)).await;
    assert_eq!(metric(c.http_addr, "citysense_store_commits_total").await, 1.0, "one write made durable");

    // The second batch's write hangs; the third is admitted behind it.
    flaky.mode.store(HANG, SeqCst);
    let before = flaky.writes.load(SeqCst);
    let at = |v: f64, ms: i64| Reading { ts_ms: shared::now_ms() + ms, ..reading(v) };
    let (second, _) = gw.batch("gw-p", vec![at(2.0, 1)]);
    let (third, third_seq) = gw.batch("gw-p", vec![at(3.0, 2)]);
    let up = shared::topics::up("gw-p");
    gw.client.publish(&up, rumqttc::QoS::AtLeastOnce, false, second.clone()).await.unwrap();
    wait_for("the second batch's write to begin", Duration::from_secs(20), || async { (flaky.writes.load(SeqCst) > before).then_some(()) }).await;
    gw.client.publish(&up, rumqttc::QoS::AtLeastOnce, false, third.clone()).await.unwrap();
    wait_for("the third batch to be admitted", Duration::from_secs(20), || async { (metric(c.http_addr, "citysense_batches_total").await >= 3.0).then_some(()) }).await;
    // The hung write fails.
    flaky.mode.store(FAIL_ONCE, SeqCst);
    wait_for("the failed write to be counted", Duration::from_secs(20), || async { (metric(c.http_addr, "citysense_store_errors_total").await >= 1.0).then_some(()) }).await;
    assert_eq!(metric(c.http_addr, "citysense_store_commits_total").await, 1.0, "a failed write is no commit, nor is the group dropped behind it");

    // The agent resends both (its ack timeout): both are stored.
    gw.client.publish(&up, rumqttc::QoS::AtLeastOnce, false, second).await.unwrap();
    gw.client.publish(&up, rumqttc::QoS::AtLeastOnce, false, third).await.unwrap();
    gw.wait_acked(third_seq, Duration::from_secs(20)).await;
    let values = series_values(c.http_addr, "wl-1", "water_level_m").await;
    assert_eq!(values, [1.0, 2.0, 3.0], "every reading stored once the resent batches landed");
    assert_eq!(metric(c.http_addr, "citysense_readings_duplicate_total").await, 0.0, "a resent reading the store never had is no duplicate");
    c.shutdown().await;
}

/// A disk stalls while more gateways send than the acks' request queue
/// holds (1,024), and an operator asks for a gateway's progress meanwhile
/// (ingest finishes every commit before it answers). When acks went out on
/// the connection that hears batches, the commit's 1,100 acks waited for
/// room in that connection's queue, the connection for ingest to take the
/// next batch, and ingest for the commit: nothing moved again. (Without the
/// operator, ingest waiting for room in flight closed the same circle: a
/// 1,000-gateway benchmark stopped at 5.8M readings.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_disk_stall_more_gateways_than_the_ack_queue_holds_are_all_acknowledged() {
    const GATEWAYS: usize = 1_100;
    const ROUNDS: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let (flaky, c) = start(&dir).await;
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..GATEWAYS {
        let url = c.mqtt_url.clone();
        connecting.spawn(async move { FakeGateway::connect(&url, &format!("gw-{i}")).await });
    }
    // In the order they connected: each sends the sensor of its place here.
    let mut gateways: Vec<FakeGateway> = connecting.join_all().await;
    let one = |i: usize, v: f64| vec![Reading { sensor: format!("s-{i}").into(), ..reading(v) }];

    flaky.mode.store(HANG, SeqCst);
    let before = flaky.writes.load(SeqCst);
    gateways[0].send(one(0, 0.0)).await;
    wait_for("a write to hang", Duration::from_secs(20), || async { (flaky.writes.load(SeqCst) > before).then_some(()) }).await;
    // One batch from each gateway, admitted behind the hung write: its commit will ack 1,100.
    for (i, gw) in gateways.iter_mut().enumerate() {
        gw.send(one(i, 1.0)).await;
    }
    wait_for("every gateway's batch to be admitted", Duration::from_secs(60), || async { (metric(c.http_addr, "citysense_batches_total").await > GATEWAYS as f64).then_some(()) })
        .await;
    let http = c.http_addr;
    let asked = tokio::spawn(async move { get(http, "/api/v1/gateways/gw-0/progress").await });
    // More than ingest's queue holds, while it waits for the commit.
    for round in 2..=ROUNDS {
        for (i, gw) in gateways.iter_mut().enumerate() {
            gw.send(one(i, round as f64)).await;
        }
    }
    // Named stalled once ingest has made no progress for 10 s: by then the
    // connection has taken all it could.
    wait_for("/healthz to name the stalled ingest", Duration::from_secs(60), || async {
        let (status, body) = health(c.http_addr).await;
        (status == 503 && body["failing"][0]["component"] == "ingest").then_some(())
    })
    .await;

    flaky.mode.store(OK, SeqCst);
    for (i, gw) in gateways.iter_mut().enumerate() {
        gw.wait_acked(if i == 0 { ROUNDS + 1 } else { ROUNDS }, Duration::from_secs(60)).await;
    }
    let (status, body) = asked.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(metric(c.http_addr, "citysense_readings_stored_total").await, (GATEWAYS as u64 * ROUNDS + 1) as f64);
    c.shutdown().await;
}
