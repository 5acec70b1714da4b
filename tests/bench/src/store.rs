//! `store`: the embedded store alone: bytes per reading, write rate, a day's
//! query time, on two datasets: `--realistic` (value models of real
//! sensors, jittered polls) and the 2-decimal series the first figures
//! were measured on.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Result};
use collector::store::block::{self, Packing};
use serde_json::json;
use shared::Quality;

const DAY_S: i64 = 86_400;
const HOUR_MS: i64 = 3_600_000;

/// What a series' values are, as a sensor and the agent make them.
#[derive(Clone, Copy, Debug)]
enum Model {
    /// An f64 rounded to 2 decimals, every second exactly: the dataset of
    /// the first figures (before issue 21).
    TwoDecimal,
    /// A Modbus float register at the sensor's resolution (pm25 at 0.1):
    /// the f32 nearest to k × 10^-decimals, widened to f64 as the agent
    /// does (35.7 arrives as 35.70000076293945). Noise of ±2 steps.
    F32AtResolution { decimals: i32 },
    /// A float register with full f32 precision (a computed value).
    F32Noise,
    /// An int16 register × 0.1, scaled by the agent to the nearest f64
    /// decimal (876 → 87.6), noise of ±1 step.
    ScaledInt,
    /// A counter register (pulses, vehicles): an integer that only grows.
    Counter,
    /// A full-precision f64 (a derived value; a JSON sensor printing 17 digits).
    F64,
    /// A JSON sensor reporting 2 decimals, with jitter like the others.
    JsonTwoDecimals,
}

struct Series {
    sensor: String,
    metric: &'static str,
    model: Model,
    every_s: i64,
    /// The value's level and daily swing.
    level: f64,
    swing: f64,
}

/// A small deterministic generator (splitmix64): runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 40 series: the shares are in the JSON (`series_models`).
fn realistic_series() -> Vec<Series> {
    let mut out = Vec::new();
    let mut add = |n: usize, prefix: &str, metric: &'static str, model: Model, every_s: i64, level: f64, swing: f64| {
        for i in 0..n {
            out.push(Series { sensor: format!("{prefix}-{i:03}"), metric, model, every_s, level: level * (1.0 + i as f64 * 0.07), swing });
        }
    };
    let f32_01 = Model::F32AtResolution { decimals: 1 };
    // Every second: air quality and traffic from Modbus float registers,
    // noise sensors over MQTT JSON, vibration, a computed power factor.
    add(4, "aq", "pm25", f32_01, 1, 35.0, 15.0);
    add(4, "aq", "pm10", f32_01, 1, 50.0, 20.0);
    add(2, "aq", "no2", f32_01, 1, 40.0, 12.0);
    add(3, "tr", "speed", f32_01, 1, 45.0, 20.0);
    add(3, "wt", "flow", f32_01, 1, 120.0, 40.0);
    add(4, "ns", "noise_db", Model::JsonTwoDecimals, 1, 55.0, 10.0);
    add(2, "br", "vibration", Model::F32Noise, 1, 0.02, 0.01);
    add(2, "pw", "power_factor", Model::F64, 1, 0.93, 0.03);
    // Every 10 s: water levels (float, 0.01 m), temperature and humidity
    // (int16 × 0.1), counters, barometric pressure (float).
    add(4, "wl", "level", Model::F32AtResolution { decimals: 2 }, 10, 2.4, 0.6);
    add(4, "wx", "temperature", Model::ScaledInt, 10, 18.0, 6.0);
    add(2, "wx", "humidity", Model::ScaledInt, 10, 60.0, 15.0);
    add(4, "ct", "vehicles", Model::Counter, 10, 0.0, 0.0);
    add(2, "wx", "pressure", Model::F32Noise, 10, 1013.0, 4.0);
    out
}

fn two_decimal(series: usize) -> Vec<Series> {
    (0..series).map(|s| Series { sensor: format!("aq-{s:03}"), metric: "pm25", model: Model::TwoDecimal, every_s: 1, level: 20.0, swing: 5.0 }).collect()
}

