//! `sink`: points/s the InfluxDB sink sustains into VictoriaMetrics.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::common::*;
use crate::ingest::{load, Gateways};

/// The InfluxDB sink into VictoriaMetrics (Debian's `victoria-metrics`, on
/// loopback): `total` readings arrive from 10 gateways; figures are the
/// collector's ingest rate with the sink on, and the points/s the sink
/// sustains into the server until every point is confirmed.
pub(crate) async fn sink(total: u64) -> Result<serde_json::Value> {
    let vm_dir = tempfile::tempdir()?;
    let port = support::free_port();
    let vm = support::Victoria::start(vm_dir.path(), port)?;
    let (_dir, c) = collector_with(&format!("[influxdb]\nurl = \"http://127.0.0.1:{port}\"\norg = \"city\"\nbucket = \"bench\"\n")).await?;
    let start = Instant::now();
    let want = load(&c, Gateways::connect(&c, 10, None).await?, total, None, None).await?;
    let ingest_secs = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    while scrape(c.http_addr, "citysense_influx_points_written_total").await? < want as f64 {
        if Instant::now() > deadline {
            bail!("sink stalled");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sink_secs = start.elapsed().as_secs_f64();
    let errors = scrape(c.http_addr, "citysense_influx_write_errors_total").await?;
    c.shutdown().await;
    drop(vm);
    Ok(json!({"scenario": "sink", "target": "victoria-metrics /api/v2/write", "readings": want,
              "ingest_readings_per_s": (want as f64 / ingest_secs).round(), "sink_points_per_s": (want as f64 / sink_secs).round(),
              "sink_seconds": (sink_secs * 1000.0).round() / 1000.0, "write_errors": errors, "batch_points": 5000}))
}
