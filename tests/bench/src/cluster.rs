//! `cluster`: the collector on a 3-node NATS cluster (deploy/nats) against
//! the single process, in one run: readings/s with 1, 2 and 3 collectors
//! reading the batch log, CPU per reading per collector, alert latency on
//! each path, and what killing the speaker costs (the next reading stored,
//! the alert gap).
//!
//! The collectors run in this process (each with its own store, as on its
//! own host); the NATS nodes in theirs. Two ways to share the log: every
//! collector reading all of it (each stores the whole city), and the log
//! split into `PARTITIONS` partitions shared among the collectors (each
//! stores and judges its share). On this 2-core machine the figure that
//! shows how the cluster scales is CPU per reading per collector, and where
//! it goes: this process (the collectors; the load is encoded before the
//! clock starts, its publishing is in) and the NATS nodes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;
use shared::Quality;

use crate::common::*;
use crate::ingest::evaluated;

const GATEWAYS: usize = 10;
const BATCH: u64 = 1000;
/// The split of the shared-work variants: a few partitions per collector.
const PARTITIONS: u32 = 12;

fn users() -> Vec<(String, String, String)> {
    let mut u = vec![("collector".to_string(), "citysense-collector".to_string(), "collector-secret".to_string())];
    u.extend((0..GATEWAYS).map(|g| ("gateway".to_string(), format!("gw-{g}"), format!("gw-{g}-secret"))));
    u.push(("gateway".into(), "gw-probe".into(), "gw-probe-secret".into()));
    u.push(("reader".into(), "bench-reader".into(), "bench-reader-secret".into()));
    u
}

