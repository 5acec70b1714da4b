//! `store`: the embedded store alone: bytes per reading, write rate, a day's
//! query time.

use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::json;
use shared::Quality;

/// The embedded store on its own: `series` series of one day at 1 s
/// resolution written as ingest writes them (batches of 1,000, one sync
/// each), rolled up and packed hour by hour as the lifecycle task does.
/// Bytes per reading are given over all `days` (which includes the file
/// space for an hour of unpacked samples, reused every hour after) and, past
/// the first day, as the file's growth per reading: the steady state. Figures: write rate, bytes on disk per reading, and
/// the time to read one series' day raw, with a 1-minute step from the
/// rollups, and with a 1-minute step computed from the raw samples.
pub(crate) fn store(series: usize, days: i64) -> Result<serde_json::Value> {
    use collector::store::{aggregate, aggregate_rollups, Agg, Level, RedbStore, Store, Write};
    let dir = tempfile::tempdir()?;
    let st = RedbStore::open(dir.path())?;
    let day = 86_400i64;
    // Midnight UTC: the days below start on day boundaries.
    let t0 = 1_700_006_400_000i64;
    let start = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    let mut n = 0u64;
    let mut pack_secs = 0.0;
    let mut after_day_1 = (0u64, 0u64);
    for sec in 0..day * days {
        // As the lifecycle task does: each hour packed once it has closed.
        if sec > 0 && sec % 3600 == 0 {
            let t = Instant::now();
            st.roll_up()?;
            st.pack(t0 + sec * 1000 + collector::store::PACK_AFTER_MS)?;
            pack_secs += t.elapsed().as_secs_f64();
            if sec == day {
                after_day_1 = (st.size_on_disk(), n);
            }
        }
        for s in 0..series {
            n += 1;
            // A slowly varying value with sensor noise, as a real gauge gives.
            let v = 20.0 + ((sec as f64) / 600.0).sin() * 5.0 + ((sec * 7 + s as i64) % 13) as f64 * 0.01;
            batch.push(shared::Reading {
                seq: shared::Seq(n),
                sensor: format!("aq-{s:03}").into(),
                metric: "pm25".into(),
                ts_ms: t0 + sec * 1000,
                value: (v * 100.0).round() / 100.0,
                quality: Quality::Good,
            });
            if batch.len() == 1000 {
                st.write(&Write { batches: vec![("gw-bench".into(), std::sync::Arc::new(std::mem::take(&mut batch)))], progress: vec![], forget: vec![] })?;
                st.sync()?;
            }
        }
    }
    st.write(&Write { batches: vec![("gw-bench".into(), std::sync::Arc::new(batch))], progress: vec![], forget: vec![] })?;
    st.sync()?;
    let write_secs = start.elapsed().as_secs_f64();
    let t = Instant::now();
    st.roll_up()?;
    st.pack(t0 + days * day * 1000 + collector::store::PACK_AFTER_MS)?;
    let rollup_secs = t.elapsed().as_secs_f64() + pack_secs;
    let bytes = st.size_on_disk();
    let t = Instant::now();
    let raw = st.query("aq-007", "pm25", t0, t0 + day * 1000 - 1, usize::MAX)?;
    let raw_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let minutes = aggregate_rollups(&st.rollups("aq-007", "pm25", Level::Minute, t0, t0 + day * 1000 - 1)?, 60_000, Agg::Mean);
    let rollup_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let from_raw = aggregate(&st.query("aq-007", "pm25", t0, t0 + day * 1000 - 1, usize::MAX)?, 60_000, Agg::Mean);
    let from_raw_ms = t.elapsed().as_secs_f64() * 1000.0;
    if raw.len() as i64 != day || minutes.len() != 1440 || from_raw.len() != 1440 {
        bail!("store bench read back {} samples, {} and {} minutes", raw.len(), minutes.len(), from_raw.len());
    }
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({"scenario": "store", "engine": "redb", "series": series, "readings": n, "write_readings_per_s": (n as f64 / write_secs).round(),
              "rollup_and_pack_s": r2(rollup_secs), "bytes_on_disk": bytes, "bytes_per_reading": r2(bytes as f64 / n as f64),
              "days": days, "bytes_per_reading_after_day_1": if days > 1 { json!(r2((bytes - after_day_1.0) as f64 / (n - after_day_1.1) as f64)) } else { json!(null) },
              "day_raw_query_ms": r2(raw_ms), "day_1m_step_from_rollups_ms": r2(rollup_ms), "day_1m_step_from_raw_ms": r2(from_raw_ms)}))
}
