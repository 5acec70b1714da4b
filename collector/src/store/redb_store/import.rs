//! Importing history: whole hours of a series that are already over (an
//! archive moved from another system, a backfill, a benchmark's day of
//! data), written straight as what the store keeps for an hour once it has
//! been rolled up and packed: its block of samples (`C`), its packed minute
//! rollups (`R`) and its hour rollup (`H`). Passing each sample through the
//! B-tree as a plain entry first, then rolling up and packing, comes to the
//! same bytes at a small fraction of the speed (tests below compare the two
//! stores key by key).
//!
//! An hour that already holds anything of the series is refused, not
//! merged: importing is for history the store has not seen. Samples that
//! arrive later for an imported hour are ordinary writes, rolled up and
//! packed into it like late samples of any packed hour. Imported readings do
//! not go to the forward log: the external sink is fed live readings.

use std::collections::HashSet;

use redb::{Durability, ReadableTable};
use shared::{Metric, SensorId};

use super::super::{block, keys};
use super::super::{Level, Rollup, Sample, StoreError};
use super::stream::{self, Kind};
use super::{hour_of, latest_per_time, merge_into, RedbStore, HOUR, TABLE};

/// One series' samples over one hour, for `RedbStore::import_history`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedHour {
    pub sensor: SensorId,
    pub metric: Metric,
    /// The hour's start, epoch ms: a whole hour.
    pub hour_ms: i64,
    /// Every sample of the hour, in any order; at equal times the later one
    /// wins, as with writes.
    pub samples: Vec<Sample>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("importing {sensor}/{metric} at hour {hour_ms}: {reason}")]
    Refused { sensor: SensorId, metric: Metric, hour_ms: i64, reason: String },
    #[error("importing history: this store does not keep series (store.keep_series is off)")]
    NotKept,
}

/// What one hour becomes on disk, encoded before the transaction.
struct Packed {
    block: Vec<u8>,
    minutes: Vec<u8>,
    hour: Rollup,
    first_ts: i64,
    samples: u64,
}

/// The hour's samples as `roll_up` and `pack` would store them: sorted,
/// one per time (the later given wins), rolled up minute by minute and the
/// minutes into the hour, in time order so sums come out bit for bit.
fn pack_hour(h: &ClosedHour) -> Packed {
    let one_per_time = latest_per_time(h.samples.clone());
    let minute = Level::Minute.bucket_ms();
    let mut minutes: Vec<Rollup> = Vec::new();
    for s in &one_per_time {
        let start = s.ts_ms - s.ts_ms.rem_euclid(minute);
        match minutes.last_mut() {
            Some(r) if r.start_ms == start => r.merge(&Rollup::of(start, s.ts_ms, s.value)),
            _ => minutes.push(Rollup::of(start, s.ts_ms, s.value)),
        }
    }
    let mut hour = None;
    for r in &minutes {
        merge_into(&mut hour, Rollup { start_ms: h.hour_ms, ..*r });
    }
    Packed {
        block: block::encode(h.hour_ms, &one_per_time),
        minutes: block::rollups::encode(h.hour_ms, &minutes),
        hour: hour.expect("an hour with samples has a rollup"),
        first_ts: one_per_time[0].ts_ms,
        samples: one_per_time.len() as u64,
    }
}

