//! Open samples: what writes brought since the store last settled, held in
//! memory in the order written and logged (`O`) in each write's own
//! transaction, then written as chunks all at once.
//!
//! Why: a write that put each series' samples into its chunks at once made
//! one B-tree insert per series it touched, in the series' own region of
//! the tree. A city's gateways each come back every few seconds, after the
//! others have pushed their regions out of the page cache, so each insert
//! read a page back and rewrote it: 18 GB read and 19 GB written for 10M
//! readings paced at 300k/s from 1,000 gateways (1M series), 130k
//! readings/s. A write now appends one log entry at the end of the `O`
//! keys; settling sorts what is open by minute and series and writes it in
//! key order, which puts it at the end of the chunks' keys (`X`, time
//! first): the pages of earlier minutes are not touched again.
//!
//! Crash guarantee unchanged: a write's log entry commits with the progress
//! that acks it, and opening the store replays the log into chunks before
//! anything reads them. Reads, rollups, packing, retention and imports
//! settle first, so they see every sample written, as before.

use std::path::Path;

use hashbrown::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use super::super::keys;
use super::super::{Sample, StoreError};
use super::{hour_of, latest_per_time, minute_of, scan, RedbStore};

/// Samples open at most before a write settles them all: 32 bytes each in
/// memory (128 MiB), 21 in the log, 16 more while a settle sorts them. 4M
/// is about 14 s of a city sending 300k readings/s; the upkeep pass settles
/// every 10 s anyway. Measured paced at 300k/s from 1,000 gateways (1M
/// series, 10M readings), when chunks were keyed by series first: 1M open
/// gave 219k readings/s, 4M 253k/s.
pub const OPEN_SAMPLES: usize = 1 << 22;

/// (series id, minute or hour start): minutes dirty, hours unpacked.
type Marks = HashSet<(u32, i64)>;

pub(super) struct Open {
    /// (series id, sample), in the order written.
    pub(super) samples: Vec<(u32, Sample)>,
    /// The id of the next log entry.
    pub(super) next_log: u64,
}

/// Chunks written from open samples, for memory to follow once committed.
pub(super) struct Chunked {
    /// ((series id, minute), its samples), in key order.
    pub(super) chunks: Vec<((u32, i64), Vec<Sample>)>,
    /// Minutes and hours newly marked dirty and unpacked.
    pub(super) dirty: Vec<(u32, i64)>,
    pub(super) unpacked: Vec<(u32, i64)>,
    pub(super) next_chunk: u64,
}

/// Writes `parts` (samples in the order written, the first part's before
/// the second's) into `t` as one chunk per series and minute, the later of
/// two samples at one time kept, numbered from `next_chunk` on; marks the
/// minutes and hours not in `dirty` and `unpacked`, and empties the log.
/// Sorts positions, not the samples: they are left as they were for a
/// transaction that fails, and not copied.
pub(super) fn write_chunks(
    t: &mut redb::Table<&[u8], &[u8]>,
    file: &Path,
    parts: [&[(u32, Sample)]; 2],
    mut next_chunk: u64,
    (dirty, unpacked): (&Marks, &Marks),
) -> Result<Chunked, StoreError> {
    let err = super::engine(file);
    let sample = |i: u32| {
        let i = i as usize;
        parts[0].get(i).unwrap_or_else(|| &parts[1][i - parts[0].len()])
    };
    // (minute, series, position): key order, so the chunks go in at the
    // end of the keys; the position keeps the order written within a chunk.
    let mut order: Vec<(i64, u32, u32)> = (0..(parts[0].len() + parts[1].len()) as u32)
        .map(|i| {
            let (id, s) = sample(i);
            (minute_of(s.ts_ms), *id, i)
        })
        .collect();
    order.sort_unstable();
    let mut out = Chunked { chunks: Vec::new(), dirty: Vec::new(), unpacked: Vec::new(), next_chunk };
    let mut new_hours: Marks = HashSet::new();
    for run in order.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
        let (minute, id) = (run[0].0, run[0].1);
        let chunk = latest_per_time(run.iter().map(|&(_, _, i)| sample(i).1).collect());
        t.insert(&keys::chunk(minute, id, next_chunk)[..], &keys::encode_chunk(minute, &chunk)[..]).map_err(err)?;
        next_chunk += 1;
        if !dirty.contains(&(id, minute)) {
            out.dirty.push((id, minute));
        }
        let hour = (id, hour_of(minute));
        if !unpacked.contains(&hour) && new_hours.insert(hour) {
            out.unpacked.push(hour);
        }
        out.chunks.push(((id, minute), chunk));
    }
    // The marks are keyed by series first: sorted, so their inserts walk the tree once.
    out.dirty.sort_unstable();
    out.unpacked.sort_unstable();
    for &(id, minute) in &out.dirty {
        t.insert(&keys::dirty(id, minute)[..], &[][..]).map_err(err)?;
    }
    for &(id, hour) in &out.unpacked {
        t.insert(&keys::unpacked(id, hour)[..], &[][..]).map_err(err)?;
    }
    t.insert(keys::NEXT_CHUNK, &next_chunk.to_be_bytes()[..]).map_err(err)?;
    t.retain_in::<&[u8], _>(&keys::logged(0)[..]..=&keys::logged(u64::MAX)[..], |_, _| false).map_err(err)?;
    out.next_chunk = next_chunk;
    Ok(out)
}