fn nats(dir: &Path) -> Result<support::NatsCluster> {
    let u = users();
    let refs: Vec<(&str, &str, &str)> = u.iter().map(|(r, n, p)| (r.as_str(), n.as_str(), p.as_str())).collect();
    support::NatsCluster::start(dir, &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy"), 3, &refs)
}

/// `partitions`: 0, each collector reads the whole log.
async fn cluster_collector(dir: &Path, nats: &support::NatsCluster, name: &str, partitions: u32, rules: &str) -> Result<collector::Collector> {
    std::fs::write(dir.join("collector-password"), "collector-secret\n")?;
    let text = format!(
        "[mqtt]\nexternal = {}\nusername = \"citysense-collector\"\npassword_file = \"{}\"\nmax_packet = \"16MiB\"\ngateway_rate = 10000000\n[cluster]\nname = \"{name}\"\nnats = {}\npartitions = {partitions}\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n{rules}",
        nats.mqtt_list(&[0, 1, 2]),
        dir.join("collector-password").display(),
        nats.nats_list(&[0, 1, 2]),
        dir.join(format!("store-{name}")).display()
    );
    let cfg: collector::config::CollectorConfig = shared::config::parse("bench cluster collector", &text, dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(collector::Collector::start(cfg).await?)
}

fn logged_in(url: &str, id: &str, password: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let b = shared::url::BrokerUrl::parse(url).unwrap();
    let mut o = rumqttc::MqttOptions::new(id, b.host, b.port);
    o.set_max_packet_size(16 << 20, 16 << 20);
    o.set_inflight(100);
    o.set_credentials(id, password);
    let (c, mut el) = rumqttc::AsyncClient::new(o, 256);
    el.network_options.set_tcp_nodelay(true);
    (c, el)
}

fn batch(gw: &str, first_seq: u64, n: u64, sensor: impl Fn(u64) -> String, value: impl Fn(u64) -> f64) -> Vec<u8> {
    // A gateway's seq as its milliseconds: each series strictly in time order.
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let t0 = *BASE.get_or_init(shared::now_ms);
    let readings = (0..n)
        .map(|k| shared::Reading {
            seq: shared::Seq(first_seq + k),
            sensor: sensor(k).into(),
            metric: format!("m{}", k / 100).into(),
            ts_ms: t0 + (first_seq + k) as i64,
            value: value(k),
            quality: Quality::Good,
        })
        .collect();
    shared::Batch::new(gw.to_string(), 1, readings).encode()
}

/// The ingest benchmark's load, encoded before the clock starts: `GATEWAYS`
/// gateways' batches of `BATCH` readings (10 metrics × 100 sensors each).
fn encode_load(total: u64) -> Vec<Vec<Vec<u8>>> {
    let per_gateway = total / GATEWAYS as u64 / BATCH;
    (0..GATEWAYS).map(|g| (0..per_gateway).map(|b| batch(&format!("gw-{g}"), b * BATCH + 1, BATCH, |k| format!("s{g}-{}", k % 100), |k| (k % 97) as f64)).collect()).collect()
}

/// Publishes each gateway's batches through its own connection (`connect`
/// gives gateway g's client), then waits until every collector has stored
/// and evaluated them all, or, `shared`, until the collectors have between them.
async fn publish_load(
    load: Vec<Vec<Vec<u8>>>,
    connect: impl Fn(usize) -> (rumqttc::AsyncClient, rumqttc::EventLoop),
    collectors: &[&collector::Collector],
    shared: bool,
) -> Result<u64> {
    let want = load.iter().map(|g| g.len() as u64).sum::<u64>() * BATCH;
    let mut tasks = Vec::new();
    for (g, batches) in load.into_iter().enumerate() {
        let (client, el) = connect(g);
        tokio::spawn(keep_polling(el));
        tasks.push(tokio::spawn(async move {
            let gw = format!("gw-{g}");
            for bytes in batches {
                client.publish(shared::topics::up(&gw), rumqttc::QoS::AtLeastOnce, false, bytes).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    if shared {
        let stored = || collectors.iter().map(|c| c.counters.stored.load(Relaxed)).sum::<u64>();
        crate::ingest::until("storing", Duration::from_millis(5), stored, || want).await?;
        let judged = || collectors.iter().map(|c| c.alerting.evaluated.load(Relaxed) + c.counters.rules_lagged_readings.load(Relaxed)).sum::<u64>();
        crate::ingest::until("rules", Duration::from_millis(1), judged, || want).await?;
        return Ok(want);
    }
    for c in collectors {
        let deadline = Instant::now() + Duration::from_secs(900);
        while c.counters.stored.load(Relaxed) < want {
            if Instant::now() > deadline {
                bail!("a collector stalled at {} of {want}", c.counters.stored.load(Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        evaluated(c, || want).await?;
    }
    Ok(want)
}

fn cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| proc_usage(*p).ok()).map(|(s, _, _)| s).sum()
}

/// Alert changes arriving on `citysense/v1/alerts/#` at `url`, each with the time it arrived.
async fn alert_feed(url: &str, login: Option<(&str, &str)>) -> Result<tokio::sync::mpsc::UnboundedReceiver<(Instant, serde_json::Value)>> {
    let b = shared::url::BrokerUrl::parse(url).unwrap();
    let mut o = rumqttc::MqttOptions::new(login.map(|l| l.0).unwrap_or("bench-reader"), b.host, b.port);
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (client, mut el) = rumqttc::AsyncClient::new(o, 64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (granted_tx, granted) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut granted_tx = Some(granted_tx);
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = client.subscribe("citysense/v1/alerts/#", rumqttc::QoS::AtMostOnce).await;
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(g) = granted_tx.take() {
                        let _ = g.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send((Instant::now(), serde_json::from_slice(&p.payload).unwrap_or_default()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), granted).await.map_err(|_| anyhow::anyhow!("the alert feed at {url}: no SUBACK within 30 s"))??;
    Ok(rx)
}

const PROBE_RULE: &str = "[[rule]]\nid = \"probe\"\nkind = \"threshold\"\nmetric = \"m0\"\nop = \">\"\nvalue = 75\nseverity = \"warning\"\nselect = { sensor = \"probe\" }\n";

/// Publishes `samples` readings of the probe sensor, alternately over and
/// under its rule's limit, each once the previous one's alert change has
/// arrived; milliseconds from publish to arrival, p50 and p99.
async fn probe_latency(
    client: &rumqttc::AsyncClient,
    gw: &str,
    feed: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, serde_json::Value)>,
    samples: u64,
    seq: &mut u64,
) -> Result<(f64, f64)> {
    let mut ms = Vec::new();
    for i in 0..samples {
        *seq += 1;
        let value = if i % 2 == 0 { 100.0 } else { 10.0 };
        let sent = Instant::now();
        client.publish(shared::topics::up(gw), rumqttc::QoS::AtLeastOnce, false, batch(gw, *seq, 1, |_| "probe".into(), |_| value)).await?;
        let (at, _) = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .map_err(|_| anyhow::anyhow!("probe reading {i} (value {value}): no alert change on the feed within 10 s"))?
            .ok_or_else(|| anyhow::anyhow!("the alert feed ended"))?;
        ms.push(at.duration_since(sent).as_secs_f64() * 1000.0);
        // Each probe a millisecond after the last at least: rules take a series in time order.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| (ms[((ms.len() as f64 - 1.0) * p).round() as usize] * 100.0).round() / 100.0;
    Ok((pct(0.5), pct(0.99)))
}

pub(crate) async fn cluster(quick: bool) -> Result<Vec<serde_json::Value>> {
    let total: u64 = if quick { 20_000 } else { 1_000_000 };
    let samples: u64 = if quick { 20 } else { 200 };
    let me = std::process::id();
    let mut lines = Vec::new();

    // The single process: embedded broker, the same load and rules.
    {
        let (_dir, c) = collector_with(&format!("{}{PROBE_RULE}", quiet_rules(100))).await?;
        let work = encode_load(total);
        let cpu0 = cpu(&[me]);
        let start = Instant::now();
        let url = c.mqtt_url.clone();
        let want = publish_load(work, |g| mqtt_client(&url, &format!("bench-gw-{g}")), &[&c], false).await?;
        let secs = start.elapsed().as_secs_f64();
        let used = cpu(&[me]) - cpu0;
        let mut feed = alert_feed(&c.mqtt_url, None).await?;
        let (probe, el) = mqtt_client(&c.mqtt_url, "gw-probe");
        tokio::spawn(keep_polling(el));
        let mut seq = 0;
        let (p50, p99) = probe_latency(&probe, "gw-probe", &mut feed, samples, &mut seq).await?;
        c.shutdown().await;
        lines.push(json!({"scenario": "cluster", "path": "single process", "collectors": 1, "readings": want, "seconds": r3(secs), "readings_per_s": (want as f64 / secs).round(),
                          "cpu_us_per_reading_per_collector": r1(used * 1e6 / want as f64), "alert_ms_p50": p50, "alert_ms_p99": p99, "alert_samples": samples}));
    }

    for (n, partitions) in [1usize, 2, 3].map(|n| (n, 0)).into_iter().chain([1usize, 2, 3].map(|n| (n, PARTITIONS))) {
        let shared = partitions > 0;
        let dir = tempfile::tempdir()?;
        let cluster = nats(dir.path())?;
        let mut collectors = Vec::new();
        for i in 0..n {
            collectors.push(cluster_collector(dir.path(), &cluster, &format!("c{}", i + 1), partitions, &format!("{}{PROBE_RULE}", quiet_rules(100))).await?);
        }
        let https: Vec<SocketAddr> = collectors.iter().map(|c| c.http_addr).collect();
        // Whose turn it is to go: the speaker, or the holder of the probe's partition.
        let speaker = if shared { wait_shared(&https).await? } else { wait_speaker(&https).await? };
        let nodes = cluster.pids();
        let work = encode_load(total);
        let (cpu0, nats0) = (cpu(&[me]), cpu(&nodes));
        let start = Instant::now();
        let connect = |g: usize| logged_in(&cluster.mqtt_url(g % 3), &format!("gw-{g}"), &format!("gw-{g}-secret"));
        let want = publish_load(work, connect, &collectors.iter().collect::<Vec<_>>(), shared).await?;
        let secs = start.elapsed().as_secs_f64();
        let (used, nats_used) = (cpu(&[me]) - cpu0, cpu(&nodes) - nats0);
        let mut feed = alert_feed(&cluster.mqtt_url(0), Some(("bench-reader", "bench-reader-secret"))).await?;
        let (probe, el) = logged_in(&cluster.mqtt_url(1), "gw-probe", "gw-probe-secret");
        tokio::spawn(keep_polling(el));
        let mut seq = 0;
        let (p50, p99) = probe_latency(&probe, "gw-probe", &mut feed, samples, &mut seq).await?;
        let path = if shared { "NATS cluster, batch log shared by partition" } else { "NATS cluster, batch log read by each" };
        let mut line = json!({"scenario": "cluster", "path": path, "partitions": partitions, "collectors": n, "readings": want, "seconds": r3(secs), "readings_per_s": (want as f64 / secs).round(),
                              "cpu_us_per_reading_per_collector": r1(used * 1e6 / want as f64 / n as f64), "nats_cpu_us_per_reading": r1(nats_used * 1e6 / want as f64),
                              "alert_ms_p50": p50, "alert_ms_p99": p99, "alert_samples": samples});
        if n >= 2 {
            // The speaker dies while the probe goes on (a crossing every 100 ms):
            // the next probe reading stored on a survivor, and the next alert change on the feed.
            let prober = {
                let probe = probe.clone();
                tokio::spawn(async move {
                    let mut seq = seq;
                    for i in 0..600u64 {
                        seq += 1;
                        let value = if i % 2 == 0 { 100.0 } else { 10.0 };
                        if probe.publish(shared::topics::up("gw-probe"), rumqttc::QoS::AtLeastOnce, false, batch("gw-probe", seq, 1, |_| "probe".into(), |_| value)).await.is_err()
                        {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            };
            while feed.try_recv().is_ok() {}
            tokio::time::sleep(Duration::from_secs(1)).await;
            let gone = collectors.remove(speaker);
            let stored = || collectors.iter().map(|c| c.counters.stored.load(Relaxed)).sum::<u64>();
            let stored_before = stored();
            let killed = Instant::now();
            gone.shutdown().await;
            let mut next_stored = None;
            let mut next_alert = None;
            let deadline = Instant::now() + Duration::from_secs(60);
            while (next_stored.is_none() || next_alert.is_none()) && Instant::now() < deadline {
                if next_stored.is_none() && stored() > stored_before {
                    next_stored = Some(killed.elapsed());
                }
                while let Ok((at, _)) = feed.try_recv() {
                    if at > killed && next_alert.is_none() {
                        next_alert = Some(at.duration_since(killed));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            prober.abort();
            line["stopped_next_reading_stored_ms"] = json!(next_stored.map(|d| r1(d.as_secs_f64() * 1000.0)));
            line["stopped_alert_gap_ms"] = json!(next_alert.map(|d| r1(d.as_secs_f64() * 1000.0)));
        }
        for c in collectors {
            c.shutdown().await;
        }
        drop(cluster);
        eprintln!("{line}");
        lines.push(line);
    }
    for l in &mut lines {
        l["gateways"] = json!(GATEWAYS);
        l["batch"] = json!(BATCH);
        l["rules"] = json!(101);
        l["clock"] = json!("from the first publish until every collector has stored every reading and its rules have evaluated it (shared by partition: until the collectors have between them); alert: publish of a probe reading to its alert change on MQTT (the speaker's or the probe partition's holder's, through the node the reader is on); stopped: the speaker, or the probe partition's holder, stops (shutdown, which hands its partitions back) while the probe goes on");
    }
    Ok(lines)
}

/// Waits until every partition is held and the collectors hold a fair
/// share each; returns which holds the probe gateway's.
async fn wait_shared(https: &[SocketAddr]) -> Result<usize> {
    let fair = PARTITIONS.div_ceil(https.len() as u32) as usize;
    let probe = collector::cluster::partition::Partitions::new(PARTITIONS).of("gw-probe");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut held = Vec::new();
        for h in https {
            let (_, body) = support::try_get(*h, "/metrics").await?;
            held.push(support::partitions_held(&body));
        }
        if held.iter().map(Vec::len).sum::<usize>() == PARTITIONS as usize && held.iter().all(|h| h.len() <= fair) {
            return Ok(held.iter().position(|h| h.contains(&probe)).expect("every partition held"));
        }
        if Instant::now() > deadline {
            bail!("the partitions were not shared out within 60 s: {held:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_speaker(https: &[SocketAddr]) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, h) in https.iter().enumerate() {
            if scrape(*h, "citysense_speaker").await? == 1.0 {
                return Ok(i);
            }
        }
        if Instant::now() > deadline {
            bail!("no collector took the speaker lease within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Drives a client's connection until the client is dropped, reconnecting
/// on errors: a node whose JetStream is still settling refuses a CONNECT or two.
async fn keep_polling(mut el: rumqttc::EventLoop) {
    loop {
        match el.poll().await {
            Ok(_) => {}
            Err(rumqttc::ConnectionError::RequestsDone) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