impl RedbStore {
    /// Imports whole hours of history in one transaction, durable when it
    /// returns: each series' hour lands as it would once written sample by
    /// sample, rolled up and packed. Refused as a whole, nothing written,
    /// when an hour does not start on the hour, holds a sample outside it,
    /// comes twice, or already holds anything of its series. Hours without
    /// samples are skipped. Returns the samples imported (one per time).
    pub fn import_history(&self, hours: &[ClosedHour]) -> Result<u64, ImportError> {
        if !self.options.keep_series {
            return Err(ImportError::NotKept);
        }
        let refuse = |h: &ClosedHour, reason: String| ImportError::Refused { sensor: h.sensor.clone(), metric: h.metric.clone(), hour_ms: h.hour_ms, reason };
        let mut seen = HashSet::new();
        for h in hours {
            if h.hour_ms.rem_euclid(HOUR) != 0 {
                return Err(refuse(h, "hour_ms is not the start of an hour".into()));
            }
            if let Some(s) = h.samples.iter().find(|s| hour_of(s.ts_ms) != h.hour_ms) {
                return Err(refuse(h, format!("sample at {} is outside the hour", s.ts_ms)));
            }
            if !seen.insert((&h.sensor, &h.metric, h.hour_ms)) {
                return Err(refuse(h, "the hour is given twice".into()));
            }
        }
        // Encoding is most of the work: done before any lock is taken.
        let packed: Vec<(&ClosedHour, Packed)> = hours.iter().filter(|h| !h.samples.is_empty()).map(|h| (h, pack_hour(h))).collect();

        // An hour holding open samples is refused like one holding chunks.
        self.settle()?;
        // Writers wait, as for any write: ids and oldest times change under this lock.
        let mut index = self.series.lock().unwrap();
        let mut added: Vec<(SensorId, Metric)> = Vec::new();
        let mut lowered: Vec<(u32, i64)> = Vec::new();
        let mut imported = Vec::new();
        let done = (|| -> Result<u64, ImportError> {
            let mut txn = self.db.begin_write().map_err(self.err())?;
            txn.set_durability(Durability::Immediate).map_err(self.err())?;
            let mut t = txn.open_table(TABLE).map_err(self.err())?;
            let mut n = 0;
            for (h, p) in &packed {
                let id = index.id_or_register(&mut t, &h.sensor, &h.metric, &mut added).map_err(self.err())?;
                let hr = h.hour_ms;
                let holds = |lo: &[u8], hi: &[u8]| -> Result<bool, StoreError> { Ok(t.range::<&[u8]>(lo..hi).map_err(self.err())?.next().is_some()) };
                let held = [
                    ("plain samples", holds(&keys::point(id, hr)[..], &keys::point(id, hr + HOUR)[..])?),
                    // Chunks are only ever in an hour marked unpacked.
                    ("plain samples", holds(&keys::unpacked(id, hr)[..], &keys::unpacked(id, hr + 1)[..])?),
                    ("a packed block", holds(&keys::block(id, hr)[..], &keys::block(id, hr + 1)[..])?),
                    ("minute rollups", holds(&keys::level(Level::Minute, id, hr)[..], &keys::level(Level::Minute, id, hr + HOUR)[..])?),
                    ("packed minute rollups", holds(&keys::minute_block(id, hr)[..], &keys::minute_block(id, hr + 1)[..])?),
                    ("an hour rollup", holds(&keys::level(Level::Hour, id, hr)[..], &keys::level(Level::Hour, id, hr + 1)[..])?),
                ];
                if let Some((what, _)) = held.iter().find(|(_, held)| *held) {
                    return Err(refuse(h, format!("the store already holds {what} of this series in this hour")));
                }
                stream::put(&mut t, &self.file, Kind::Samples, id, hr, &p.block)?;
                stream::put(&mut t, &self.file, Kind::Minutes, id, hr, &p.minutes)?;
                t.insert(&keys::level(Level::Hour, id, hr)[..], &keys::encode_rollup(&p.hour)[..]).map_err(self.err())?;
                if index.first(id).is_none_or(|f| p.first_ts < f) {
                    lowered.push((id, index.set_first(id, Some(p.first_ts))));
                }
                n += p.samples;
                imported.push((id, hr));
            }
            drop(t);
            // Returning early above drops the transaction uncommitted: nothing of it is written.
            txn.commit().map_err(self.err())?;
            Ok(n)
        })();
        match &done {
            // Nothing of the transaction was written: forget what it handed out.
            Err(_) => index.undo(added, lowered),
            Ok(_) => {
                let mut running = self.running.lock().unwrap();
                for (id, hr) in imported {
                    running.written_apart(id, hr);
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::{Store, Write};
    use super::*;
    use redb::ReadableDatabase;
    use shared::{Quality, Reading};

    /// Every key and value in the store, in key order.
    fn dump(st: &RedbStore) -> Vec<(Vec<u8>, Vec<u8>)> {
        st.settle().unwrap();
        let txn = st.db.begin_read().unwrap();
        let t = txn.open_table(super::super::TABLE).unwrap();
        // The next chunk number is how many chunks writes made, not data.
        t.range::<&[u8]>(..).unwrap().map(|e| e.unwrap()).map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).filter(|(k, _)| k != keys::NEXT_CHUNK).collect()
    }

    /// Three series over three hours: irregular times, minutes without
    /// samples, sums that do not add exactly, a NaN (in one hour: it makes
    /// the hour's sum NaN), bad qualities, two
    /// samples at one time, an hour before the epoch, and one series
    /// missing an hour; given out of order.
    fn history() -> Vec<ClosedHour> {
        let series = [("aq-1", "pm25"), ("aq-1", "no2"), ("tr-7", "speed_kmh")];
        let mut out = Vec::new();
        for h in [-HOUR, 5 * HOUR, 6 * HOUR] {
            for (k, (sensor, metric)) in series.iter().enumerate() {
                if k == 2 && h == 5 * HOUR {
                    continue;
                }
                let mut samples: Vec<Sample> = (0..1500i64)
                    .filter(|i| (i / 100) % 4 != 3)
                    .map(|i| Sample {
                        ts_ms: h + i * 2_399 + (i * 7 + k as i64) % 13,
                        value: if i == 77 && k == 0 && h < 0 { f64::NAN } else { ((i * 37 + k as i64) % 101) as f64 / 7.0 + (i as f64).sqrt() * 1e-3 },
                        quality: if i % 97 == 5 { Quality::Bad } else { Quality::Good },
                    })
                    .collect();
                let again = Sample { value: -1.25, ..samples[40] };
                samples.push(again);
                samples.reverse();
                samples.swap(0, 9);
                out.push(ClosedHour { sensor: (*sensor).into(), metric: (*metric).into(), hour_ms: h, samples });
            }
        }
        out
    }

    /// The same hours written sample by sample, in the order given (so at
    /// equal times the later one wins), then rolled up and packed as the
    /// lifecycle task does once they have closed.
    fn written(dir: &std::path::Path, hours: &[ClosedHour]) -> RedbStore {
        let st = RedbStore::open(dir).unwrap();
        let mut seq = 0;
        let readings: Vec<Reading> = hours
            .iter()
            .flat_map(|h| h.samples.iter().map(move |s| (h, s)))
            .map(|(h, s)| {
                seq += 1;
                Reading { seq: shared::Seq(seq), sensor: h.sensor.clone(), metric: h.metric.clone(), ts_ms: s.ts_ms, value: s.value, quality: s.quality }
            })
            .collect();
        st.write(&Write { batches: vec![("gw-1".into(), std::sync::Arc::new(readings))], progress: vec![], forget: vec![] }).unwrap();
        st.roll_up().unwrap();
        st.pack(100 * HOUR).unwrap();
        st
    }

    fn bits(samples: Vec<Sample>) -> Vec<(i64, u64, Quality)> {
        samples.into_iter().map(|s| (s.ts_ms, s.value.to_bits(), s.quality)).collect()
    }

    fn rollup_bits(rollups: Vec<Rollup>) -> Vec<[u64; 7]> {
        rollups.into_iter().map(|r| [r.start_ms as u64, r.min.to_bits(), r.max.to_bits(), r.sum.to_bits(), r.count as u64, r.last_ts as u64, r.last.to_bits()]).collect()
    }

    /// What the API answers of every series, bit for bit.
    fn answers(st: &RedbStore) -> Vec<String> {
        let mut out = vec![format!("{:?}", st.series())];
        for (sensor, metric) in st.series() {
            let q = |from, to, limit| bits(st.query(&sensor, &metric, from, to, limit).unwrap());
            out.push(format!(
                "{:?}",
                (q(i64::MIN, i64::MAX, usize::MAX), q(i64::MIN, i64::MAX, 1), q(5 * HOUR + 600_123, 6 * HOUR + 59_999, 2048), q(-HOUR / 2, 5 * HOUR + 1, 10))
            ));
            out.push(format!("{:?}", (st.first_ts(&sensor, &metric).unwrap(), st.last(&sensor, &metric).unwrap().map(|s| (s.ts_ms, s.value.to_bits(), s.quality)))));
            for level in [Level::Minute, Level::Hour] {
                let all = st.rollups(&sensor, &metric, level, i64::MIN, i64::MAX).unwrap();
                let count: u64 = all.iter().map(|r| r.count as u64).sum();
                out.push(format!("{level:?} {count} {:?} {:?}", rollup_bits(all), rollup_bits(st.rollups(&sensor, &metric, level, 5 * HOUR + 60_000, 6 * HOUR).unwrap())));
            }
        }
        out
    }

    #[test]
    fn imported_hours_are_what_writing_rolling_up_and_packing_them_stores_key_for_key() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let hours = history();
        let by_writes = written(a.path(), &hours);
        let imported = RedbStore::open(b.path()).unwrap();
        let n = imported.import_history(&hours).unwrap();
        assert_eq!(n, hours.iter().map(|h| h.samples.len() as u64 - 1).sum::<u64>(), "one sample per time");
        assert_eq!(dump(&imported), dump(&by_writes));
        assert_eq!(answers(&imported), answers(&by_writes));

        // A late sample for an imported hour is rolled up and packed into it like any other.
        let late = |st: &RedbStore| {
            let r = Reading { seq: shared::Seq(1), sensor: "aq-1".into(), metric: "no2".into(), ts_ms: 5 * HOUR + 3_599_999, value: 4.5, quality: Quality::Good };
            st.write(&Write { batches: vec![("gw-1".into(), std::sync::Arc::new(vec![r]))], progress: vec![], forget: vec![] }).unwrap();
            st.roll_up().unwrap();
            st.pack(100 * HOUR).unwrap();
        };
        late(&by_writes);
        late(&imported);
        assert_eq!(dump(&imported), dump(&by_writes));
        assert_eq!(answers(&imported), answers(&by_writes));

        // And both read back alike after reopening (oldest times found on disk).
        let before = answers(&imported);
        drop((by_writes, imported));
        let (by_writes, imported) = (RedbStore::open(a.path()).unwrap(), RedbStore::open(b.path()).unwrap());
        assert_eq!(answers(&imported), before);
        assert_eq!(answers(&by_writes), before);
    }

    #[test]
    fn an_hour_the_store_already_holds_or_a_sample_outside_its_hour_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let st = RedbStore::open(dir.path()).unwrap();
        let s = |ts_ms| Sample { ts_ms, value: 1.0, quality: Quality::Good };
        let hour = |sensor: &str, h: i64, samples: Vec<Sample>| ClosedHour { sensor: sensor.into(), metric: "pm25".into(), hour_ms: h, samples };
        st.import_history(&[hour("aq-1", 0, vec![s(10)])]).unwrap();
        st.write(&Write {
            batches: vec![(
                "gw-1".into(),
                std::sync::Arc::new(vec![Reading { seq: shared::Seq(1), sensor: "aq-2".into(), metric: "pm25".into(), ts_ms: HOUR + 5, value: 2.0, quality: Quality::Good }]),
            )],
            progress: vec![],
            forget: vec![],
        })
        .unwrap();
        let before = dump(&st);
        for (hours, says) in [
            (vec![hour("aq-3", 2 * HOUR, vec![s(2 * HOUR)]), hour("aq-1", 0, vec![s(20)])], "already holds a packed block"),
            (vec![hour("aq-3", 2 * HOUR, vec![s(2 * HOUR)]), hour("aq-2", HOUR, vec![s(HOUR + 9)])], "already holds plain samples"),
            (vec![hour("aq-3", 2 * HOUR, vec![s(3 * HOUR)])], "outside the hour"),
            (vec![hour("aq-3", 5, vec![s(10)])], "not the start of an hour"),
            (vec![hour("aq-3", 0, vec![s(1)]), hour("aq-3", 0, vec![s(2)])], "given twice"),
        ] {
            let e = st.import_history(&hours).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("pm25"), "{e}");
            assert_eq!(dump(&st), before);
            assert_eq!(st.series().len(), 2, "no series left from a refused import");
            assert_eq!(st.first_ts("aq-3", "pm25").unwrap(), None);
        }
        // After the series is gone from a refused import, the same hours import cleanly.
        assert_eq!(st.import_history(&[hour("aq-3", 2 * HOUR, vec![s(2 * HOUR + 1), s(2 * HOUR)])]).unwrap(), 2);
        assert_eq!(st.first_ts("aq-3", "pm25").unwrap(), Some(2 * HOUR));
    }
}
