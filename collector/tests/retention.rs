//! Retention and rollups: with an injected clock, raw samples past their
//! retention are gone, rollups hold the right aggregates, the store stops
//! growing under steady load; through the API, a `step` picks the rollups.

use std::sync::Arc;
use std::time::Duration;

use collector::store::lifecycle::Policy;
use collector::store::settings::{KeepConfig, Lifetime};
use collector::store::{aggregate, Agg, Level, RedbStore, Store, Write};
use shared::{Quality, Reading};
use support::*;

const T0: i64 = 1_700_002_800_000; // a whole hour
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn value(sensor: usize, ts: i64) -> f64 {
    ((ts / 10_000) % 17) as f64 * 0.5 + sensor as f64
}

fn keep(raw: u64, minute: u64, hour: u64) -> KeepConfig {
    let l = |ms: u64| Lifetime(Some(Duration::from_millis(ms)));
    KeepConfig { raw: l(raw), minute: l(minute), hour: l(hour) }
}

/// Ten minutes of 8 sensors reading every 10 s, as ingest writes them.
fn ten_minutes(store: &RedbStore, start: i64, seq: &mut u64) {
    let mut readings = Vec::new();
    for ts in (start..start + 10 * MIN).step_by(10_000) {
        for s in 0..8 {
            *seq += 1;
            readings.push(Reading { seq: shared::Seq(*seq), sensor: format!("aq-{s}").into(), metric: "pm25".into(), ts_ms: ts, value: value(s, ts), quality: Quality::Good });
        }
    }
    store.write(&Write { batches: vec![("gw-1".into(), Arc::new(readings))], progress: vec![], forget: vec![] }).unwrap();
    store.sync().unwrap();
}

