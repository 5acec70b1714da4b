//! The collector's time-series store, behind `Store` so the engine can change
//! without touching ingest or the API (it already did: sled to redb, see
//! `redb_store`).

pub mod block;
mod keys;
pub mod lifecycle;
mod redb_store;
pub mod settings;

pub use redb_store::{ClosedHour, ImportError, RedbStore, StoreOptions, DEFAULT_CACHE_BYTES};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shared::{GatewayId, Metric, Reading, SensorId};

/// How long after an hour ends its samples are packed: readings arriving
/// this late (a slow batch) still land as plain samples first.
pub const PACK_AFTER_MS: i64 = 5 * 60_000;

/// One gateway's sequence of seqs: its outbox epoch (0 before epochs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqSpace {
    pub gateway: GatewayId,
    pub epoch: u64,
}

impl SeqSpace {
    pub fn new(gateway: impl Into<GatewayId>, epoch: u64) -> SeqSpace {
        SeqSpace { gateway: gateway.into(), epoch }
    }
}

impl std::fmt::Display for SeqSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (epoch {})", self.gateway, self.epoch)
    }
}

/// Delivery progress of one sequence, stored atomically with the readings it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Every `seq` up to here is stored (or was reported gone by the agent).
    pub contiguous: u64,
    /// Stored seqs above `contiguous`, waiting for the gap below them to fill.
    pub above: Vec<u64>,
    /// When a batch of it was last accepted (0 in progress written before this was kept).
    pub heard_ms: i64,
}

pub use shared::Sample;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {path}: {source}")]
    Engine { path: String, source: redb::Error },
    #[error("store at {path}: {detail}")]
    Corrupt { path: String, detail: String },
    /// Another collector sharing the batch log holds part of what was asked (`cluster::history`).
    #[error("collector `{collector}` holds part of the city's history and did not answer: {detail}")]
    Elsewhere { collector: String, detail: String },
}

/// What one ingest step writes, in one atomic step.
#[derive(Debug, Default, Clone)]
pub struct Write {
    /// Fresh readings, by the gateway that sent them.
    pub batches: Vec<(String, Arc<Vec<Reading>>)>,
    pub progress: Vec<(SeqSpace, Progress)>,
    /// Sequences whose progress an operator reset: their keys are removed.
    pub forget: Vec<SeqSpace>,
}

/// Readings waiting in the forward log for the external sink (InfluxDB).
/// Entries leave the log only when the sink confirms them.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub id: u64,
    pub gateway: String,
    pub readings: Vec<Reading>,
}

/// Resolutions the store keeps: raw samples and two rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    Raw,
    Minute,
    Hour,
}

impl Level {
    pub fn bucket_ms(self) -> i64 {
        match self {
            Level::Raw => 1,
            Level::Minute => 60_000,
            Level::Hour => 3_600_000,
        }
    }

    /// The coarsest resolution that answers a query with this `step` exactly:
    /// a rollup whose buckets tile the step.
    pub fn for_step(step_ms: i64) -> Level {
        if step_ms % Level::Hour.bucket_ms() == 0 {
            Level::Hour
        } else if step_ms % Level::Minute.bucket_ms() == 0 {
            Level::Minute
        } else {
            Level::Raw
        }
    }
}

/// Min, max, sum, count and last of the samples in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    pub start_ms: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u32,
    pub last_ts: i64,
    pub last: f64,
}

impl Rollup {
    pub fn of(start_ms: i64, ts_ms: i64, v: f64) -> Rollup {
        Rollup { start_ms, min: v, max: v, sum: v, count: 1, last_ts: ts_ms, last: v }
    }

    pub fn merge(&mut self, o: &Rollup) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count += o.count;
        if o.last_ts >= self.last_ts {
            self.last_ts = o.last_ts;
            self.last = o.last;
        }
    }

    pub fn value(&self, agg: Agg) -> f64 {
        match agg {
            Agg::Mean => self.sum / self.count as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Last => self.last,
            Agg::Count => self.count as f64,
        }
    }
}

/// How long each resolution of a series is kept; `None` keeps it forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub raw_ms: Option<i64>,
    pub minute_ms: Option<i64>,
    pub hour_ms: Option<i64>,
}

/// What one expiry pass deleted, and how many series it looked at (those
/// with something old enough to go).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub raw: u64,
    pub rollups: u64,
    pub series_visited: u64,
}

