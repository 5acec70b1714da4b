//! The embedded store on redb: one table holding the key spaces of `keys`,
//! so readings, their forward-log entries and the gateway progress they
//! advance commit in one transaction.
//!
//! Ingest commits without fsync (`Durability::None`) and `sync` makes every
//! commit so far durable with one fsync, so a burst of batches costs one.
//! redb was chosen over sled for this store by a test: under steady load
//! with retention, sled's file kept growing (6.8 MB to 9.4 MB over a
//! simulated day, with the live data constant), redb reuses freed pages.
//!
//! Rollups are recomputed from samples in `roll_up` for the minutes marked
//! dirty by writes, not updated on every write: late readings (a gateway's
//! backlog) reach them, and no key is rewritten per batch.
//!
//! Samples land as one `P` entry each (cheap to write, ~80 bytes on disk);
//! `pack` turns each closed hour of a series into one `C` block (`block`),
//! a few bytes per sample. Reads merge both, so a late sample for a packed
//! hour is seen at once and packed into its block on the next pass.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
use shared::{Metric, SensorId};

use super::keys::Key;
use super::{block, keys};
use super::{Expired, Forward, Keep, Level, Progress, Rollup, Sample, Store, StoreError, Write, PACK_AFTER_MS};

const HOUR: i64 = 3_600_000;

fn hour_of(ts_ms: i64) -> i64 {
    ts_ms.saturating_sub(ts_ms.rem_euclid(HOUR))
}

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("citysense");

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Keep the series here; off when only the external sink keeps them
    /// (gateway progress is kept either way: it is what makes dedup work).
    pub keep_series: bool,
    /// Log every stored reading for the external sink.
    pub forward: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { keep_series: true, forward: false }
    }
}

#[derive(Default)]
struct SeriesIndex {
    ids: HashMap<(SensorId, Metric), u32>,
    next: u32,
}

pub struct RedbStore {
    path: String,
    file: PathBuf,
    db: redb::Database,
    /// Held by every writer of samples, so `roll_up` sees a settled set of dirty minutes.
    series: Mutex<SeriesIndex>,
    /// Minutes written since their rollups were computed (also `D` keys on disk).
    dirty: Mutex<HashSet<(u32, i64)>>,
    /// Hours with samples not yet packed (also `U` keys on disk).
    unpacked: Mutex<HashSet<(u32, i64)>>,
    options: StoreOptions,
    next_forward: AtomicU64,
    forward_backlog: AtomicU64,
}

/// Calls `f` on each entry with `from <= key < to` until it returns false;
/// errors name the store's `file`.
fn scan<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    file: &Path,
    from: &[u8],
    to: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let err = |e: redb::StorageError| StoreError::Engine { path: file.display().to_string(), source: e.into() };
    for item in t.range::<&[u8]>(from..to).map_err(err)? {
        let (k, v) = item.map_err(err)?;
        if !f(k.value(), v.value())? {
            break;
        }
    }
    Ok(())
}

