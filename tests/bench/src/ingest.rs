//! `ingest`: collector readings/s from many gateways, with rules, through
//! the embedded broker or Mosquitto.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;
use shared::Quality;

use crate::common::*;

/// `gateways` connections each publish batches of 1,000 readings (10 metrics ×
/// 100 sensors) until `total` readings are stored; readings/s is stored/elapsed.
pub(crate) async fn ingest(gateways: usize, total: u64, batch: Option<u64>, rules: usize, broker: &str) -> Result<serde_json::Value> {
    let (mqtt, mosquitto) = broker_line(broker)?;
    let (_dir, c) = collector_on(&mqtt, &quiet_rules(rules)).await?;
    let start = Instant::now();
    let want = load(&c, gateways, total, batch, None).await?;
    let stored_secs = start.elapsed().as_secs_f64();
    evaluated(&c, || want).await?;
    let secs = start.elapsed().as_secs_f64();
    let lagged = c.counters.rules_lagged.load(Relaxed);
    let lagged_readings = c.counters.rules_lagged_readings.load(Relaxed);
    c.shutdown().await;
    drop(mosquitto);
    Ok(json!({"scenario": "ingest", "gateways": gateways, "rules": rules, "readings": want, "batch": batch.unwrap_or((total / gateways as u64).clamp(1, 1000)),
              "seconds": (secs * 1000.0).round() / 1000.0, "readings_per_s": (want as f64 / secs).round(),
              "stored_seconds": (stored_secs * 1000.0).round() / 1000.0, "stored_readings_per_s": (want as f64 / stored_secs).round(),
              "rules_lagged_batches": lagged, "rules_lagged_readings": lagged_readings, "broker": broker,
              "clock": "from the first publish until every reading is stored and the rule engine has evaluated it (or counted it lagged)"}))
}

/// Waits until the rule engine has evaluated `want` readings, or counted the
/// rest as lagged (taken off its queue unevaluated): only then has the work
/// an ingest figure with rules claims been done.
pub(crate) async fn evaluated(c: &collector::Collector, want: impl Fn() -> u64) -> Result<()> {
    until("rules", Duration::from_millis(1), || c.alerting.evaluated.load(Relaxed) + c.counters.rules_lagged_readings.load(Relaxed), want).await
}

/// Waits until `count()` reaches `want()` (both read again each time: a
/// probe may still be adding readings), looking every `every`; after 600 s
/// fails naming `what` stalled.
pub(crate) async fn until(what: &str, every: Duration, count: impl Fn() -> u64, want: impl Fn() -> u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while count() < want() {
        if Instant::now() > deadline {
            bail!("{what} stalled at {} of {} readings", count(), want());
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// Publishes about `total` readings from `gateways` connections in batches of
/// `batch` (default: 1,000, fewer when there are many gateways), as fast as
/// the collector takes them or at `rate` readings/s in all (each gateway
/// sending its share on a schedule it keeps up with if it can), and waits
/// until the collector has stored them all; returns how many.
pub(crate) async fn load(c: &collector::Collector, gateways: usize, total: u64, batch: Option<u64>, rate: Option<u64>) -> Result<u64> {
    let size = batch.unwrap_or((total / gateways as u64).clamp(1, 1000));
    let per_gateway = total / gateways as u64 / size;
    let every = rate.map(|r| Duration::from_secs_f64(size as f64 * gateways as f64 / r as f64));
    let mut tasks = Vec::new();
    for g in 0..gateways {
        let (client, mut el) = mqtt_client(&c.mqtt_url, &format!("bench-gw-{g}"));
        tokio::spawn(async move { while el.poll().await.is_ok() {} });
        tasks.push(tokio::spawn(async move {
            let gw = format!("gw-{g}");
            let t0 = shared::now_ms();
            // Gateways start spread over one period, as a city's do.
            let mut tick = every.map(|e| tokio::time::interval_at(tokio::time::Instant::now() + e.mul_f64(g as f64 / gateways as f64), e));
            for b in 0..per_gateway {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let readings = (0..size)
                    .map(|k| {
                        let seq = b * size + k + 1;
                        shared::Reading {
                            seq: shared::Seq(seq),
                            sensor: format!("s{g}-{}", k % 100).into(),
                            metric: format!("m{}", k / 100).into(),
                            ts_ms: t0 + seq as i64,
                            value: (k % 97) as f64,
                            quality: Quality::Good,
                        }
                    })
                    .collect();
                let bytes = shared::Batch::new(gw.clone(), 1, readings).encode();
                client.publish(shared::topics::up(&gw), rumqttc::QoS::AtLeastOnce, false, bytes).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let want = per_gateway * size * gateways as u64;
    until("ingest", Duration::from_millis(5), || c.counters.stored.load(Relaxed), || want).await?;
    Ok(want)
}
