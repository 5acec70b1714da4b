//! The collector's time-series store, behind `Store` so the engine can change
//! (sled's on-disk format is not yet stable) without touching ingest or the API.

mod sled_store;

pub use sled_store::{SledStore, StoreOptions};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shared::{Quality, Reading};

/// Per-gateway delivery progress, stored atomically with the readings it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Every `seq` up to here is stored (or was reported gone by the agent).
    pub contiguous: u64,
    /// Stored seqs above `contiguous`, waiting for the gap below them to fill.
    pub above: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub ts_ms: i64,
    pub value: f64,
    pub quality: Quality,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {path}: {source}")]
    Engine { path: String, source: sled::Error },
    #[error("store at {path}: {detail}")]
    Corrupt { path: String, detail: String },
}

/// What one ingest step writes, in one atomic step.
#[derive(Debug, Default, Clone)]
pub struct Write {
    /// Fresh readings, by the gateway that sent them.
    pub batches: Vec<(String, Arc<Vec<Reading>>)>,
    pub progress: Vec<(String, Progress)>,
}

/// Readings waiting in the forward log for the external sink (InfluxDB).
/// Entries leave the log only when the sink confirms them.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub id: u64,
    pub gateway: String,
    pub readings: Vec<Reading>,
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
    fn progress(&self) -> Result<Vec<(String, Progress)>, StoreError>;
    /// Samples with `from <= ts_ms <= to`, oldest first, at most `limit`.
    fn query(&self, sensor: &str, metric: &str, from: i64, to: i64, limit: usize) -> Result<Vec<Sample>, StoreError>;
    /// The newest sample of a series.
    fn last(&self, sensor: &str, metric: &str) -> Result<Option<Sample>, StoreError>;
    /// Every (sensor, metric) with data.
    fn series(&self) -> Vec<(String, String)>;
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

impl Agg {
    pub fn parse(s: &str) -> Result<Agg, String> {
        Ok(match s {
            "mean" => Agg::Mean,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "last" => Agg::Last,
            "count" => Agg::Count,
            _ => return Err(format!("agg `{s}` is not one of mean min max last count")),
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
}
