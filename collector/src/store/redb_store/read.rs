//! Reading: raw samples (plain and packed merged), the last sample, rollups.

use shared::{Metric, SensorId};

use super::super::keys;
use super::super::{Level, Rollup, Sample, StoreError};
use super::{chunk_start, chunked, hour_of, End, RedbStore, HOUR, MINUTE};

impl RedbStore {
    pub(super) fn read_range(&self, sensor: &str, metric: &str, from: i64, to: i64, limit: usize) -> Result<Vec<Sample>, StoreError> {
        let Some(id) = self.id(sensor, metric) else { return Ok(Vec::new()) };
        self.settle()?;
        if from > to {
            return Ok(Vec::new());
        }
        // An hour (one block) at a time: a range asked for a few samples (a
        // series' first, a page of 2,048) decodes one or two blocks, not a day's.
        self.read(|t| {
            let mut out = Vec::new();
            let mut start = from;
            while out.len() < limit {
                // Straight to the next data: ranges are often open-ended.
                match self.next_data(t, id, start)? {
                    Some(ts) if ts <= to => start = start.max(ts),
                    _ => break,
                }
                let end = hour_of(start).saturating_add(HOUR - 1).min(to);
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
        self.settle()?;
        self.read(|t| {
            let raw = match t.range::<&[u8]>(&keys::point(id, i64::MIN)[..]..=&keys::point(id, i64::MAX)[..]).map_err(self.err())?.next_back() {
                Some(item) => {
                    let (k, v) = item.map_err(self.err())?;
                    keys::sample(k.value(), v.value())
                }
                None => None,
            };
            let chunk = match chunk_start(t, &self.file, id, i64::MIN, End::Last)? {
                Some(start) => chunked(t, &self.file, id, start, start + MINUTE - 1)?.pop(),
                None => None,
            };
            // A chunk's sample is newer than a `P` one at the same time.
            let raw = match (raw, chunk) {
                (Some(r), Some(c)) => Some(if r.ts_ms > c.ts_ms { r } else { c }),
                (r, c) => r.or(c),
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
        self.settle()?;
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

#[cfg(test)]
mod tests {
    use super::super::super::{Store, Write, PACK_AFTER_MS};
    use super::*;
    use shared::{Quality, Reading};

    #[test]
    fn a_few_samples_from_a_long_packed_range_are_the_first_ones_across_hour_edges() {
        // Reads go an hour (a block) at a time: limits that end inside an
        // hour, ranges that start inside one, and plain samples after the
        // packed ones must give exactly what one long scan would.
        let dir = tempfile::tempdir().unwrap();
        let st = RedbStore::open(dir.path()).unwrap();
        let every = 7_000;
        let all: Vec<i64> = (0..(30 * HOUR / every)).map(|i| 5 * HOUR + 1_234 + i * every).collect();
        let readings: Vec<Reading> = all
            .iter()
            .enumerate()
            .map(|(i, &ts)| Reading { seq: shared::Seq(i as u64 + 1), sensor: "aq-1".into(), metric: "pm25".into(), ts_ms: ts, value: i as f64, quality: Quality::Good })
            .collect();
        st.write(&Write { batches: vec![("gw-1".into(), std::sync::Arc::new(readings))], progress: vec![], forget: vec![] }).unwrap();
        st.roll_up().unwrap();
        // The first 20 hours packed, the rest still plain samples.
        assert_eq!(st.pack(25 * HOUR + PACK_AFTER_MS).unwrap(), 20);
        let ts = |v: Vec<Sample>| v.into_iter().map(|s| s.ts_ms).collect::<Vec<_>>();
        assert_eq!(ts(st.query("aq-1", "pm25", i64::MIN, i64::MAX, 1).unwrap()), all[..1]);
        for (from, n) in [(i64::MIN, 2048), (6 * HOUR + 500, 5), (24 * HOUR + 3_000_000, 2048), (0, usize::MAX)] {
            let want: Vec<i64> = all.iter().copied().filter(|t| *t >= from).take(n).collect();
            assert_eq!(ts(st.query("aq-1", "pm25", from, i64::MAX, n).unwrap()), want, "from {from}, {n}");
        }
        assert_eq!(ts(st.query("aq-1", "pm25", 7 * HOUR, 9 * HOUR - 1, usize::MAX).unwrap()), all.iter().copied().filter(|t| (7 * HOUR..9 * HOUR).contains(t)).collect::<Vec<_>>());
    }
}