/// At open, before anything reads the chunks or their marks: the samples
/// the log holds (writes acked before a stop or a crash), written as chunks.
pub(super) fn replay(t: &mut redb::Table<&[u8], &[u8]>, file: &Path) -> Result<u64, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt { path: file.display().to_string(), detail };
    let mut samples = Vec::new();
    scan(&*t, file, b"O", &keys::after(b'O'), |k, v| {
        samples.extend(keys::decode_logged(v).ok_or_else(|| corrupt(format!("open samples' log entry {k:?} does not decode")))?);
        Ok(true)
    })?;
    if samples.is_empty() {
        return Ok(0);
    }
    let next_chunk = super::stored_next_chunk(&*t, file)?;
    // Marks already on disk are written again: the same empty entries.
    write_chunks(t, file, [&samples, &[]], next_chunk, (&HashSet::new(), &HashSet::new()))?;
    Ok(samples.len() as u64)
}

/// At open, before the log's replay: chunks as stores before `X` keyed
/// them (`W`, by series), moved to `X` keys a minute each and numbered on
/// from the stored next chunk number in the order they are read, so a later
/// write of a time still comes after an earlier one. Their `U` and `D`
/// marks stay as they were.
pub(super) fn move_legacy_chunks(t: &mut redb::Table<&[u8], &[u8]>, file: &Path) -> Result<u64, StoreError> {
    let err = super::engine(file);
    let corrupt = |detail: String| StoreError::Corrupt { path: file.display().to_string(), detail };
    let mut old = Vec::new();
    scan(&*t, file, b"W", &keys::after(b'W'), |k, v| {
        let (id, start) = keys::parse_legacy_chunk(k).ok_or_else(|| corrupt(format!("chunk key {k:?} is not 21 bytes")))?;
        old.push((id, keys::decode_chunk(start, v).ok_or_else(|| corrupt(format!("a chunk of series {id} at {start} does not decode")))?));
        Ok(true)
    })?;
    if old.is_empty() {
        return Ok(0);
    }
    let mut next_chunk = super::stored_next_chunk(&*t, file)?;
    let mut moved = 0;
    for (id, samples) in old {
        for piece in samples.chunk_by(|a, b| minute_of(a.ts_ms) == minute_of(b.ts_ms)) {
            let minute = minute_of(piece[0].ts_ms);
            t.insert(&keys::chunk(minute, id, next_chunk)[..], &keys::encode_chunk(minute, piece)[..]).map_err(err)?;
            next_chunk += 1;
        }
        moved += samples.len() as u64;
    }
    t.insert(keys::NEXT_CHUNK, &next_chunk.to_be_bytes()[..]).map_err(err)?;
    t.retain_in::<&[u8], _>(&b"W"[..]..&keys::after(b'W')[..], |_, _| false).map_err(err)?;
    Ok(moved)
}

impl RedbStore {
    /// Writes every open sample into chunks: what reads and upkeep do
    /// first, so they see everything written.
    pub(super) fn settle(&self) -> Result<(), StoreError> {
        // Writers wait: none logs a sample between the chunks and the log's end.
        let _writes = self.series.lock().unwrap();
        let mut dirty = self.dirty.lock().unwrap();
        let mut unpacked = self.unpacked.lock().unwrap();
        let mut open = self.open.lock().unwrap();
        if open.samples.is_empty() {
            return Ok(());
        }
        let next_chunk = self.next_chunk.load(Relaxed);
        // Committed without fsync, as writes are: the log it empties and the
        // chunks it fills become durable together at the next sync.
        let chunked = self.update(redb::Durability::None, |t| write_chunks(t, &self.file, [&open.samples, &[]], next_chunk, (&dirty, &unpacked)))?;
        open.samples.clear();
        self.chunked(chunked, &mut dirty, &mut unpacked);
        Ok(())
    }

    /// Memory follows chunks just committed: their marks, their rollups, the chunk count.
    pub(super) fn chunked(&self, c: Chunked, dirty: &mut Marks, unpacked: &mut Marks) {
        dirty.extend(c.dirty);
        unpacked.extend(c.unpacked);
        let mut running = self.running.lock().unwrap();
        for ((id, minute), samples) in &c.chunks {
            running.wrote(*id, *minute, samples);
        }
        self.next_chunk.store(c.next_chunk, Relaxed);
    }
}