impl RedbStore {
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(dir, StoreOptions::default())
    }

    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<RedbStore, StoreError> {
        let path = dir.display().to_string();
        let file = dir.join("series.redb");
        let at = |e: redb::Error| StoreError::Engine { path: file.display().to_string(), source: e };
        std::fs::create_dir_all(dir).map_err(|e| at(redb::Error::Io(e)))?;
        let db = redb::Database::create(&file).map_err(|e| at(e.into()))?;
        let txn = db.begin_write().map_err(|e| at(e.into()))?;
        txn.open_table(TABLE).map_err(|e| at(e.into()))?;
        txn.commit().map_err(|e| at(e.into()))?;

        let read = db.begin_read().map_err(|e| at(e.into()))?;
        let t = read.open_table(TABLE).map_err(|e| at(e.into()))?;
        let corrupt = |detail: &str| StoreError::Corrupt { path: path.clone(), detail: detail.to_string() };
        let mut index = SeriesIndex::default();
        scan(&t, &file, b"S", &keys::after(b'S'), |k, v| {
            let key = keys::parse_series(k).ok_or_else(|| corrupt("series key without separator"))?;
            let id = u32::from_be_bytes(v.try_into().map_err(|_| corrupt("series id is not 4 bytes"))?);
            index.ids.insert(key, id);
            index.next = index.next.max(id + 1);
            Ok(true)
        })?;
        let (mut next_forward, mut backlog) = (0, 0);
        scan(&t, &file, b"L", &keys::after(b'L'), |k, v| {
            let f = keys::decode_forward(&path, k, v)?;
            next_forward = f.id + 1;
            backlog += f.readings.len() as u64;
            Ok(true)
        })?;
        let mut dirty = HashSet::new();
        scan(&t, &file, b"D", &keys::after(b'D'), |k, _| {
            dirty.extend(keys::parse_timed(k));
            Ok(true)
        })?;
        let mut unpacked = HashSet::new();
        scan(&t, &file, b"U", &keys::after(b'U'), |k, _| {
            unpacked.extend(keys::parse_timed(k));
            Ok(true)
        })?;
        drop(t);
        Ok(RedbStore {
            path,
            file,
            db,
            series: Mutex::new(index),
            dirty: Mutex::new(dirty),
            unpacked: Mutex::new(unpacked),
            options,
            next_forward: AtomicU64::new(next_forward),
            forward_backlog: AtomicU64::new(backlog),
        })
    }

    fn err<E: Into<redb::Error>>(&self) -> impl Fn(E) -> StoreError + '_ {
        move |e| StoreError::Engine { path: self.file.display().to_string(), source: e.into() }
    }

    fn id(&self, sensor: &str, metric: &str) -> Option<u32> {
        self.series.lock().unwrap().ids.get(&(SensorId::from(sensor), Metric::from(metric))).copied()
    }

    /// Runs `f` in one write transaction committed with `durability`.
    fn update<T>(&self, durability: Durability, f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(self.err())?;
        txn.set_durability(durability).map_err(self.err())?;
        let out = {
            let mut t = txn.open_table(TABLE).map_err(self.err())?;
            f(&mut t)?
        };
        txn.commit().map_err(self.err())?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&redb::ReadOnlyTable<&[u8], &[u8]>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(self.err())?;
        let t = txn.open_table(TABLE).map_err(self.err())?;
        f(&t)
    }

    /// Deletes one level's keys of series `id` older than `cutoff`.
    fn delete_before(&self, t: &mut redb::Table<&[u8], &[u8]>, level: Level, id: u32, cutoff: i64) -> Result<u64, StoreError> {
        let (from, to) = (keys::level(level, id, i64::MIN), keys::level(level, id, cutoff));
        let mut n = 0;
        t.retain_in::<&[u8], _>(&from[..]..&to[..], |_, _| {
            n += 1;
            false
        })
        .map_err(self.err())?;
        Ok(n)
    }
}

impl RedbStore {
    /// Drops packed samples of series `id` older than `cutoff`: whole blocks,
    /// and the older part of the block the cutoff falls in.
    fn expire_blocks(&self, t: &mut redb::Table<&[u8], &[u8]>, id: u32, cutoff: i64) -> Result<u64, StoreError> {
        let mut old: Vec<(i64, Vec<Sample>)> = Vec::new();
        scan(t, &self.file, &keys::block(id, i64::MIN), &keys::block(id, cutoff), |k, v| {
            old.push(self.decode_block(k, v)?);
            Ok(true)
        })?;
        let mut gone = 0u64;
        for (hour, samples) in old {
            let keep: Vec<Sample> = samples.iter().filter(|s| s.ts_ms >= cutoff).copied().collect();
            gone += (samples.len() - keep.len()) as u64;
            if keep.is_empty() {
                t.remove(&keys::block(id, hour)[..]).map_err(self.err())?;
            } else if keep.len() < samples.len() {
                t.insert(&keys::block(id, hour)[..], &block::encode(hour, &keep)[..]).map_err(self.err())?;
            }
        }
        Ok(gone)
    }