pub trait Store: Send + Sync {
    /// Writes readings, their forward-log entries and gateways' progress in one atomic step.
    fn write(&self, w: &Write) -> Result<(), StoreError>;
    /// The oldest forward-log entries, up to about `max_readings` readings (at least one entry).
    fn forward_next(&self, max_readings: usize) -> Result<Vec<Forward>, StoreError>;
    /// Removes forward-log entries up to and including `id`: the sink has them.
    fn forward_done(&self, id: u64) -> Result<(), StoreError>;
    /// Readings in the forward log.
    fn forward_backlog(&self) -> u64;
    /// Makes every completed `write` durable.
    fn sync(&self) -> Result<(), StoreError>;
    fn progress(&self) -> Result<Vec<(SeqSpace, Progress)>, StoreError>;
    /// Samples with `from <= ts_ms <= to`, oldest first, at most `limit`.
    fn query(&self, sensor: &str, metric: &str, from: i64, to: i64, limit: usize) -> Result<Vec<Sample>, StoreError>;
    /// The newest sample of a series.
    fn last(&self, sensor: &str, metric: &str) -> Result<Option<Sample>, StoreError>;
    /// Every (sensor, metric) with data.
    fn series(&self) -> Vec<(SensorId, Metric)>;
    /// The time of a series' oldest sample kept (what `query` over all time
    /// with a limit of 1 gives), without reading it: the engine keeps it in
    /// memory, lowered by writes and raised by `expire`.
    fn first_ts(&self, sensor: &str, metric: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.query(sensor, metric, i64::MIN, i64::MAX, 1)?.first().map(|s| s.ts_ms))
    }
    /// Brings the rollups up to date with every sample written so far;
    /// returns how many minutes were recomputed.
    fn roll_up(&self) -> Result<u64, StoreError>;
    /// Like `roll_up`, for the minutes that ended at or before `until_ms`
    /// only: the upkeep task's pass, which leaves the minutes still being
    /// written to be rolled up once, when they are over, rather than on
    /// every pass (queries roll up what they read themselves).
    fn roll_up_ended(&self, until_ms: i64) -> Result<u64, StoreError> {
        let _ = until_ms;
        self.roll_up()
    }
    /// Like `roll_up`, for one series: what a query of its rollups needs,
    /// without a pass over the whole city's.
    fn roll_up_series(&self, sensor: &str, metric: &str) -> Result<u64, StoreError> {
        let _ = (sensor, metric);
        self.roll_up()
    }
    /// Packs the raw samples of every hour that ended at least `PACK_AFTER_MS`
    /// before `now_ms` into one block per series and hour (samples that arrive
    /// later for such an hour are packed into it on the next call); returns
    /// how many hours were packed. Run after `roll_up`.
    fn pack(&self, now_ms: i64) -> Result<u64, StoreError>;
    /// Rollups of one level with `from <= start_ms <= to`, oldest first.
    fn rollups(&self, sensor: &str, metric: &str, level: Level, from: i64, to: i64) -> Result<Vec<Rollup>, StoreError>;
    /// Deletes what `keep` no longer keeps at `now_ms`; `keep` gets (sensor,
    /// metric) and must answer the same for a series from call to call (the
    /// retention policy is fixed while the collector runs): a series is
    /// looked at again only once something of it is due under that answer.
    fn expire(&self, now_ms: i64, keep: &dyn Fn(&str, &str) -> Keep) -> Result<Expired, StoreError>;
    /// Bytes the store takes on disk.
    fn size_on_disk(&self) -> u64;
    /// Binds each sensor to its gateway (replacing an earlier binding), in
    /// one step; durable with the next `sync`. Ownership of uncatalogued
    /// sensors: kept here so that a restart does not let another gateway
    /// claim a sensor first.
    fn bind(&self, bindings: &[(SensorId, GatewayId)]) -> Result<(), StoreError>;
    /// Every sensor binding.
    fn bindings(&self) -> Result<Vec<(SensorId, GatewayId)>, StoreError>;
}