/// The series' value at second `sec`; `counter` is the series' running count.
fn value(s: &Series, idx: usize, sec: i64, rng: &mut Rng, counter: &mut f64) -> f64 {
    let daily = s.level + s.swing * ((sec as f64) / DAY_S as f64 * std::f64::consts::TAU + idx as f64).sin();
    match s.model {
        Model::TwoDecimal => {
            let v = 20.0 + ((sec as f64) / 600.0).sin() * 5.0 + ((sec * 7 + idx as i64) % 13) as f64 * 0.01;
            (v * 100.0).round() / 100.0
        }
        Model::F32AtResolution { decimals } => {
            let steps = 10f64.powi(decimals);
            let k = (daily * steps).round() as i64 + rng.int(-2, 2);
            (k as f32 / steps as f32) as f64
        }
        Model::F32Noise => (daily + s.swing * 0.05 * (rng.unit() - 0.5)) as f32 as f64,
        Model::ScaledInt => ((daily * 10.0).round() as i64 + rng.int(-1, 1)) as f64 / 10.0,
        Model::Counter => {
            // Traffic by day and night: 0 to ~12 vehicles per 10 s.
            let rate = 6.0 + 5.0 * ((sec as f64) / DAY_S as f64 * std::f64::consts::TAU).sin();
            *counter += (rate * rng.unit() * 2.0).floor();
            *counter
        }
        Model::F64 => daily + 0.001 * (rng.unit() - 0.5),
        Model::JsonTwoDecimals => ((daily + rng.unit() - 0.5) * 100.0).round() / 100.0,
    }
}

/// When a poll's reading is stamped: on the interval grid plus the answer's
/// latency (0-8 ms, 1 in 100 slower up to 200 ms); 1 in 2,000 polls missed.
fn stamp(model: Model, grid_ms: i64, rng: &mut Rng) -> Option<i64> {
    if let Model::TwoDecimal = model {
        return Some(grid_ms);
    }
    if rng.int(0, 1999) == 0 {
        return None;
    }
    Some(grid_ms + if rng.int(0, 99) == 0 { rng.int(9, 200) } else { rng.int(0, 8) })
}

fn model_name(m: Model) -> String {
    match m {
        Model::F32AtResolution { decimals } => format!("f32 at 0.{}1", "0".repeat(decimals as usize - 1)),
        other => format!("{other:?}"),
    }
}

/// Runs the scenario: `realistic` the value models of real sensors, else
/// the 2-decimal series; `quick` 20 series (the first 20 of the realistic
/// set) for one day.
pub(crate) fn scenario(quick: bool, realistic: bool) -> Result<serde_json::Value> {
    let mut series = if realistic { realistic_series() } else { two_decimal(40) };
    let days = if quick { 1 } else { 3 };
    if quick {
        series.truncate(20);
    }
    store(series, days, if realistic { "realistic" } else { "2-decimal" })
}

