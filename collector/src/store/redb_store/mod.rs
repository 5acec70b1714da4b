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
//! backlog) reach them, and no key is rewritten per batch. The upkeep task
//! rolls up a minute once it is over (`roll_up_ended`), not on every pass
//! while it is still written (each roll-up of a series reads its samples
//! again); a query rolls up its own series first.
//!
//! A write logs its samples in one `O` entry and holds them open (`open`);
//! settling them lands one `X` chunk per series and minute (13 bytes a
//! sample, one B-tree insert however many writes brought them; stores
//! before chunks wrote a `P` entry per sample, and before minute chunks one
//! chunk per hour);
//! `pack` turns each closed hour of a series into one block (`block`), a
//! few bytes per sample, appended to the series' stream of page-sized
//! pieces (`stream`) with a `C` entry pointing to it; its minute rollups
//! likewise. Reads merge all three, the later write winning
//! at the same time, so a late sample for a packed hour is seen at once and
//! packed into its block on the next pass.

// hashbrown's maps (foldhash): ingest looks each reading's series up in
// them, and SipHash was a tenth of ingest's CPU with 1M series.
use hashbrown::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
use shared::{GatewayId, Metric, SensorId};

use super::keys::Key;
use super::{block, keys};
use super::{Expired, Forward, Keep, Level, Progress, Rollup, Sample, SeqSpace, Store, StoreError, Write};
use crate::series_ref::SeriesRef;

mod import;
mod maintain;
mod open;
mod read;
mod running;
mod stream;
#[cfg(test)]
mod tests;
mod write;

use maintain::Minutes;
use stream::Kind;

pub use import::{ClosedHour, ImportError};
pub use open::OPEN_SAMPLES;

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;

fn hour_of(ts_ms: i64) -> i64 {
    ts_ms.saturating_sub(ts_ms.rem_euclid(HOUR))
}

fn minute_of(ts_ms: i64) -> i64 {
    ts_ms.saturating_sub(ts_ms.rem_euclid(Level::Minute.bucket_ms()))
}

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("citysense");

/// The page cache unless `[store] cache` says otherwise (redb's own is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Keep the series here; off when only the external sink keeps them
    /// (gateway progress is kept either way: it is what makes dedup work).
    pub keep_series: bool,
    /// Log every stored reading for the external sink.
    pub forward: bool,
    /// Bytes of file pages kept in memory.
    pub cache_bytes: usize,
    /// Samples written and held open (logged, not yet in chunks) at most.
    pub open_samples: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { keep_series: true, forward: false, cache_bytes: DEFAULT_CACHE_BYTES, open_samples: OPEN_SAMPLES }
    }
}

#[derive(Default)]
struct SeriesIndex {
    ids: HashMap<(SensorId, Metric), u32>,
    next: u32,
    /// By series id: the time of its oldest sample kept (`NO_SAMPLE`: none),
    /// so a series' start is known without reading a block (the SensorThings
    /// API shows it for every Datastream of a page and counts from it).
    /// Found on disk at open, lowered by writes, found again for a series
    /// whose oldest samples `expire` deleted; kept here, under the lock every
    /// writer holds, so a write and an expiry of one series cannot cross.
    first: Vec<i64>,
    /// By series id: when `expire` next has something of it to delete (its
    /// oldest sample, minute and hour rollup past their retention), so a pass
    /// visits only those series, not a million every minute. Absent: now
    /// (every series found at open is visited once); a new series: never,
    /// until its first sample sets `lowered`.
    due: Vec<i64>,
    /// By series id: the oldest sample time a write set below what the
    /// series had (`NO_SAMPLE`: none since the last pass), from which the
    /// pass works out, without reading, whether that sample makes the series
    /// due sooner.
    lowered: Vec<i64>,
}

const NO_SAMPLE: i64 = i64::MAX;

impl SeriesIndex {
    fn first(&self, id: u32) -> Option<i64> {
        self.first.get(id as usize).copied().filter(|&t| t != NO_SAMPLE)
    }

