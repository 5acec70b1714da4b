//! `ingest --sustained`: the collector with everything a city runs switched
//! on (rules on every reading's metric, the MQTT live feed with a
//! subscriber, SSE, the InfluxDB sink into VictoriaMetrics) for millions of
//! readings, an alert probe running all along.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::alert_latency::{pct, Prober, PROBE_RULE};
use crate::common::*;
use crate::ingest::{evaluated, load, until, Gateways};

/// `total` readings from `gateways` connections (1,000-reading batches of
/// 10 metrics × 100 sensors, as `ingest`), through `broker` (embedded or
/// Mosquitto), with `rules` threshold rules on those 10 metrics, the sink
/// into VictoriaMetrics on loopback, a subscriber on `live/#` and one on
/// SSE. Readings/s is timed from the first publish until every reading is
/// stored and the rule engine has evaluated it; a probe gateway turns an
/// alert on and off all along, its latency taken the way `alert-latency`
/// takes it. Each gateway keeps `window` batches unacknowledged by the
/// collector at most, as an agent does (`None`: 100 QoS 1 publishes in
/// flight at the broker and no waiting for acks, a flood that queues in the
/// broker and that alerts wait behind). Without `rate` the gateways send as
/// fast as that lets them (capacity); with `rate` they send that many
/// readings/s in all, as a city does, and the figures say whether the
/// collector kept up and how fast alerts came meanwhile.
pub(crate) async fn sustained(gateways: usize, total: u64, rules: usize, broker: &str, rate: Option<u64>, window: Option<u64>, off: &[String]) -> Result<serde_json::Value> {
    let vm_dir = tempfile::tempdir()?;
    let vm_port = support::free_port();
    // `CITYSENSE_BENCH_SERVER_NICE=19`: VictoriaMetrics (standing in for the
    // InfluxDB server, which a deployment runs on a machine of its own) at
    // that niceness, named in the output: the collector's figures without
    // the database's share of the two cores, not a collector setting.
    let server_nice: i32 = std::env::var("CITYSENSE_BENCH_SERVER_NICE").ok().map(|n| n.parse()).transpose()?.unwrap_or(0);
    let vm = support::Victoria::start_niced(vm_dir.path(), vm_port, server_nice)?;
    let server_cpu = || vm.pid().and_then(|p| proc_usage(p).ok()).map_or(0.0, |u| u.0);
    let (mqtt, mosquitto) = broker_line(broker)?;
    // `--off sink,live`: to see what each part costs, not for the headline figures.
    let on = |part: &str| !off.iter().any(|o| o == part);
    let sink = if on("sink") { format!("[influxdb]\nurl = \"http://127.0.0.1:{vm_port}\"\norg = \"city\"\nbucket = \"bench\"\n") } else { String::new() };
    // `CITYSENSE_BENCH_STORE_CACHE=2GiB`: the store's `cache` changed from the
    // shipped 256MiB, named in the output (what the store's working set costs).
    let cache = std::env::var("CITYSENSE_BENCH_STORE_CACHE").ok();
    // Right after `[store] path`: the line lands in `[store]`.
    let cache_line = cache.as_ref().map(|c| format!("cache = \"{c}\"\n")).unwrap_or_default();
    // `CITYSENSE_BENCH_IN_FLIGHT=1048576`: `ingest.in_flight_readings`
    // changed from the shipped 4,194,304, named in the output.
    let in_flight = std::env::var("CITYSENSE_BENCH_IN_FLIGHT").ok();
    let in_flight_line = in_flight.as_ref().map(|n| format!("[ingest]\nin_flight_readings = {n}\n")).unwrap_or_default();
    let (_dir, c) = collector_on(&mqtt, &format!("{cache_line}{}{PROBE_RULE}{sink}{in_flight_line}", quiet_rules(rules))).await?;

    let live_received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (live, mut live_el) = mqtt_client(&c.mqtt_url, "bench-live-screen");
    if on("live") {
        live.subscribe("citysense/v1/live/#", rumqttc::QoS::AtMostOnce).await?;
    }
    let counted = live_received.clone();
    tokio::spawn(async move {
        while let Ok(ev) = live_el.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = ev {
                counted.fetch_add(1, Relaxed);
            }
        }
    });
    // A flood of batches in flight (unpaced, 1,000 gateways) holds an alert
    // for as long as the broker's queue takes: measured, not a failure.
    let mut prober = Prober::start(&c, Duration::from_secs(600)).await?;
    // Settled: one change through before the clock starts.
    prober.once().await?;

    let done = Arc::new(AtomicBool::new(false));
    // The probe's readings are stored and evaluated too: counted before each is sent.
    let probed = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let probing = {
        let (done, probed) = (done.clone(), probed.clone());
        tokio::spawn(async move {
            let (mut to_mqtt, mut to_sse) = (Vec::new(), Vec::new());
            while !done.load(Relaxed) {
                probed.fetch_add(1, Relaxed);
                let (m, s) = prober.once().await?;
                to_mqtt.push(m);
                to_sse.push(s);
                // About 20 changes a second: a busy city's alert rate, not a load of its own.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok((to_mqtt, to_sse))
        })
    };
    let connected = Gateways::connect(&c, gateways, window).await?;
    let upkeep_before = upkeep(c.http_addr).await?;
    let cpu_before = (proc_usage(std::process::id())?.0, server_cpu());
    let stalled_before = cpu_stalled_us();
    let start = Instant::now();
    let want = load(&c, connected, total, None, rate).await?;
    let all = || want + probed.load(Relaxed);
    until("ingest", Duration::from_millis(1), || c.counters.stored.load(Relaxed), all).await?;
    let stored_secs = start.elapsed().as_secs_f64();
    evaluated(&c, all).await?;
    let secs = start.elapsed().as_secs_f64();
    let cpu_in_clock = (proc_usage(std::process::id())?.0 - cpu_before.0, server_cpu() - cpu_before.1);
    let stalled_share = (cpu_stalled_us().saturating_sub(stalled_before)) as f64 / 1e6 / secs;
    // Whether the run's minute was rolled up inside the clock depends on
    // where the run fell in the minute: said with each figure. A pass still
    // running is counted when it ends, so this is a lower bound.
    let upkeep_in_clock = upkeep(c.http_addr).await?;
    let upkeep_in_clock = (upkeep_in_clock.0 - upkeep_before.0, upkeep_in_clock.1 - upkeep_before.1);
    done.store(true, Relaxed);
    let (mut to_mqtt, mut to_sse) = probing.await??;
    let probes = to_mqtt.len() as u64;

    let deadline = Instant::now() + Duration::from_secs(1200);
    while on("sink") && scrape(c.http_addr, "citysense_influx_points_written_total").await? < want as f64 {
        if Instant::now() > deadline {
            bail!("sink stalled");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sink_secs = start.elapsed().as_secs_f64();
    let dropped = |unit: &str| {
        let name = format!("citysense_feed_dropped_total{{feed=\"mqtt_live\",unit=\"{unit}\"}}");
        async move { scrape(c.http_addr, &name).await }
    };
    let (live_dropped, live_batches_skipped) = (dropped("reading").await?, dropped("batch").await?);
    let sink_errors = if on("sink") { scrape(c.http_addr, "citysense_influx_write_errors_total").await? } else { 0.0 };
    let lagged = c.counters.rules_lagged_readings.load(Relaxed);
    let (upkeep_s, upkeep_passes) = upkeep(c.http_addr).await?;
    let rss_mb = proc_usage(std::process::id())?.2;
    let cpu_to_sink_done = (proc_usage(std::process::id())?.0 - cpu_before.0, server_cpu() - cpu_before.1);
    let duplicates = scrape(c.http_addr, "citysense_readings_duplicate_total").await?;
    let commits = scrape(c.http_addr, "citysense_store_commits_total").await?;
    let live_received = live_received.load(Relaxed);
    c.shutdown().await;
    drop(mosquitto);
    drop(vm);
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(
        json!({"scenario": "ingest-sustained", "store_cache": cache.as_deref().unwrap_or("256MiB (shipped)"), "in_flight_readings": in_flight.as_deref().unwrap_or("4194304 (shipped)"), "gateways": gateways, "rate_asked": rate, "unacked_batches_per_gateway": window, "off": off, "rules": rules + 1, "rules_on_load_metrics": rules, "broker": broker,
              "readings": want, "seconds": r3(secs), "readings_per_s": (want as f64 / secs).round(),
              "stored_seconds": r3(stored_secs), "stored_readings_per_s": (want as f64 / stored_secs).round(),
              "rules_lagged_readings": lagged,
              "batches_resent_for_want_of_an_ack": crate::ingest::RESENT.load(Relaxed), "readings_duplicate": duplicates, "store_commits": commits, "readings_per_commit": (want as f64 / commits.max(1.0)).round(),
              "alert_changes_probed": probes, "alert_mqtt_ms_p50": pct(&mut to_mqtt, 0.5), "alert_mqtt_ms_p99": pct(&mut to_mqtt, 0.99), "alert_mqtt_ms_max": pct(&mut to_mqtt, 1.0),
              "alert_sse_ms_p50": pct(&mut to_sse, 0.5), "alert_sse_ms_p99": pct(&mut to_sse, 0.99), "alert_sse_ms_max": pct(&mut to_sse, 1.0),
              "live_feed_received": live_received, "live_feed_dropped_readings": live_dropped, "live_feed_skipped_batches": live_batches_skipped,
              "sink_all_confirmed_seconds": r3(sink_secs), "sink_points_per_s": (want as f64 / sink_secs).round(), "sink_write_errors": sink_errors,
              "store_upkeep_seconds": r3(upkeep_s), "store_upkeep_passes": upkeep_passes,
              "store_upkeep_seconds_in_clock": r3(upkeep_in_clock.0), "store_upkeep_passes_in_clock": upkeep_in_clock.1,
              "bench_process_peak_rss_mb": rss_mb,
              "bench_process_cpu_seconds_in_clock": r3(cpu_in_clock.0), "bench_process_cpu_seconds_to_sink_done": r3(cpu_to_sink_done.0),
              "cpu_stalled_share_in_clock": r3(stalled_share), "server_nice": server_nice, "server_cpu_seconds_in_clock": r3(cpu_in_clock.1), "server_cpu_seconds_to_sink_done": r3(cpu_to_sink_done.1),
              "clock": "from the first publish until every reading is stored and the rule engine has evaluated it; the sink drains its forward log after, timed apart",
              "on": "store (shipped defaults), 1 probe rule + the rules on the load's 10 metrics, MQTT live feed with a subscriber, SSE alert stream, InfluxDB sink into VictoriaMetrics on loopback; broker, collector, load generator and VictoriaMetrics share the machine"}),
    )
}

/// The store's upkeep so far: seconds in passes that ended, and passes.
async fn upkeep(http: std::net::SocketAddr) -> Result<(f64, f64)> {
    Ok((scrape(http, "citysense_store_upkeep_seconds_total").await?, scrape(http, "citysense_store_upkeep_passes_total").await?))
}