#[test]
fn expired_raw_data_is_gone_rollups_stay_right_and_the_store_stops_growing() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let policy = Policy::new(keep(2 * HOUR as u64, 12 * HOUR as u64, 48 * HOUR as u64), vec![], &[]);
    let mut seq = 0;
    let mut sizes = Vec::new();
    // Three simulated days, expiring after every ten minutes of data.
    let ticks = 3 * 24 * 6;
    for tick in 0..ticks {
        let start = T0 + tick * 10 * MIN;
        ten_minutes(&store, start, &mut seq);
        let now = start + 10 * MIN;
        store.roll_up().unwrap();
        store.pack(now).unwrap();
        store.expire(now, &|s, m| policy.keep(s, m)).unwrap();
        sizes.push(store.size_on_disk());
    }
    let now = T0 + ticks * 10 * MIN;

    // Raw: only the last two hours are left.
    let raw = store.query("aq-3", "pm25", i64::MIN, i64::MAX, usize::MAX).unwrap();
    assert_eq!(raw.first().unwrap().ts_ms, now - 2 * HOUR);
    assert_eq!(raw.len() as i64, 2 * HOUR / 10_000);
    // Minute rollups: twelve hours; each the exact aggregate of its six samples.
    let minutes = store.rollups("aq-3", "pm25", Level::Minute, i64::MIN, i64::MAX).unwrap();
    assert_eq!(minutes.len() as i64, 12 * 60);
    assert_eq!(minutes[0].start_ms, now - 12 * HOUR);
    for r in &minutes {
        let vals: Vec<f64> = (0..6).map(|i| value(3, r.start_ms + i * 10_000)).collect();
        assert_eq!(r.count, 6);
        assert_eq!(r.min, vals.iter().cloned().fold(f64::INFINITY, f64::min));
        assert_eq!(r.max, vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        assert!((r.sum - vals.iter().sum::<f64>()).abs() < 1e-9);
        assert_eq!(r.last, vals[5]);
    }
    // Hour rollups: 48 hours of 360 samples each, long after their raw samples went.
    let hours = store.rollups("aq-3", "pm25", Level::Hour, i64::MIN, i64::MAX).unwrap();
    assert_eq!(hours.len(), 48);
    let first = hours[0];
    assert_eq!(first.start_ms, now - 48 * HOUR);
    let samples: Vec<collector::store::Sample> =
        (0..360).map(|i| first.start_ms + i * 10_000).map(|ts| collector::store::Sample { ts_ms: ts, value: value(3, ts), quality: Quality::Good }).collect();
    assert_eq!(aggregate(&samples, HOUR, Agg::Mean)[0].1, first.sum / first.count as f64);
    assert_eq!(aggregate(&samples, HOUR, Agg::Max)[0].1, first.max);

    // Size: once every resolution's retention applies (after 48 h), a steady
    // load keeps the store the size it was.
    let mb = |b: u64| b as f64 / 1e6;
    let day2 = *sizes[(48 * 6) as usize..(60 * 6) as usize].iter().max().unwrap();
    let day3 = *sizes[(60 * 6) as usize..].iter().max().unwrap();
    eprintln!(
        "store size: at 12 h {:.1} MB, 24 h {:.1} MB, 48-60 h max {:.1} MB, 60-72 h max {:.1} MB ({} readings written)",
        mb(sizes[72]),
        mb(sizes[144]),
        mb(day2),
        mb(day3),
        seq
    );
    assert!(day3 as f64 <= day2 as f64 * 1.10, "store kept growing: {:.1} MB then {:.1} MB", mb(day2), mb(day3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reads_rollups_after_raw_samples_expired() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "[store.keep]\nraw = \"1d\"\nminute = \"30d\"\nhour = \"forever\"\n";
    // `collector()` puts the catalogue after [store], so these land in it.
    let c = collector(dir.path(), None, &format!("expire_every = \"1s\"\n{cfg}")).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-r").await;
    let now = shared::now_ms();
    // Two hours of readings every 10 s, three days ago; and the last minute.
    let old = now - 3 * 24 * HOUR;
    let old = old - old.rem_euclid(HOUR);
    let mut rs: Vec<Reading> = (0..720)
        .map(|i| old + i * 10_000)
        .map(|ts| Reading { seq: shared::Seq(0), sensor: "aq-1".into(), metric: "pm25".into(), ts_ms: ts, value: value(1, ts), quality: Quality::Good })
        .collect();
    rs.push(Reading { seq: shared::Seq(0), sensor: "aq-1".into(), metric: "pm25".into(), ts_ms: now, value: 5.0, quality: Quality::Good });
    let last = gw.send(rs).await;
    gw.wait_acked(last, Duration::from_secs(20)).await;
    wait_for("raw samples past retention deleted", Duration::from_secs(20), || async {
        (metric(c.http_addr, "citysense_store_expired_samples_total").await >= 720.0).then_some(())
    })
    .await;
    let raw = get_json(c.http_addr, &format!("/api/v1/series?sensor=aq-1&metric=pm25&from={old}&to={now}")).await;
    assert_eq!(raw["points"].as_array().unwrap().len(), 1, "only the recent raw sample: {raw}");
    for (step, resolution, n) in [("1h", "1h", 2usize), ("10m", "1m", 12), ("1m", "1m", 120)] {
        let q = get_json(c.http_addr, &format!("/api/v1/series?sensor=aq-1&metric=pm25&from={old}&to={}&step={step}&agg=max", old + 2 * HOUR - 1)).await;
        assert_eq!(q["resolution"], resolution, "{q}");
        let points = q["points"].as_array().unwrap();
        assert_eq!(points.len(), n, "{step}: {q}");
        let first_bucket: i64 = match step {
            "1h" => HOUR,
            "10m" => 10 * MIN,
            _ => MIN,
        };
        let want = (0..first_bucket / 10_000).map(|i| value(1, old + i * 10_000)).fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(points[0]["value"].as_f64().unwrap(), want, "{step}");
    }
    let counts = get_json(c.http_addr, &format!("/api/v1/series?sensor=aq-1&metric=pm25&from={old}&to={now}&step=1h&agg=count")).await;
    let total: f64 = counts["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).sum();
    assert_eq!(total, 721.0, "every reading counted once in the hour rollups");
}