/// Buckets rollups into `step_ms` windows (a multiple of their own width).
pub fn aggregate_rollups(rollups: &[Rollup], step_ms: i64, agg: Agg) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, Rollup)> = Vec::new();
    for r in rollups {
        let bucket = r.start_ms - r.start_ms.rem_euclid(step_ms);
        match out.last_mut() {
            Some((b, acc)) if *b == bucket => acc.merge(r),
            _ => out.push((bucket, *r)),
        }
    }
    out.into_iter().map(|(b, r)| (b, r.value(agg))).collect()
}

/// Aggregations of `GET /api/v1/series`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Mean,
    Min,
    Max,
    Last,
    Count,
}

#[derive(Debug, thiserror::Error)]
#[error("agg `{0}` is not one of mean min max last count")]
pub struct UnknownAgg(pub String);

impl Agg {
    pub fn parse(s: &str) -> Result<Agg, UnknownAgg> {
        Ok(match s {
            "mean" => Agg::Mean,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "last" => Agg::Last,
            "count" => Agg::Count,
            _ => return Err(UnknownAgg(s.to_string())),
        })
    }
}

/// Buckets samples into `step_ms`-wide windows aligned to the epoch; each
/// bucket is stamped with its start.
pub fn aggregate(samples: &[Sample], step_ms: i64, agg: Agg) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = Vec::new();
    let mut i = 0;
    while i < samples.len() {
        let bucket = samples[i].ts_ms - samples[i].ts_ms.rem_euclid(step_ms);
        let mut j = i;
        while j < samples.len() && samples[j].ts_ms < bucket + step_ms {
            j += 1;
        }
        let vals = samples[i..j].iter().map(|s| s.value);
        let v = match agg {
            Agg::Mean => vals.sum::<f64>() / (j - i) as f64,
            Agg::Min => vals.fold(f64::INFINITY, f64::min),
            Agg::Max => vals.fold(f64::NEG_INFINITY, f64::max),
            Agg::Last => samples[j - 1].value,
            Agg::Count => (j - i) as f64,
        };
        out.push((bucket, v));
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Quality;

    fn s(ts: i64, v: f64) -> Sample {
        Sample { ts_ms: ts, value: v, quality: Quality::Good }
    }

    #[test]
    fn buckets_align_to_the_step_and_aggregate() {
        let data = [s(1000, 1.0), s(1500, 3.0), s(2100, 10.0), s(5000, 7.0)];
        assert_eq!(aggregate(&data, 1000, Agg::Mean), vec![(1000, 2.0), (2000, 10.0), (5000, 7.0)]);
        assert_eq!(aggregate(&data, 1000, Agg::Min)[0], (1000, 1.0));
        assert_eq!(aggregate(&data, 1000, Agg::Max)[0], (1000, 3.0));
        assert_eq!(aggregate(&data, 1000, Agg::Last)[0], (1000, 3.0));
        assert_eq!(aggregate(&data, 10_000, Agg::Count), vec![(0, 4.0)]);
    }

    #[test]
    fn rollups_aggregate_to_what_raw_samples_give() {
        // Irregular samples over three hours, values that do not sum exactly.
        let data: Vec<Sample> = (0..5000).map(|i| s(i * 2161 + (i % 7) * 13, ((i * 37) % 101) as f64 / 3.0)).collect();
        let mut minutes: Vec<Rollup> = Vec::new();
        for x in &data {
            let start = x.ts_ms - x.ts_ms.rem_euclid(60_000);
            match minutes.last_mut() {
                Some(r) if r.start_ms == start => r.merge(&Rollup::of(start, x.ts_ms, x.value)),
                _ => minutes.push(Rollup::of(start, x.ts_ms, x.value)),
            }
        }
        for step in [60_000, 300_000, 3_600_000] {
            for agg in [Agg::Mean, Agg::Min, Agg::Max, Agg::Last, Agg::Count] {
                let raw = aggregate(&data, step, agg);
                let rolled = aggregate_rollups(&minutes, step, agg);
                assert_eq!(raw.len(), rolled.len());
                for ((t1, v1), (t2, v2)) in raw.iter().zip(&rolled) {
                    assert_eq!(t1, t2);
                    assert!((v1 - v2).abs() < 1e-9, "{agg:?} step {step}: {v1} vs {v2}");
                }
            }
        }
        assert_eq!(Level::for_step(7_200_000), Level::Hour);
        assert_eq!(Level::for_step(300_000), Level::Minute);
        assert_eq!(Level::for_step(90_000), Level::Raw);
    }
}