    /// Sets series `id`'s oldest sample time, returning the one it had.
    fn set_first(&mut self, id: u32, ts_ms: Option<i64>) -> i64 {
        let i = id as usize;
        if self.first.len() <= i {
            self.first.resize(i + 1, NO_SAMPLE);
        }
        let before = std::mem::replace(&mut self.first[i], ts_ms.unwrap_or(NO_SAMPLE));
        if self.first[i] < before {
            if self.lowered.len() <= i {
                self.lowered.resize(i + 1, NO_SAMPLE);
            }
            self.lowered[i] = self.lowered[i].min(self.first[i]);
        }
        before
    }

    /// The oldest sample time a write set since the last pass, taken.
    fn take_lowered(&mut self, id: u32) -> Option<i64> {
        self.lowered.get_mut(id as usize).map(|t| std::mem::replace(t, NO_SAMPLE)).filter(|&t| t != NO_SAMPLE)
    }

    fn due(&self, id: u32) -> i64 {
        self.due.get(id as usize).copied().unwrap_or(i64::MIN)
    }

    fn set_due(&mut self, id: u32, at: i64) {
        let i = id as usize;
        if self.due.len() <= i {
            self.due.resize(i + 1, i64::MIN);
        }
        self.due[i] = at;
    }

    /// The id of the series (`sensor`, `metric`). A series not seen before
    /// gets the next id, written to `t` in the caller's transaction and
    /// listed in `added`, so that `undo` forgets it if that transaction is
    /// not committed.
    fn id_or_register(&mut self, t: &mut redb::Table<&[u8], &[u8]>, sensor: &SensorId, metric: &Metric, added: &mut Vec<(SensorId, Metric)>) -> Result<u32, redb::StorageError> {
        if let Some(id) = self.ids.get(&SeriesRef(sensor, metric)) {
            return Ok(*id);
        }
        let id = self.next;
        self.next += 1;
        // Nothing of it on disk yet: due once its first sample is old enough.
        self.set_due(id, i64::MAX);
        self.ids.insert((sensor.clone(), metric.clone()), id);
        added.push((sensor.clone(), metric.clone()));
        t.insert(&keys::series(sensor, metric)[..], &id.to_be_bytes()[..])?;
        Ok(id)
    }

    fn id(&self, sensor: &str, metric: &str) -> Option<u32> {
        self.ids.get(&SeriesRef(sensor, metric)).copied()
    }

    /// Forgets what a transaction that was not committed handed out: the
    /// series ids it added and the oldest-sample times it lowered.
    fn undo(&mut self, added: Vec<(SensorId, Metric)>, lowered: Vec<(u32, i64)>) {
        for k in added {
            self.ids.remove(&k);
        }
        for (id, before) in lowered.into_iter().rev() {
            self.set_first(id, (before != NO_SAMPLE).then_some(before));
        }
    }
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
    /// Rollup saves that passes still open may not have seen.
    saves: Mutex<maintain::Saves>,
    /// Rollups of what this process wrote, kept as it wrote them.
    running: Mutex<running::Running>,
    /// Samples written and not yet in chunks (taken after `series`, `dirty` and `unpacked`).
    open: Mutex<open::Open>,
    options: StoreOptions,
    next_forward: AtomicU64,
    forward_backlog: AtomicU64,
    /// The number the next chunk is written under: chunks of one series and
    /// hour sort in the order they were written.
    next_chunk: AtomicU64,
}

/// fsync of a directory: the names in it become durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// An engine error naming the store's `file`, for functions without `self`.
fn engine(file: &Path) -> impl Fn(redb::StorageError) -> StoreError + Copy + '_ {
    move |e| StoreError::Engine { path: file.display().to_string(), source: e.into() }
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
    let err = engine(file);
    for item in t.range::<&[u8]>(from..to).map_err(err)? {
        let (k, v) = item.map_err(err)?;
        if !f(k.value(), v.value())? {
            break;
        }
    }
    Ok(())
}

