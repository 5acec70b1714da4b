//! Upkeep between writes: rollups of dirty minutes, packing closed hours
//! into blocks, and deleting what is past its retention.

use std::collections::HashMap;

use shared::{Metric, SensorId};

use redb::Durability;

use super::super::keys;
use super::super::{block, Expired, Keep, Level, Rollup, Sample, StoreError, PACK_AFTER_MS};
use super::{hour_of, merge_into, oldest, RedbStore, HOUR};

impl RedbStore {
    pub(super) fn roll_up_dirty(&self) -> Result<u64, StoreError> {
        // Writers wait: a minute dirtied now must not lose its mark to this pass.
        let _writes = self.series.lock().unwrap();
        let mut dirty = self.dirty.lock().unwrap();
        if dirty.is_empty() {
            return Ok(0);
        }
        let minute = Level::Minute.bucket_ms();
        self.update(Durability::Immediate, |t| {
            // Each hour's samples read once (block and plain ones), then split by minute.
            let mut hours: HashMap<(u32, i64), Vec<Sample>> = HashMap::new();
            for &(id, start) in dirty.iter() {
                let h = hour_of(start);
                if let std::collections::hash_map::Entry::Vacant(e) = hours.entry((id, h)) {
                    e.insert(self.samples(t, id, h, h + HOUR - 1)?);
                }
                let mut acc = None;
                for s in hours[&(id, h)].iter().filter(|s| (start..start + minute).contains(&s.ts_ms)) {
                    merge_into(&mut acc, Rollup::of(start, s.ts_ms, s.value));
                }
                // No samples: they expired before their rollup was made; keep what there is.
                if let Some(r) = acc {
                    t.insert(&keys::level(Level::Minute, id, start)[..], &keys::encode_rollup(&r)[..]).map_err(self.err())?;
                }
                t.remove(&keys::dirty(id, start)[..]).map_err(self.err())?;
            }
            // The transaction reads its own writes: these minutes are current.
            for (id, h) in hours.into_keys() {
                let mut acc = None;
                for r in self.minute_rollups(t, id, h, h + HOUR - 1)? {
                    merge_into(&mut acc, Rollup { start_ms: h, ..r });
                }
                if let Some(r) = acc {
                    t.insert(&keys::level(Level::Hour, id, h)[..], &keys::encode_rollup(&r)[..]).map_err(self.err())?;
                }
            }
            Ok(())
        })?;
        let n = dirty.len() as u64;
        dirty.clear();
        Ok(n)
    }

    pub(super) fn pack_closed(&self, now_ms: i64) -> Result<u64, StoreError> {
        let cutoff = now_ms.saturating_sub(PACK_AFTER_MS);
        let mut ready: Vec<(u32, i64)> = self.unpacked.lock().unwrap().iter().filter(|(_, h)| h.saturating_add(HOUR) <= cutoff).copied().collect();
        ready.sort_unstable();
        // Bounded transactions, and writers get in between them: at the top of
        // an hour every series has one to pack.
        for group in ready.chunks(256) {
            // Writers wait for this group: a sample written for an hour after
            // its block was made but before its mark is cleared would never be
            // marked again.
            let _writes = self.series.lock().unwrap();
            let mut unpacked = self.unpacked.lock().unwrap();
            self.update(Durability::Immediate, |t| {
                for &(id, h) in group {
                    let samples = self.samples(t, id, h, h + HOUR - 1)?;
                    t.retain_in::<&[u8], _>(&keys::point(id, h)[..]..&keys::point(id, h + HOUR)[..], |_, _| false).map_err(self.err())?;
                    t.retain_in::<&[u8], _>(&keys::chunk(id, h, 0)[..]..=&keys::chunk(id, h, u64::MAX)[..], |_, _| false).map_err(self.err())?;
                    if samples.is_empty() {
                        t.remove(&keys::block(id, h)[..]).map_err(self.err())?;
                    } else {
                        t.insert(&keys::block(id, h)[..], &block::encode(h, &samples)[..]).map_err(self.err())?;
                    }
                    // The hour's minute rollups, made by `roll_up` before this pass, into one entry too.
                    let minutes = self.minute_rollups(t, id, h, h + HOUR - 1)?;
                    t.retain_in::<&[u8], _>(&keys::level(Level::Minute, id, h)[..]..&keys::level(Level::Minute, id, h + HOUR)[..], |_, _| false).map_err(self.err())?;
                    if minutes.is_empty() {
                        t.remove(&keys::minute_block(id, h)[..]).map_err(self.err())?;
                    } else {
                        t.insert(&keys::minute_block(id, h)[..], &block::rollups::encode(h, &minutes)[..]).map_err(self.err())?;
                    }
                    t.remove(&keys::unpacked(id, h)[..]).map_err(self.err())?;
                }
                Ok(())
            })?;
            for key in group {
                unpacked.remove(key);
            }
        }
        Ok(ready.len() as u64)
    }

    pub(super) fn expire_old(&self, now_ms: i64, keep: &dyn Fn(&str, &str) -> Keep) -> Result<Expired, StoreError> {
        let series: Vec<((SensorId, Metric), u32)> = self.series.lock().unwrap().ids.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut done = Expired::default();
        for ((sensor, metric), id) in series {
            let k = keep(&sensor, &metric);
            // A rollup bucket goes once all of it is older than its retention.
            let cutoff = |keep: Option<i64>, width: i64| keep.map(|ms| now_ms.saturating_sub(ms).saturating_sub(width) + 1);
            let (raw, minute, hour) = (k.raw_ms.map(|ms| now_ms.saturating_sub(ms)), cutoff(k.minute_ms, Level::Minute.bucket_ms()), cutoff(k.hour_ms, Level::Hour.bucket_ms()));
            if raw.is_none() && minute.is_none() && hour.is_none() {
                continue;
            }
            // Writers wait: one that lowered the series' oldest time between
            // this pass finding it again and keeping it would be overwritten.
            let mut index = self.series.lock().unwrap();
            let (e, first) = self.update(Durability::Immediate, |t| {
                let mut e = Expired::default();
                let mut first = None;
                if let Some(c) = raw {
                    e.raw += self.delete_before(t, Level::Raw, id, c)?;
                    e.raw += self.expire_chunks(t, id, c)?;
                    e.raw += self.expire_blocks(t, id, c)?;
                    if index.first(id).is_some_and(|f| f < c) {
                        // The transaction reads its own deletions.
                        first = Some(oldest(t, &self.file, id)?);
                    }
                }
                if let Some(c) = minute {
                    e.rollups += self.delete_before(t, Level::Minute, id, c)?;
                    e.rollups += self.expire_minute_blocks(t, id, c)?;
                }
                if let Some(c) = hour {
                    e.rollups += self.delete_before(t, Level::Hour, id, c)?;
                }
                Ok((e, first))
            })?;
            if let Some(first) = first {
                index.set_first(id, first);
            }
            drop(index);
            done.raw += e.raw;
            done.rollups += e.rollups;
        }
        Ok(done)
    }
}