/// The top of the hour at city scale (`store --top-of-hour N`): N series
/// with 10 samples each in one hour (a sample every 6 min, 2-decimal
/// values), written in batches of 1,000 readings with one sync each; then
/// that hour rolled up and packed, as the lifecycle task does once it is
/// over, each timed.
pub(crate) fn top_of_hour(n_series: u64) -> Result<serde_json::Value> {
    use collector::store::{RedbStore, Store, Write};
    let dir = tempfile::tempdir()?;
    let st = RedbStore::open(dir.path())?;
    // The hour now under way, as at a city's top of the hour: the store
    // keeps the rollups of such an hour as it writes it.
    let t0 = shared::now_ms() / HOUR_MS * HOUR_MS;
    let start = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    let mut n = 0u64;
    for i in 0..10i64 {
        for s in 0..n_series {
            n += 1;
            let value = ((s as i64 * 37 + i * 11) % 5000) as f64 / 100.0;
            batch.push(shared::Reading {
                seq: shared::Seq(n),
                sensor: format!("s-{s:07}").into(),
                metric: "pm25".into(),
                ts_ms: t0 + i * 360_000 + (s % 1000) as i64,
                value,
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
    let write_s = start.elapsed().as_secs_f64();
    let t = Instant::now();
    st.roll_up_ended(t0 + HOUR_MS)?;
    let roll_up_s = t.elapsed().as_secs_f64();
    let in_use_before = st.bytes_in_use()?;
    let t = Instant::now();
    let packed = st.pack(t0 + HOUR_MS + collector::store::PACK_AFTER_MS)?;
    let pack_s = t.elapsed().as_secs_f64();
    let in_use = st.bytes_in_use()?;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "scenario": "store-top-of-hour", "series": n_series, "readings": n, "settings": "StoreOptions::default(), 10 samples per series in the hour, batches of 1,000 readings with one sync each",
        "write_readings_per_s": (n as f64 / write_s).round(), "roll_up_s": r2(roll_up_s), "pack_s": r2(pack_s), "hours_packed": packed,
        "pack_us_per_series": r2(pack_s * 1e6 / n_series as f64),
        "bytes_in_use_before_pack": in_use_before, "bytes_in_use_after_pack": in_use, "bytes_in_use_per_reading_after_pack": r2(in_use as f64 / n as f64)
    }))
}

/// The embedded store on its own: `series` written for `days` as ingest
/// writes them (batches of 1,000 readings, one sync each), with upkeep as the
/// lifecycle task does it (every 10 s the minutes over for 15 s rolled up
/// and the hours over for 5 min packed; its time timed apart), with shipped defaults
/// (`StoreOptions::default()`, pack 5 min after the hour). Bytes per reading:
/// over all days; past the first day as the file's growth per reading (the
/// steady state: the first day also pays for file space an hour of unpacked
/// samples needs, reused every hour after); the pages in use in the live
/// file (redb's count: apart from the steps the file grows in, by
/// doubling); the file after redb's
/// compaction per reading; and the packed blocks alone. Query times: one
/// 1 s series' day raw, with a 1-minute step from the rollups, and the same
/// step computed from raw samples.
fn store(series: Vec<Series>, days: i64, dataset: &str) -> Result<serde_json::Value> {
    use collector::store::{aggregate, aggregate_rollups, Agg, Level, RedbStore, Store, Write};
    let dir = tempfile::tempdir()?;
    let mut st = RedbStore::open(dir.path())?;
    // Midnight UTC: the days below start on day boundaries.
    let t0 = 1_700_006_400_000i64;
    let mut rng = Rng(21);
    let mut counters = vec![0.0; series.len()];
    let start = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    let mut n = 0u64;
    let mut upkeep_secs = 0.0;
    let mut after_day_1 = (0u64, 0u64);
    let flush = |st: &RedbStore, batch: Vec<shared::Reading>| -> Result<()> {
        st.write(&Write { batches: vec![("gw-bench".into(), std::sync::Arc::new(batch))], progress: vec![], forget: vec![] })?;
        st.sync()?;
        Ok(())
    };
    for sec in 0..DAY_S * days {
        // As the lifecycle task does (`store::lifecycle::run`).
        if sec > 0 && sec % 10 == 0 {
            let (t, now) = (Instant::now(), t0 + sec * 1000);
            st.roll_up_ended(now - 15_000)?;
            st.pack(now)?;
            upkeep_secs += t.elapsed().as_secs_f64();
        }
        if sec == DAY_S {
            after_day_1 = (st.size_on_disk(), n);
        }
        for (i, s) in series.iter().enumerate() {
            if sec % s.every_s != 0 {
                continue;
            }
            let v = value(s, i, sec, &mut rng, &mut counters[i]);
            let Some(ts_ms) = stamp(s.model, t0 + sec * 1000, &mut rng) else { continue };
            n += 1;
            batch.push(shared::Reading { seq: shared::Seq(n), sensor: s.sensor.clone().into(), metric: s.metric.into(), ts_ms, value: v, quality: Quality::Good });
            if batch.len() == 1000 {
                flush(&st, std::mem::take(&mut batch))?;
            }
        }
    }
    flush(&st, batch)?;
    let write_secs = start.elapsed().as_secs_f64();
    let t = Instant::now();
    st.roll_up()?;
    st.pack(t0 + days * DAY_S * 1000 + collector::store::PACK_AFTER_MS)?;
    let last_upkeep_secs = t.elapsed().as_secs_f64();
    let bytes = st.size_on_disk();
    let in_use = st.bytes_in_use()?;

    // Query one 1 s series' first day.
    let (q_sensor, q_metric) = (&series[0].sensor, series[0].metric);
    let day_end = t0 + DAY_S * 1000 - 1;
    let t = Instant::now();
    let raw = st.query(q_sensor, q_metric, t0, day_end, usize::MAX)?;
    let raw_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let minutes = aggregate_rollups(&st.rollups(q_sensor, q_metric, Level::Minute, t0, day_end)?, 60_000, Agg::Mean);
    let rollup_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let from_raw = aggregate(&st.query(q_sensor, q_metric, t0, day_end, usize::MAX)?, 60_000, Agg::Mean);
    let from_raw_ms = t.elapsed().as_secs_f64() * 1000.0;
    if (raw.len() as i64) < DAY_S * 99 / 100 || minutes.len() != 1440 || from_raw.len() != 1440 {
        bail!("store bench read back {} samples, {} and {} minutes", raw.len(), minutes.len(), from_raw.len());
    }

    // The blocks alone: each hour of each series encoded as `pack` did (the
    // same samples give the same bytes), with the packing its values took;
    // and what the rollups' keys and values take (minute rollups packed per
    // hour, hour rollups one entry each) before redb's own overhead.
    let mut block_bytes = 0u64;
    let mut rollup_bytes = 0u64;
    let mut packings: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_model: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for s in &series {
        let mut series_bytes = 0u64;
        let mut series_readings = 0u64;
        for h in 0..days * 24 {
            let from = t0 + h * HOUR_MS;
            let samples = st.query(&s.sensor, s.metric, from, from + HOUR_MS - 1, usize::MAX)?;
            if samples.is_empty() {
                continue;
            }
            let b = block::encode(from, &samples);
            series_bytes += b.len() as u64;
            series_readings += samples.len() as u64;
            *packings.entry(format!("{:?}", block::packing(from, &b).unwrap_or(Packing::Raw))).or_default() += 1;
        }
        for h in 0..days * 24 {
            let from = t0 + h * HOUR_MS;
            let minutes = st.rollups(&s.sensor, s.metric, Level::Minute, from, from + HOUR_MS - 1)?;
            if !minutes.is_empty() {
                // As `pack` stores them: one entry per hour (13-byte key).
                rollup_bytes += 13 + block::rollups::encode(from, &minutes).len() as u64;
            }
        }
        // Hour rollups stay one entry each: 13-byte key, 44-byte value.
        rollup_bytes += 57 * st.rollups(&s.sensor, s.metric, Level::Hour, t0, t0 + days * DAY_S * 1000)?.len() as u64;
        block_bytes += series_bytes;
        let e = per_model.entry(format!("{} every {} s", model_name(s.model), s.every_s)).or_default();
        *e = (e.0 + 1, e.1 + series_bytes, e.2 + series_readings);
    }
    st.compact()?;
    let compacted = st.size_on_disk();

    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let models: Vec<serde_json::Value> = per_model
        .iter()
        .map(|(m, (count, b, r))| json!({"model": m, "series": count, "share": r2(*count as f64 / series.len() as f64), "readings": r, "block_bytes_per_reading": r3(*b as f64 / *r as f64)}))
        .collect();
    Ok(json!({
        "scenario": "store", "dataset": dataset, "engine": "redb", "settings": "StoreOptions::default(), pack 5 min after the hour, batches of 1,000 readings with one sync each",
        "series": series.len(), "days": days, "readings": n,
        "write_readings_per_s": (n as f64 / write_secs).round(), "upkeep_while_writing_s": r2(upkeep_secs), "upkeep_per_reading_us": r3(upkeep_secs * 1e6 / n as f64),
        "write_without_upkeep_readings_per_s": (n as f64 / (write_secs - upkeep_secs)).round(), "last_roll_up_and_pack_s": r2(last_upkeep_secs),
        "bytes_on_disk": bytes, "bytes_per_reading": r2(bytes as f64 / n as f64),
        "bytes_per_reading_after_day_1": if days > 1 { json!(r2((bytes - after_day_1.0) as f64 / (n - after_day_1.1) as f64)) } else { json!(null) },
        "bytes_in_use": in_use, "bytes_in_use_per_reading": r2(in_use as f64 / n as f64),
        "bytes_after_compaction": compacted, "bytes_per_reading_after_compaction": r2(compacted as f64 / n as f64),
        "block_bytes": block_bytes, "block_bytes_per_reading": r3(block_bytes as f64 / n as f64),
        "rollup_key_value_bytes_per_reading": r3(rollup_bytes as f64 / n as f64),
        "block_packings": packings, "series_models": models,
        "query_series": format!("{q_sensor}/{q_metric}"), "day_raw_query_ms": r2(raw_ms), "day_1m_step_from_rollups_ms": r2(rollup_ms), "day_1m_step_from_raw_ms": r2(from_raw_ms)
    }))
}