/// The time of series `id`'s oldest sample on disk: its first plain sample
/// or the first sample of its first block, whichever is older.
fn oldest<T: ReadableTable<&'static [u8], &'static [u8]>>(t: &T, file: &Path, id: u32) -> Result<Option<i64>, StoreError> {
    let err = engine(file);
    let legacy = match t.range::<&[u8]>(&keys::point(id, i64::MIN)[..]..=&keys::point(id, i64::MAX)[..]).map_err(err)?.next() {
        Some(item) => keys::parse_timed(item.map_err(err)?.0.value()).map(|(_, ts)| ts),
        None => None,
    };
    // The first chunk's samples are all in its hour.
    let chunked = match chunk_start(t, file, id, i64::MIN, End::First)? {
        Some(start) => chunked(t, file, id, start, hour_of(start) + HOUR - 1)?.first().map(|s| s.ts_ms),
        None => None,
    };
    let raw = earliest(legacy, chunked);
    let mut packed = None;
    scan(t, file, &keys::block(id, i64::MIN), &keys::block(id, raw.unwrap_or(i64::MAX)), |k, v| {
        let (_, hour) = keys::parse_timed(k).ok_or_else(|| StoreError::Corrupt { path: file.display().to_string(), detail: "block key is not 13 bytes".into() })?;
        let samples = block::decode(hour, &stream::bytes(t, file, Kind::Samples, id, v)?)
            .ok_or_else(|| StoreError::Corrupt { path: file.display().to_string(), detail: format!("the block of series {id} at {hour} does not decode") })?;
        packed = samples.first().map(|s| s.ts_ms);
        // A block left empty holds nothing: look at the next one.
        Ok(packed.is_none())
    })?;
    Ok(earliest(raw, packed))
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The number the next chunk is written under, as kept in the store (0
/// before its first chunk).
fn stored_next_chunk<T: ReadableTable<&'static [u8], &'static [u8]>>(t: &T, file: &Path) -> Result<u64, StoreError> {
    match t.get(keys::NEXT_CHUNK).map_err(engine(file))? {
        Some(v) => v
            .value()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt { path: file.display().to_string(), detail: "the next chunk number is not 8 bytes".into() }),
        None => Ok(0),
    }
}

/// Which end of a range to look at.
#[derive(Clone, Copy)]
enum End {
    First,
    Last,
}

/// The hours of series `id` marked unpacked (`U`) from the hour of `from`
/// to that of `to`, in order: the only hours that can hold its chunks.
fn unpacked_hours<T: ReadableTable<&'static [u8], &'static [u8]>>(t: &T, file: &Path, id: u32, from: i64, to: i64) -> Result<Vec<i64>, StoreError> {
    let err = engine(file);
    let mut hours = Vec::new();
    for item in t.range::<&[u8]>(&keys::unpacked(id, hour_of(from))[..]..=&keys::unpacked(id, hour_of(to))[..]).map_err(err)? {
        hours.extend(keys::parse_timed(item.map_err(err)?.0.value()).map(|(_, h)| h));
    }
    Ok(hours)
}

/// The minute starts of hour `h` within `from..=to`, in order.
fn minutes_of(h: i64, from: i64, to: i64) -> impl DoubleEndedIterator<Item = i64> {
    let (first, last) = (minute_of(from).max(h), minute_of(to).min(h.saturating_add(HOUR - MINUTE)));
    // Empty when `last < first`.
    (0..=(last - first).div_euclid(MINUTE)).map(move |i| first + i * MINUTE)
}

/// The `X` keys of series `id`'s chunks in the minute starting at `minute`.
fn minute_range(minute: i64, id: u32) -> std::ops::RangeInclusive<[u8; 21]> {
    keys::chunk(minute, id, 0)..=keys::chunk(minute, id, u64::MAX)
}

/// The minute of series `id`'s first chunk in or after the hour of `from`,
/// or of its last chunk.
fn chunk_start<T: ReadableTable<&'static [u8], &'static [u8]>>(t: &T, file: &Path, id: u32, from: i64, end: End) -> Result<Option<i64>, StoreError> {
    let err = engine(file);
    let mut hours = unpacked_hours(t, file, id, from, i64::MAX)?;
    if let End::Last = end {
        hours.reverse();
    }
    for h in hours {
        let mut minutes: Vec<i64> = minutes_of(h, h, i64::MAX).collect();
        if let End::Last = end {
            minutes.reverse();
        }
        for m in minutes {
            let r = minute_range(m, id);
            if t.range::<&[u8]>(&r.start()[..]..=&r.end()[..]).map_err(err)?.next().is_some() {
                return Ok(Some(m));
            }
        }
    }
    Ok(None)
}

/// Calls `f` with (key, minute, samples) of each chunk of series `id` in
/// the minutes of `from..=to`, in key order: the later write of a time
/// comes last.
fn each_chunk<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    file: &Path,
    id: u32,
    (from, to): (i64, i64),
    mut f: impl FnMut(&[u8], i64, Vec<Sample>),
) -> Result<(), StoreError> {
    let (err, corrupt) = (engine(file), |detail: String| StoreError::Corrupt { path: file.display().to_string(), detail });
    for h in unpacked_hours(t, file, id, from, to)? {
        for m in minutes_of(h, from, to) {
            let r = minute_range(m, id);
            for item in t.range::<&[u8]>(&r.start()[..]..=&r.end()[..]).map_err(err)? {
                let (k, v) = item.map_err(err)?;
                let samples = keys::decode_chunk(m, v.value()).ok_or_else(|| corrupt(format!("a chunk of series {id} at {m} does not decode")))?;
                f(k.value(), m, samples);
            }
        }
    }
    Ok(())
}

