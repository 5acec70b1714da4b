//! Reading: raw samples (plain and packed merged), the last sample, rollups.

use shared::{Metric, SensorId};

use super::super::keys;
use super::super::{Level, Rollup, Sample, StoreError};
use super::{RedbStore, HOUR};

impl RedbStore {
    pub(super) fn read_range(&self, sensor: &str, metric: &str, from: i64, to: i64, limit: usize) -> Result<Vec<Sample>, StoreError> {
        let Some(id) = self.id(sensor, metric) else { return Ok(Vec::new()) };
        if from > to {
            return Ok(Vec::new());
        }
        // A day at a time, so a long range asked for a few samples reads a few blocks.
        const WINDOW: i64 = 24 * HOUR;
        self.read(|t| {
            let mut out = Vec::new();
            let mut start = from;
            while out.len() < limit {
                // Straight to the next data: ranges are often open-ended.
                match self.next_data(t, id, start)? {
                    Some(ts) if ts <= to => start = start.max(ts),
                    _ => break,
                }
                let end = start.saturating_add(WINDOW - 1).min(to);
                out.extend(self.samples(t, id, start, end)?);
                if end == to {
                    break;
                }
                start = end + 1;
            }
            out.truncate(limit);
            Ok(out)
        })
    }

    pub(super) fn read_last(&self, sensor: &str, metric: &str) -> Result<Option<Sample>, StoreError> {
        let Some(id) = self.id(sensor, metric) else { return Ok(None) };
        self.read(|t| {
            let raw = match t.range::<&[u8]>(&keys::point(id, i64::MIN)[..]..=&keys::point(id, i64::MAX)[..]).map_err(self.err())?.next_back() {
                Some(item) => {
                    let (k, v) = item.map_err(self.err())?;
                    keys::sample(k.value(), v.value())
                }
                None => None,
            };
            let packed = match t.range::<&[u8]>(&keys::block(id, i64::MIN)[..]..=&keys::block(id, i64::MAX)[..]).map_err(self.err())?.next_back() {
                Some(item) => {
                    let (k, _) = item.map_err(self.err())?;
                    let hour = keys::parse_timed(k.value()).map(|(_, h)| h).unwrap_or(i64::MIN);
                    self.packed(t, id, hour, i64::MAX)?.pop()
                }
                None => None,
            };
            Ok(match (raw, packed) {
                (Some(r), Some(p)) => Some(if p.ts_ms > r.ts_ms { p } else { r }),
                (r, p) => r.or(p),
            })
        })
    }

    pub(super) fn list_series(&self) -> Vec<(SensorId, Metric)> {
        let mut v: Vec<_> = self.series.lock().unwrap().ids.keys().cloned().collect();
        v.sort();
        v
    }

    pub(super) fn read_rollups(&self, sensor: &str, metric: &str, level: Level, from: i64, to: i64) -> Result<Vec<Rollup>, StoreError> {
        let Some(id) = self.id(sensor, metric) else { return Ok(Vec::new()) };
        if from > to || level == Level::Raw {
            return Ok(Vec::new());
        }
        self.read(|t| {
            if level == Level::Minute {
                return self.minute_rollups(t, id, from, to);
            }
            let mut out = Vec::new();
            for item in t.range::<&[u8]>(&keys::level(level, id, from)[..]..=&keys::level(level, id, to)[..]).map_err(self.err())? {
                let (k, v) = item.map_err(self.err())?;
                out.extend(keys::rollup(k.value(), v.value()));
            }
            Ok(out)
        })
    }

    pub(super) fn file_size(&self) -> u64 {
        std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0)
    }
}