    /// The earliest time at or after `from` where series `id` may have a
    /// sample: its next plain sample or the start of its next block.
    fn next_data<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, id: u32, from: i64) -> Result<Option<i64>, StoreError> {
        let first = |lo: Key, hi: Key| -> Result<Option<i64>, StoreError> {
            match t.range::<&[u8]>(&lo[..]..=&hi[..]).map_err(self.err())?.next() {
                Some(item) => Ok(keys::parse_timed(item.map_err(self.err())?.0.value()).map(|(_, ts)| ts)),
                None => Ok(None),
            }
        };
        let raw = first(keys::point(id, from), keys::point(id, i64::MAX))?;
        let packed = first(keys::block(id, hour_of(from)), keys::block(id, i64::MAX))?.map(|h| h.max(from));
        Ok(match (raw, packed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// (hour, samples) of a `C` entry.
    fn decode_block(&self, k: &[u8], v: &[u8]) -> Result<(i64, Vec<Sample>), StoreError> {
        let (id, hour) = keys::parse_timed(k).ok_or_else(|| self.corrupt("block key is not 13 bytes".into()))?;
        let samples = block::decode(hour, v).ok_or_else(|| self.corrupt(format!("the block of series {id} at {hour} does not decode")))?;
        Ok((hour, samples))
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt { path: self.file.display().to_string(), detail }
    }

    /// The packed samples of series `id` with `from <= ts <= to`.
    fn packed<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, id: u32, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
        let mut out = Vec::new();
        scan(t, &self.file, &keys::block(id, hour_of(from)), &keys::block(id, to.saturating_add(1)), |k, v| {
            let (_, samples) = self.decode_block(k, v)?;
            out.extend(samples.into_iter().filter(|s| (from..=to).contains(&s.ts_ms)));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every sample of series `id` with `from <= ts <= to`, packed or not.
    fn samples<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, id: u32, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
        let mut raw = Vec::new();
        scan(t, &self.file, &keys::point(id, from), &keys::point(id, to.saturating_add(1)), |k, v| {
            raw.extend(keys::sample(k, v));
            Ok(true)
        })?;
        if to == i64::MAX {
            raw.extend(t.get(&keys::point(id, i64::MAX)[..]).map_err(self.err())?.and_then(|v| keys::sample(&keys::point(id, i64::MAX), v.value())));
        }
        Ok(block::merge(self.packed(t, id, from, to)?, raw))
    }
}

fn merge_into(acc: &mut Option<Rollup>, r: Rollup) {
    match acc {
        Some(a) => a.merge(&r),
        None => *acc = Some(r),
    }
}

impl Store for RedbStore {
    fn write(&self, w: &Write) -> Result<(), StoreError> {
        let mut index = self.series.lock().unwrap();
        let mut dirty = self.dirty.lock().unwrap();
        let mut unpacked = self.unpacked.lock().unwrap();
        let mut added: Vec<(SensorId, Metric)> = Vec::new();
        // Sets, not lists: a group of batches touches thousands of series.
        let mut newly_dirty: HashSet<(u32, i64)> = HashSet::new();
        let mut newly_unpacked: HashSet<(u32, i64)> = HashSet::new();
        let first_forward = self.next_forward.load(Relaxed);
        let (mut next_forward, mut forwarded) = (first_forward, 0);
        let done = self.update(Durability::None, |t| {
            if self.options.forward {
                for (gw, rs) in w.batches.iter().filter(|(_, rs)| !rs.is_empty()) {
                    let v = postcard::to_allocvec(&(gw, rs.as_slice())).expect("readings serialize");
                    t.insert(&keys::forward(next_forward)[..], &v[..]).map_err(self.err())?;
                    next_forward += 1;
                    forwarded += rs.len() as u64;
                }
            }
            let readings = w.batches.iter().flat_map(|(_, rs)| rs.iter()).filter(|_| self.options.keep_series);
            for r in readings {
                let key = (r.sensor.clone(), r.metric.clone());
                let id = match index.ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = index.next;
                        index.next += 1;
                        index.ids.insert(key.clone(), id);
                        t.insert(&keys::series(&r.sensor, &r.metric)[..], &id.to_be_bytes()[..]).map_err(self.err())?;
                        added.push(key);
                        id
                    }
                };
                t.insert(&keys::point(id, r.ts_ms)[..], &keys::encode_sample(r)[..]).map_err(self.err())?;
                let minute = r.ts_ms - r.ts_ms.rem_euclid(Level::Minute.bucket_ms());
                if !dirty.contains(&(id, minute)) && newly_dirty.insert((id, minute)) {
                    t.insert(&keys::dirty(id, minute)[..], &[][..]).map_err(self.err())?;
                }
                let hour = hour_of(r.ts_ms);
                if !unpacked.contains(&(id, hour)) && newly_unpacked.insert((id, hour)) {
                    t.insert(&keys::unpacked(id, hour)[..], &[][..]).map_err(self.err())?;
                }
            }
            for (gw, p) in &w.progress {
                t.insert(&keys::gateway(gw)[..], &postcard::to_allocvec(p).expect("progress serializes")[..]).map_err(self.err())?;
            }
            Ok(())
        });
        if let Err(e) = done {
            // Nothing of the transaction was written: forget the ids handed out for it.
            for k in added {
                index.ids.remove(&k);
            }
            return Err(e);
        }
        dirty.extend(newly_dirty);
        unpacked.extend(newly_unpacked);
        self.next_forward.store(next_forward, Relaxed);
        self.forward_backlog.fetch_add(forwarded, Relaxed);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        // An empty durable commit makes every earlier non-durable one durable.
        self.update(Durability::Immediate, |_| Ok(()))
    }

    fn forward_next(&self, max_readings: usize) -> Result<Vec<Forward>, StoreError> {
        self.read(|t| {
            let (mut out, mut n) = (Vec::new(), 0);
            scan(t, &self.file, b"L", &keys::after(b'L'), |k, v| {
                let f = keys::decode_forward(&self.path, k, v)?;
                n += f.readings.len();
                out.push(f);
                Ok(n < max_readings)
            })?;
            Ok(out)
        })
    }

    fn forward_done(&self, id: u64) -> Result<(), StoreError> {
        let gone = self.update(Durability::Immediate, |t| {
            let mut gone = 0u64;
            t.retain_in::<&[u8], _>(&keys::forward(0)[..]..=&keys::forward(id)[..], |k, v| {
                // An entry that does not decode was never counted in the backlog either.
                gone += keys::decode_forward(&self.path, k, v).map_or(0, |f| f.readings.len() as u64);
                false
            })
            .map_err(self.err())?;
            Ok(gone)
        })?;
        self.forward_backlog.fetch_sub(gone, Relaxed);
        Ok(())
    }

    fn forward_backlog(&self) -> u64 {
        self.forward_backlog.load(Relaxed)
    }

    fn progress(&self) -> Result<Vec<(String, Progress)>, StoreError> {
        self.read(|t| {
            let mut out = Vec::new();
            scan(t, &self.file, b"G", &keys::after(b'G'), |k, v| {
                let gw = String::from_utf8_lossy(&k[1..]).into_owned();
                let p: Progress = postcard::from_bytes(v).map_err(|e| StoreError::Corrupt { path: self.path.clone(), detail: format!("progress of {gw}: {e}") })?;
                out.push((gw, p));
                Ok(true)
            })?;
            Ok(out)
        })
    }

    fn query(&self, sensor: &str, metric: &str, from: i64, to: i64, limit: usize) -> Result<Vec<Sample>, StoreError> {
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

    fn last(&self, sensor: &str, metric: &str) -> Result<Option<Sample>, StoreError> {
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

    fn series(&self) -> Vec<(SensorId, Metric)> {
        let mut v: Vec<_> = self.series.lock().unwrap().ids.keys().cloned().collect();
        v.sort();
        v
    }

    fn roll_up(&self) -> Result<u64, StoreError> {
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
                scan(t, &self.file, &keys::level(Level::Minute, id, h), &keys::level(Level::Minute, id, h + HOUR), |k, v| {
                    if let Some(r) = keys::rollup(k, v) {
                        merge_into(&mut acc, Rollup { start_ms: h, ..r });
                    }
                    Ok(true)
                })?;
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

    fn pack(&self, now_ms: i64) -> Result<u64, StoreError> {
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
                    if samples.is_empty() {
                        t.remove(&keys::block(id, h)[..]).map_err(self.err())?;
                    } else {
                        t.insert(&keys::block(id, h)[..], &block::encode(h, &samples)[..]).map_err(self.err())?;
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

    fn rollups(&self, sensor: &str, metric: &str, level: Level, from: i64, to: i64) -> Result<Vec<Rollup>, StoreError> {
        let Some(id) = self.id(sensor, metric) else { return Ok(Vec::new()) };
        if from > to || level == Level::Raw {
            return Ok(Vec::new());
        }
        self.read(|t| {
            let mut out = Vec::new();
            for item in t.range::<&[u8]>(&keys::level(level, id, from)[..]..=&keys::level(level, id, to)[..]).map_err(self.err())? {
                let (k, v) = item.map_err(self.err())?;
                out.extend(keys::rollup(k.value(), v.value()));
            }
            Ok(out)
        })
    }

    fn expire(&self, now_ms: i64, keep: &dyn Fn(&str, &str) -> Keep) -> Result<Expired, StoreError> {
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
            let e = self.update(Durability::Immediate, |t| {
                let mut e = Expired::default();
                if let Some(c) = raw {
                    e.raw += self.delete_before(t, Level::Raw, id, c)?;
                    e.raw += self.expire_blocks(t, id, c)?;
                }
                if let Some(c) = minute {
                    e.rollups += self.delete_before(t, Level::Minute, id, c)?;
                }
                if let Some(c) = hour {
                    e.rollups += self.delete_before(t, Level::Hour, id, c)?;
                }
                Ok(e)
            })?;
            done.raw += e.raw;
            done.rollups += e.rollups;
        }
        Ok(done)
    }

    fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{Quality, Reading};

    fn r(seq: u64, sensor: &str, ts: i64, v: f64) -> Reading {
        Reading { seq: shared::Seq(seq), sensor: sensor.into(), metric: "pm25".into(), ts_ms: ts, value: v, quality: Quality::Good }
    }

    fn w(readings: Vec<Reading>, progress: Vec<(String, Progress)>) -> Write {
        Write { batches: vec![("gw-1".into(), std::sync::Arc::new(readings))], progress }
    }

    #[test]
    fn range_queries_return_only_the_series_and_window_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let st = RedbStore::open(dir.path()).unwrap();
        st.write(&w(vec![r(1, "aq-1", -5, 0.5), r(2, "aq-1", 10, 1.0), r(3, "aq-2", 15, 9.0), r(4, "aq-1", 20, 2.0)], vec![])).unwrap();
        let got: Vec<f64> = st.query("aq-1", "pm25", -10, 15, 100).unwrap().iter().map(|s| s.value).collect();
        assert_eq!(got, vec![0.5, 1.0]);
        assert_eq!(st.last("aq-1", "pm25").unwrap().unwrap().value, 2.0);
        assert!(st.query("aq-9", "pm25", 0, 100, 100).unwrap().is_empty());
        assert_eq!(st.series().len(), 2);
    }

    #[test]
    fn data_progress_and_dirty_minutes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let st = RedbStore::open(dir.path()).unwrap();
            st.write(&w(vec![r(1, "aq-1", 100, 1.0), r(2, "aq-1", 200, 3.0)], vec![("gw-1".into(), Progress { contiguous: 1, above: vec![3] })])).unwrap();
            st.sync().unwrap();
        }
        let st = RedbStore::open(dir.path()).unwrap();
        assert_eq!(st.progress().unwrap(), vec![("gw-1".to_string(), Progress { contiguous: 1, above: vec![3] })]);
        st.write(&w(vec![r(3, "aq-2", 100, 5.0)], vec![])).unwrap();
        assert_eq!(st.query("aq-1", "pm25", 0, 1000, 10).unwrap()[0].value, 1.0);
        assert_eq!(st.query("aq-2", "pm25", 0, 1000, 10).unwrap()[0].value, 5.0);
        // The minute written before reopening still gets its rollup.
        assert_eq!(st.roll_up().unwrap(), 2);
        let m = st.rollups("aq-1", "pm25", Level::Minute, 0, 0).unwrap();
        assert_eq!((m[0].count, m[0].sum, m[0].last), (2, 4.0, 3.0));
        assert_eq!(st.roll_up().unwrap(), 0);
    }

    #[test]
    fn forward_log_keeps_entries_in_order_until_done_and_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions { keep_series: false, forward: true };
        {
            let st = RedbStore::open_with(dir.path(), opts.clone()).unwrap();
            st.write(&w(vec![r(1, "aq-1", 10, 1.0), r(2, "aq-1", 20, 2.0)], vec![])).unwrap();
            st.write(&w(vec![r(3, "aq-2", 30, 3.0)], vec![])).unwrap();
            st.write(&w(vec![], vec![])).unwrap();
            assert_eq!(st.forward_backlog(), 3);
            let first = st.forward_next(1).unwrap();
            assert_eq!(first.len(), 1);
            assert_eq!(first[0].readings.len(), 2);
            assert_eq!(first[0].gateway, "gw-1");
            st.forward_done(first[0].id).unwrap();
            assert_eq!(st.forward_backlog(), 1);
            // Series are not kept when the external sink is the only one.
            assert!(st.series().is_empty());
            st.sync().unwrap();
        }
        let st = RedbStore::open_with(dir.path(), opts).unwrap();
        assert_eq!(st.forward_backlog(), 1);
        let rest = st.forward_next(100).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].readings[0].value, 3.0);
        st.write(&w(vec![r(4, "aq-2", 40, 4.0)], vec![])).unwrap();
        let all = st.forward_next(100).unwrap();
        assert!(all[1].id > all[0].id, "ids keep growing after reopening");
        st.forward_done(all[1].id).unwrap();
        assert!(st.forward_next(100).unwrap().is_empty());
        assert_eq!(st.forward_backlog(), 0);
    }

    #[test]
    fn packed_hours_read_back_whole_and_late_samples_join_them() {
        let dir = tempfile::tempdir().unwrap();
        let st = RedbStore::open(dir.path()).unwrap();
        let h0 = 1_700_006_400_000;
        let rs: Vec<Reading> = (0..720).map(|i| r(i + 1, "aq-1", h0 + i as i64 * 10_000, 20.0 + (i % 7) as f64 * 0.25)).collect();
        st.write(&w(rs.clone(), vec![])).unwrap();
        st.roll_up().unwrap();
        // Only the closed hour is packed: the second one ended less than PACK_AFTER_MS ago.
        assert_eq!(st.pack(h0 + 2 * HOUR + PACK_AFTER_MS - 1).unwrap(), 1);
        assert_eq!(st.pack(h0 + 2 * HOUR + PACK_AFTER_MS).unwrap(), 1);
        let all = st.query("aq-1", "pm25", i64::MIN, i64::MAX, usize::MAX).unwrap();
        assert_eq!(all.iter().map(|s| (s.ts_ms, s.value)).collect::<Vec<_>>(), rs.iter().map(|r| (r.ts_ms, r.value)).collect::<Vec<_>>());
        assert_eq!(st.query("aq-1", "pm25", h0 + 3_585_000, h0 + 3_620_000, 2).unwrap().iter().map(|s| s.ts_ms).collect::<Vec<_>>(), vec![h0 + 3_600_000 - 10_000, h0 + 3_600_000]);
        assert_eq!(st.last("aq-1", "pm25").unwrap().unwrap().ts_ms, h0 + 719 * 10_000);
        // A late sample for the packed first hour, and a corrected one.
        st.write(&w(vec![r(900, "aq-1", h0 + 5, 99.0), r(901, "aq-1", h0 + 10_000, 98.0)], vec![])).unwrap();
        let first = st.query("aq-1", "pm25", h0, h0 + 10_000, 10).unwrap();
        assert_eq!(first.iter().map(|s| (s.ts_ms, s.value)).collect::<Vec<_>>(), vec![(h0, 20.0), (h0 + 5, 99.0), (h0 + 10_000, 98.0)]);
        st.roll_up().unwrap();
        let m = st.rollups("aq-1", "pm25", Level::Minute, h0, h0).unwrap();
        assert_eq!((m[0].count, m[0].max), (7, 99.0), "the minute's rollup counts packed and late samples once each");
        assert_eq!(st.pack(h0 + 10 * HOUR).unwrap(), 1);
        assert_eq!(st.query("aq-1", "pm25", h0, h0 + HOUR - 1, usize::MAX).unwrap().len(), 361);
        // Retention cuts through a block.
        let e = st.expire(h0 + HOUR / 2 + 1000, &|_, _| Keep { raw_ms: Some(1000), minute_ms: None, hour_ms: None }).unwrap();
        assert_eq!(e.raw, 181);
        assert_eq!(st.query("aq-1", "pm25", i64::MIN, i64::MAX, 1).unwrap()[0].ts_ms, h0 + HOUR / 2);
        drop(st);
        let st = RedbStore::open(dir.path()).unwrap();
        assert_eq!(st.query("aq-1", "pm25", i64::MIN, i64::MAX, usize::MAX).unwrap().len(), 721 - 181);
    }
}