/// The chunked samples of series `id` with `from <= ts <= to`, in time
/// order, a later chunk's sample replacing an earlier one's at the same time.
fn chunked<T: ReadableTable<&'static [u8], &'static [u8]>>(t: &T, file: &Path, id: u32, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
    let mut all = Vec::new();
    each_chunk(t, file, id, (from, to), |_, _, samples| all.extend(samples.into_iter().filter(|s| (from..=to).contains(&s.ts_ms))))?;
    Ok(latest_per_time(all))
}

/// `samples` in time order with one sample per time: the last given of
/// those at the same time (a later write of the same time replaces it).
fn latest_per_time(mut samples: Vec<Sample>) -> Vec<Sample> {
    // Stable: samples at the same time stay in the order they were given.
    samples.sort_by_key(|s| s.ts_ms);
    let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
    for s in samples {
        match out.last_mut() {
            Some(last) if last.ts_ms == s.ts_ms => *last = s,
            _ => out.push(s),
        }
    }
    out
}

impl RedbStore {
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(dir, StoreOptions::default())
    }

    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<RedbStore, StoreError> {
        let path = dir.display().to_string();
        let file = dir.join("series.redb");
        let at = |e: redb::Error| StoreError::Engine { path: file.display().to_string(), source: e };
        let existed = dir.is_dir();
        std::fs::create_dir_all(dir).map_err(|e| at(redb::Error::Io(e)))?;
        let db = redb::Builder::new().set_cache_size(options.cache_bytes).create(&file).map_err(|e| at(e.into()))?;
        let txn = db.begin_write().map_err(|e| at(e.into()))?;
        let (moved, replayed) = {
            let mut t = txn.open_table(TABLE).map_err(|e| at(e.into()))?;
            (open::move_legacy_chunks(&mut t, &file)?, open::replay(&mut t, &file)?)
        };
        txn.commit().map_err(|e| at(e.into()))?;
        if moved > 0 {
            tracing::info!(samples = moved, "moved chunks written by an earlier version to the time-ordered layout");
        }
        if replayed > 0 {
            tracing::info!(samples = replayed, "wrote the open samples logged before the last stop into chunks");
        }
        // redb fsyncs its file but not the directory naming it: without this a
        // power cut after the first start could take the whole store, acked
        // readings included (every cut of the power-cut suite did).
        sync_dir(dir).map_err(|e| at(redb::Error::Io(e)))?;
        if !existed {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(|e| at(redb::Error::Io(e)))?;
            }
        }

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
        // Two seeks a series (and a block decoded when the oldest sample is packed).
        let ids: Vec<u32> = index.ids.values().copied().collect();
        for id in ids {
            let first = oldest(&t, &file, id)?;
            index.set_first(id, first);
        }
        let (mut next_forward, mut backlog) = (0, 0);
        scan(&t, &file, b"L", &keys::after(b'L'), |k, v| {
            let f = keys::decode_forward(&path, k, v)?;
            next_forward = f.id + 1;
            backlog += f.readings.len() as u64;
            Ok(true)
        })?;
        let next_chunk = stored_next_chunk(&t, &file)?;
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
            running: Mutex::new(running::Running::new(shared::now_ms(), unpacked.iter().copied())),
            unpacked: Mutex::new(unpacked),
            saves: Mutex::new(maintain::Saves::default()),
            open: Mutex::new(open::Open { samples: Vec::new(), next_log: 0 }),
            options,
            next_forward: AtomicU64::new(next_forward),
            forward_backlog: AtomicU64::new(backlog),
            next_chunk: AtomicU64::new(next_chunk),
        })
    }

    /// Rewrites the file without its free pages (redb's compaction), so its
    /// size is what the data takes: for measurements (`citysense-bench
    /// store`), with no transaction open.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.settle()?;
        while self.db.compact().map_err(|e| StoreError::Engine { path: self.file.display().to_string(), source: e.into() })? {}
        Ok(())
    }

    /// Bytes of the file's pages in use (redb's count; free pages left out):
    /// what the data takes in a live file, apart from the steps the file
    /// grows in. For measurements (`citysense-bench store`).
    pub fn bytes_in_use(&self) -> Result<u64, StoreError> {
        self.settle()?;
        let txn = self.db.begin_write().map_err(self.err())?;
        let stats = txn.stats().map_err(self.err())?;
        txn.abort().map_err(self.err())?;
        Ok(stats.allocated_pages() * stats.page_size() as u64)
    }

    fn err<E: Into<redb::Error>>(&self) -> impl Fn(E) -> StoreError + '_ {
        move |e| StoreError::Engine { path: self.file.display().to_string(), source: e.into() }
    }

    fn id(&self, sensor: &str, metric: &str) -> Option<u32> {
        self.series.lock().unwrap().id(sensor, metric)
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
    /// Drops chunked samples of series `id` older than `cutoff`: whole
    /// chunks, and the older part of a chunk that holds the cutoff.
    fn expire_chunks(&self, t: &mut redb::Table<&[u8], &[u8]>, id: u32, cutoff: i64) -> Result<u64, StoreError> {
        let mut old: Vec<(Vec<u8>, i64, Vec<Sample>)> = Vec::new();
        // A chunk of a minute after the cutoff's holds nothing older.
        each_chunk(&*t, &self.file, id, (i64::MIN, cutoff), |k, minute, samples| old.push((k.to_vec(), minute, samples)))?;
        let mut gone = 0u64;
        for (key, start, samples) in old {
            let keep: Vec<Sample> = samples.iter().filter(|s| s.ts_ms >= cutoff).copied().collect();
            gone += (samples.len() - keep.len()) as u64;
            if keep.is_empty() {
                t.remove(&key[..]).map_err(self.err())?;
            } else if keep.len() < samples.len() {
                t.insert(&key[..], &keys::encode_chunk(start, &keep)[..]).map_err(self.err())?;
            }
        }
        Ok(gone)
    }

    /// Drops packed samples of series `id` older than `cutoff`: whole blocks,
    /// and the older part of the block the cutoff falls in.
    fn expire_blocks(&self, t: &mut redb::Table<&[u8], &[u8]>, id: u32, cutoff: i64) -> Result<u64, StoreError> {
        let mut old: Vec<(i64, Vec<Sample>)> = Vec::new();
        scan(&*t, &self.file, &keys::block(id, i64::MIN), &keys::block(id, cutoff), |k, v| {
            old.push(self.decode_block(&*t, k, v)?);
            Ok(true)
        })?;
        let mut gone = 0u64;
        for (hour, samples) in &old {
            let keep: Vec<Sample> = samples.iter().filter(|s| s.ts_ms >= cutoff).copied().collect();
            gone += (samples.len() - keep.len()) as u64;
            if keep.is_empty() {
                stream::remove(t, &self.file, Kind::Samples, id, *hour)?;
            } else if keep.len() < samples.len() {
                stream::put(t, &self.file, Kind::Samples, id, *hour, &block::encode(*hour, &keep))?;
            }
        }
        if !old.is_empty() {
            stream::drop_unreferenced(t, &self.file, Kind::Samples, id)?;
        }
        Ok(gone)
    }

    /// The earliest time at or after `from` where series `id` may have a
    /// sample: its next `P` sample or the start of its next chunk (its
    /// minute) or block (its hour).
    fn next_data<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, id: u32, from: i64) -> Result<Option<i64>, StoreError> {
        let legacy = self.first_time(t, keys::point(id, from), keys::point(id, i64::MAX))?;
        let chunk = chunk_start(t, &self.file, id, from, End::First)?.map(|h| h.max(from));
        let packed = self.first_time(t, keys::block(id, hour_of(from)), keys::block(id, i64::MAX))?.map(|h| h.max(from));
        Ok(earliest(earliest(legacy, chunk), packed))
    }

    /// The time in the first key of `lo..=hi` (13-byte timed keys).
    fn first_time<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, lo: Key, hi: Key) -> Result<Option<i64>, StoreError> {
        match t.range::<&[u8]>(&lo[..]..=&hi[..]).map_err(self.err())?.next() {
            Some(item) => Ok(keys::parse_timed(item.map_err(self.err())?.0.value()).map(|(_, ts)| ts)),
            None => Ok(None),
        }
    }

    /// (hour, samples) of a `C` entry.
    fn decode_block<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, k: &[u8], v: &[u8]) -> Result<(i64, Vec<Sample>), StoreError> {
        let (id, hour) = keys::parse_timed(k).ok_or_else(|| self.corrupt("block key is not 13 bytes".into()))?;
        let samples =
            block::decode(hour, &stream::bytes(t, &self.file, Kind::Samples, id, v)?).ok_or_else(|| self.corrupt(format!("the block of series {id} at {hour} does not decode")))?;
        Ok((hour, samples))
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt { path: self.file.display().to_string(), detail }
    }

    /// The 1-minute rollups of series `id` with `from <= start <= to`: the
    /// packed hours (`R`) and single entries (`M`: minutes of hours not packed
    /// yet, or rolled up again after a late sample), a single entry winning.
    fn minute_rollups<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, id: u32, from: i64, to: i64) -> Result<Vec<Rollup>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let mut packed = Vec::new();
        scan(t, &self.file, &keys::minute_block(id, hour_of(from)), &keys::minute_block(id, to.saturating_add(1)), |k, v| {
            let (_, hour) = keys::parse_timed(k).ok_or_else(|| self.corrupt("rollup block key is not 13 bytes".into()))?;
            let rollups = block::rollups::decode(hour, &stream::bytes(t, &self.file, Kind::Minutes, id, v)?)
                .ok_or_else(|| self.corrupt(format!("the minute rollups of series {id} at {hour} do not decode")))?;
            packed.extend(rollups.into_iter().filter(|r| (from..=to).contains(&r.start_ms)));
            Ok(true)
        })?;
        let mut single = Vec::new();
        for item in t.range::<&[u8]>(&keys::level(Level::Minute, id, from)[..]..=&keys::level(Level::Minute, id, to)[..]).map_err(self.err())? {
            let (k, v) = item.map_err(self.err())?;
            single.extend(keys::rollup(k.value(), v.value()));
        }
        if packed.is_empty() {
            return Ok(single);
        }
        let mut out = Vec::with_capacity(packed.len() + single.len());
        let (mut a, mut b) = (packed.into_iter().peekable(), single.into_iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.start_ms < y.start_ms => out.extend(a.next()),
                (Some(x), Some(y)) if x.start_ms == y.start_ms => {
                    a.next();
                    out.extend(b.next());
                }
                (_, Some(_)) => out.extend(b.next()),
                (Some(_), None) => out.extend(a.next()),
                (None, None) => return Ok(out),
            }
        }
    }

    /// Drops packed minute rollups of series `id` starting before `cutoff`.
    fn expire_minute_blocks(&self, t: &mut redb::Table<&[u8], &[u8]>, id: u32, cutoff: i64) -> Result<u64, StoreError> {
        let mut old: Vec<(i64, Vec<Rollup>)> = Vec::new();
        scan(&*t, &self.file, &keys::minute_block(id, i64::MIN), &keys::minute_block(id, cutoff), |k, v| {
            let (_, hour) = keys::parse_timed(k).ok_or_else(|| self.corrupt("rollup block key is not 13 bytes".into()))?;
            let bytes = stream::bytes(&*t, &self.file, Kind::Minutes, id, v)?;
            old.push((hour, block::rollups::decode(hour, &bytes).ok_or_else(|| self.corrupt(format!("the minute rollups of series {id} at {hour} do not decode")))?));
            Ok(true)
        })?;
        let mut gone = 0u64;
        for (hour, rollups) in &old {
            let keep: Vec<Rollup> = rollups.iter().filter(|r| r.start_ms >= cutoff).copied().collect();
            gone += (rollups.len() - keep.len()) as u64;
            if keep.is_empty() {
                stream::remove(t, &self.file, Kind::Minutes, id, *hour)?;
            } else if keep.len() < rollups.len() {
                stream::put(t, &self.file, Kind::Minutes, id, *hour, &block::rollups::encode(*hour, &keep))?;
            }
        }
        if !old.is_empty() {
            stream::drop_unreferenced(t, &self.file, Kind::Minutes, id)?;
        }
        Ok(gone)
    }

    /// The packed samples of series `id` with `from <= ts <= to`.
    fn packed<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, id: u32, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
        let mut out = Vec::new();
        scan(t, &self.file, &keys::block(id, hour_of(from)), &keys::block(id, to.saturating_add(1)), |k, v| {
            let (_, samples) = self.decode_block(t, k, v)?;
            out.extend(samples.into_iter().filter(|s| (from..=to).contains(&s.ts_ms)));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every sample of series `id` with `from <= ts <= to`, packed or not.
    fn samples<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, id: u32, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
        Ok(block::merge(self.packed(t, id, from, to)?, block::merge(self.legacy(t, id, from, to)?, chunked(t, &self.file, id, from, to)?)))
    }

    /// The `P` samples of series `id` with `from <= ts <= to`.
    fn legacy<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, id: u32, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
        let mut raw = Vec::new();
        scan(t, &self.file, &keys::point(id, from), &keys::point(id, to.saturating_add(1)), |k, v| {
            raw.extend(keys::sample(k, v));
            Ok(true)
        })?;
        if to == i64::MAX {
            raw.extend(t.get(&keys::point(id, i64::MAX)[..]).map_err(self.err())?.and_then(|v| keys::sample(&keys::point(id, i64::MAX), v.value())));
        }
        Ok(raw)
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
        self.commit(w)
    }

    fn bind(&self, bindings: &[(SensorId, GatewayId)]) -> Result<(), StoreError> {
        self.write_bindings(bindings)
    }

    fn bindings(&self) -> Result<Vec<(SensorId, GatewayId)>, StoreError> {
        self.read_bindings()
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.sync_all()
    }

    fn forward_next(&self, max_readings: usize) -> Result<Vec<Forward>, StoreError> {
        self.forward_read(max_readings)
    }

    fn forward_done(&self, id: u64) -> Result<(), StoreError> {
        self.forward_trim(id)
    }

    fn forward_backlog(&self) -> u64 {
        self.forward_len()
    }

    fn progress(&self) -> Result<Vec<(SeqSpace, Progress)>, StoreError> {
        self.read_progress()
    }

    fn query(&self, sensor: &str, metric: &str, from: i64, to: i64, limit: usize) -> Result<Vec<Sample>, StoreError> {
        self.read_range(sensor, metric, from, to, limit)
    }

    fn last(&self, sensor: &str, metric: &str) -> Result<Option<Sample>, StoreError> {
        self.read_last(sensor, metric)
    }

    fn series(&self) -> Vec<(SensorId, Metric)> {
        self.list_series()
    }

    fn first_ts(&self, sensor: &str, metric: &str) -> Result<Option<i64>, StoreError> {
        let index = self.series.lock().unwrap();
        Ok(index.id(sensor, metric).and_then(|id| index.first(id)))
    }

    fn roll_up(&self) -> Result<u64, StoreError> {
        self.roll_up_dirty(Minutes::All)
    }

    fn roll_up_ended(&self, until_ms: i64) -> Result<u64, StoreError> {
        self.roll_up_dirty(Minutes::EndedBy(until_ms))
    }

    fn roll_up_series(&self, sensor: &str, metric: &str) -> Result<u64, StoreError> {
        self.roll_up_dirty(Minutes::OfSeries(sensor, metric))
    }

    fn pack(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.pack_closed(now_ms)
    }

    fn rollups(&self, sensor: &str, metric: &str, level: Level, from: i64, to: i64) -> Result<Vec<Rollup>, StoreError> {
        self.read_rollups(sensor, metric, level, from, to)
    }

    fn expire(&self, now_ms: i64, keep: &dyn Fn(&str, &str) -> Keep) -> Result<Expired, StoreError> {
        self.expire_old(now_ms, keep)
    }

    fn size_on_disk(&self) -> u64 {
        self.file_size()
    }
}
