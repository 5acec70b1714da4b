//! `Outbox`: the agent's durable queue. A reading gets its `seq` here and stays
//! until the collector acknowledges it (acks delete, never before).
//!
//! Durability is batched: `append` holds readings in memory and `flush` (run
//! every `buffer.flush`) writes them to sled as chunks and makes them durable. The
//! uplink only ever sends readings at or below the last flushed `seq`, so a
//! `seq` the collector has seen can never be handed out again after a crash.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use shared::{Quality, Reading};

use crate::config::WhenFull;
use crate::source::NewReading;

/// What the rest of the agent needs from a durable queue. sled's on-disk format
/// is not yet stable, so nothing outside this module names it.
pub trait Outbox: Send + Sync {
    /// Gives each reading the next `seq` and stores it.
    fn append(&self, readings: Vec<NewReading>) -> Result<Appended, OutboxError>;
    /// Makes everything appended so far durable; returns the highest durable `seq`.
    fn flush(&self) -> Result<u64, OutboxError>;
    /// Up to `max` readings with `from <= seq <= upto`, in `seq` order.
    fn read(&self, from: u64, upto: u64, max: usize) -> Result<Vec<Reading>, OutboxError>;
    /// Deletes every reading with `seq <= upto`.
    fn ack(&self, upto: u64) -> Result<(), OutboxError>;
    fn stats(&self) -> OutboxStats;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended {
    pub stored: u64,
    /// Older readings the `drop_oldest` policy discarded to make room.
    pub dropped: u64,
    /// Readings refused because the buffer is full under `stop_polling`.
    pub refused: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub depth: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// The lowest `seq` still held (every earlier one was acked or dropped).
    pub floor_seq: u64,
    pub acked: u64,
    pub next_seq: u64,
    pub durable: u64,
    pub dropped_total: u64,
    pub oldest_ts_ms: Option<i64>,
    pub full: bool,
    /// Readings appended since the last flush, held in memory until it lands.
    pub unflushed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open the outbox at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the outbox at {path} is damaged: {detail}. Nothing was deleted. To go on without the damaged readings, run `citysense-agent reset-outbox --config FILE`: it moves the outbox aside (kept for inspection) and starts a new one after the last seq used, so the collector counts the gap as dropped readings")]
    Damaged { path: PathBuf, detail: String },
    #[error("outbox at {path}: {source}")]
    Io { path: PathBuf, source: sled::Error },
    #[error("outbox at {path}: record at seq {seq} is unreadable: {detail}")]
    Corrupt { path: PathBuf, seq: u64, detail: String },
}

/// The stored form of one reading: `seq` follows from its place in a chunk.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    sensor: &'a str,
    metric: &'a str,
    ts_ms: i64,
    value: f64,
    quality: Quality,
}

/// Readings are stored in chunks of consecutive seqs, keyed by the first seq;
/// the value is a postcard `Vec<Record>` (a varint count, then the records).
/// sled spends about 1.4 KB of memory per entry under a backlog (measured:
/// a million one-reading entries held 1.4 GB with a 16 MiB cache), so one
/// entry per reading would let an outage grow the agent to gigabytes.
const CHUNK: usize = 1024;

/// Meta keys start with 0xFF; chunk keys are big-endian seqs below 2^56, so
/// the two never mix and chunks sort first.
const META_ACKED: &[u8] = &[0xFF, b'a'];
const META_DROPPED: &[u8] = &[0xFF, b'd'];
/// Present once the store holds chunks; a store without it holding readings
/// was written one reading per entry and is converted when opened.
const META_FORMAT: &[u8] = &[0xFF, b'f'];
const FORMAT_CHUNKS: u64 = 2;
/// The seq after the last one made durable, so that a store whose readings
/// were all dropped still knows which seqs it handed out.
const META_NEXT: &[u8] = &[0xFF, b'n'];
const META_START: &[u8] = &[0xFF];

/// sled's page cache. Its default (1 GiB) is sized for a server, not a gateway.
const CACHE_BYTES: u64 = 8 << 20;

/// A small file beside sled's own, rewritten atomically after every flush:
/// `NEXT_SEQ DURABLE_SEQ ACKED_SEQ`. It is how a damaged sled store is told
/// apart from an empty one: sled recovers a corrupt log by truncating it, and
/// without this record would silently hand out seqs again from 1.
const WATERMARK: &str = "watermark";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermark {
    pub next_seq: u64,
    pub durable: u64,
    pub acked: u64,
}

impl Watermark {
    pub fn read(dir: &Path) -> std::io::Result<Option<Watermark>> {
        let text = match std::fs::read_to_string(dir.join(WATERMARK)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let n: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        match n[..] {
            [next_seq, durable, acked] => Ok(Some(Watermark { next_seq, durable, acked })),
            _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not `NEXT DURABLE ACKED`", dir.join(WATERMARK).display()))),
        }
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let tmp = dir.join(format!("{WATERMARK}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{} {} {}", self.next_seq, self.durable, self.acked)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(WATERMARK))
    }
}

/// A reading with its seq, encoded, waiting for the next flush to be written.
struct Pending {
    seq: u64,
    ts_ms: i64,
    record: Vec<u8>,
}

/// What the index knows of a stored chunk without reading it.
#[derive(Debug, Clone, Copy)]
struct ChunkMeta {
    count: u64,
    bytes: u64,
}

impl ChunkMeta {
    /// Readings of the chunk starting at `first` that are not yet acked.
    fn held(&self, first: u64, acked: u64) -> u64 {
        self.count - (acked + 1).saturating_sub(first).min(self.count)
    }
}

#[derive(Default)]
struct State {
    next_seq: u64,
    acked: u64,
    durable: u64,
    depth: u64,
    bytes: u64,
    dropped_total: u64,
    /// Every stored chunk, by first seq: sizes the outbox without reading it.
    chunks: BTreeMap<u64, ChunkMeta>,
    /// Readings appended since the last successful flush, oldest first. They
    /// reach sled only in `flush`, as whole chunks; a flush that fails (a full
    /// disk) leaves them here, seqs kept, for the next one.
    unflushed: VecDeque<Pending>,
    oldest_ts_ms: Option<i64>,
}

impl State {
    /// Recomputes depth and bytes from the index and the pending readings.
    fn recount(&mut self) {
        self.depth = self.chunks.iter().map(|(f, c)| c.held(*f, self.acked)).sum::<u64>() + self.unflushed.len() as u64;
        self.bytes = self.chunks.values().map(|c| c.bytes).sum::<u64>() + self.unflushed.iter().map(|p| pending_bytes(p)).sum::<u64>();
    }
}

fn pending_bytes(p: &Pending) -> u64 {
    p.record.len() as u64
}

pub struct SledOutbox {
    path: PathBuf,
    max_bytes: u64,
    when_full: WhenFull,
    /// Serialises flushes with each other and with a reopen. Lock order:
    /// `flushing`, then `state`, then `engine`.
    flushing: Mutex<()>,
    state: Mutex<State>,
    /// None only for the instant of a reopen.
    engine: RwLock<Option<Engine>>,
    /// Set by an I/O error: sled stays failed after one (a full disk, say) even
    /// once space returns, so the next call reopens it from disk.
    broken: AtomicBool,
    /// The watermark last written, so an idle agent does not rewrite it.
    last_mark: Mutex<Option<Watermark>>,
}

struct Engine {
    db: sled::Db,
    tree: sled::Tree,
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().unwrap_or([0; 8]))
}

fn read_u64(tree: &sled::Tree, k: &[u8]) -> sled::Result<u64> {
    Ok(tree.get(k)?.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))).unwrap_or(0))
}

fn encode(r: &NewReading) -> Vec<u8> {
    let rec = Record { sensor: &r.sensor, metric: &r.metric, ts_ms: r.ts_ms, value: r.value, quality: r.quality };
    postcard::to_allocvec(&rec).expect("a record always serializes")
}

/// A chunk's value from its records: the same bytes as a postcard `Vec<Record>`.
fn chunk_value<'a>(records: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut v = postcard::to_allocvec(&(records.len() as u64)).expect("a count always serializes");
    records.for_each(|r| v.extend_from_slice(r));
    v
}

fn decode_chunk<'a>(path: &Path, first: u64, v: &'a [u8]) -> Result<Vec<Record<'a>>, OutboxError> {
    postcard::from_bytes(v).map_err(|e| OutboxError::Corrupt { path: path.to_path_buf(), seq: first, detail: e.to_string() })
}

fn chunk_count(v: &[u8]) -> Option<u64> {
    postcard::take_from_bytes::<u64>(v).ok().map(|(n, _)| n)
}

/// Rewrites a store kept one reading per entry (the first format) as chunks.
fn convert_to_chunks(tree: &sled::Tree) -> sled::Result<()> {
    let mut batch = sled::Batch::default();
    let mut run: Vec<(u64, sled::IVec)> = Vec::new();
    let write_run = |run: &mut Vec<(u64, sled::IVec)>, batch: &mut sled::Batch| {
        if let Some((first, _)) = run.first() {
            batch.insert(&key(*first), chunk_value(run.iter().map(|(_, v)| v.as_ref())));
        }
        run.clear();
    };
    for item in tree.range(..META_START) {
        let (k, v) = item?;
        let seq = seq_of(&k);
        batch.remove(k);
        if run.len() == CHUNK || run.last().is_some_and(|(last, _)| last + 1 != seq) {
            write_run(&mut run, &mut batch);
        }
        run.push((seq, v));
    }
    write_run(&mut run, &mut batch);
    batch.insert(META_FORMAT, &FORMAT_CHUNKS.to_be_bytes());
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(())
}

/// sled's background jobs keep its file lock for a moment after the last
/// handle is dropped, so a reopen (after a storage error) waits for them; a
/// second agent on the same directory still fails, after two seconds.
fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    let config = sled::Config::new().path(path).flush_every_ms(None).cache_capacity(CACHE_BYTES);
    let mut tries = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock") => {
                tries += 1;
                if tries == 200 {
                    return Err(sled::Error::Io(e));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Opens sled at `path`, checks it against the watermark and indexes what it holds.
fn load(path: &Path) -> Result<(Engine, State), OutboxError> {
    let open_err = |source: sled::Error| match source {
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => OutboxError::Damaged { path: path.to_path_buf(), detail: source.to_string() },
        source => OutboxError::Open { path: path.to_path_buf(), source },
    };
    let damaged = |detail: String| OutboxError::Damaged { path: path.to_path_buf(), detail };
    std::fs::create_dir_all(path).map_err(|e| open_err(sled::Error::Io(e)))?;
    // sled's own background flush is off: `flush` is called on the configured
    // schedule, which is the one durability knob users set.
    let db = open_sled(path).map_err(open_err)?;
    let tree = db.open_tree("outbox").map_err(open_err)?;
    if read_u64(&tree, META_FORMAT).map_err(open_err)? != FORMAT_CHUNKS {
        convert_to_chunks(&tree).map_err(open_err)?;
    }
    let acked = read_u64(&tree, META_ACKED).map_err(open_err)?;
    let dropped_total = read_u64(&tree, META_DROPPED).map_err(open_err)?;
    let mut chunks = BTreeMap::new();
    for item in tree.range(..META_START) {
        let (k, v) = item.map_err(open_err)?;
        let first = seq_of(&k);
        let count = chunk_count(&v).filter(|n| *n > 0).ok_or_else(|| damaged(format!("the chunk at seq {first} has no readable count")))?;
        chunks.insert(first, ChunkMeta { count, bytes: (k.len() + v.len()) as u64 });
    }
    let last = chunks.iter().next_back().map(|(f, c)| f + c.count - 1).unwrap_or(0);
    let handed_out = read_u64(&tree, META_NEXT).map_err(open_err)?.saturating_sub(1);
    let next_seq = last.max(acked).max(handed_out) + 1;
    let mut st = State { next_seq, acked, durable: next_seq - 1, dropped_total, chunks, ..State::default() };
    st.recount();
    match Watermark::read(path) {
        Ok(Some(w)) if w.durable >= next_seq || w.acked > acked.max(last) => {
            return Err(damaged(format!(
                "it held readings up to seq {} (acknowledged up to {}), but only {} survive up to seq {}",
                w.durable,
                w.acked,
                st.depth,
                next_seq - 1
            )))
        }
        Ok(_) => {}
        Err(e) => return Err(damaged(format!("unreadable watermark: {e}"))),
    }
    let engine = Engine { db, tree };
    refresh_oldest(path, &mut st, &engine);
    tracing::info!(path = %path.display(), depth = st.depth, bytes = st.bytes, next_seq, acked, "outbox opened");
    Ok((engine, st))
}

/// The timestamp of the oldest reading held, for health reports.
fn refresh_oldest(path: &Path, st: &mut State, e: &Engine) {
    let stored = st.chunks.keys().next().and_then(|first| {
        let v = e.tree.get(key(*first)).ok()??;
        let records = decode_chunk(path, *first, &v).ok()?;
        let skip = (st.acked + 1).saturating_sub(*first) as usize;
        records.get(skip).map(|r| r.ts_ms)
    });
    st.oldest_ts_ms = stored.or_else(|| st.unflushed.front().map(|p| p.ts_ms));
}

impl SledOutbox {
    pub fn open(path: &Path, max_bytes: u64, when_full: WhenFull) -> Result<SledOutbox, OutboxError> {
        let (engine, state) = load(path)?;
        Ok(SledOutbox {
            path: path.to_path_buf(),
            max_bytes,
            when_full,
            flushing: Mutex::new(()),
            state: Mutex::new(state),
            engine: RwLock::new(Some(engine)),
            broken: AtomicBool::new(false),
            last_mark: Mutex::new(None),
        })
    }

    /// Maps a sled error, marking the engine for a reopen when it is an I/O one.
    fn io(&self, source: sled::Error) -> OutboxError {
        if matches!(source, sled::Error::Io(_)) {
            self.broken.store(true, Ordering::SeqCst);
        }
        OutboxError::Io { path: self.path.clone(), source }
    }

    /// Reopens sled after an I/O error. What is on disk is kept; readings still
    /// waiting for a flush keep their seqs (none of them was ever sent).
    fn ensure_open(&self) -> Result<(), OutboxError> {
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _flushing = self.flushing.lock().unwrap();
        let mut st = self.state.lock().unwrap();
        let mut engine = self.engine.write().unwrap();
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        // sled locks its files: the failed instance must be gone before the new one opens.
        *engine = None;
        let (fresh, mut disk) = load(&self.path)?;
        let on_disk = disk.next_seq - 1;
        disk.unflushed = std::mem::take(&mut st.unflushed).into_iter().filter(|p| p.seq > on_disk).collect();
        disk.next_seq = disk.next_seq.max(st.next_seq);
        disk.dropped_total = disk.dropped_total.max(st.dropped_total);
        let acked = st.acked.max(disk.acked);
        *st = disk;
        *self.last_mark.lock().unwrap() = None;
        self.broken.store(false, Ordering::SeqCst);
        let result = if acked > st.acked { self.ack_locked(&mut st, &fresh, acked) } else { Ok(()) };
        st.recount();
        refresh_oldest(&self.path, &mut st, &fresh);
        *engine = Some(fresh);
        tracing::warn!(path = %self.path.display(), next_seq = st.next_seq, pending = st.unflushed.len(), "outbox reopened after a storage error");
        result
    }

    fn engine(&self) -> std::sync::RwLockReadGuard<'_, Option<Engine>> {
        self.engine.read().unwrap()
    }

    /// Removes the oldest readings until `need` more bytes fit, stored chunks
    /// first, then pending ones; returns how many.
    fn drop_oldest(&self, e: &Engine, st: &mut State, need: u64) -> Result<u64, OutboxError> {
        let mut batch = sled::Batch::default();
        let mut dropped = 0u64;
        let mut doomed = Vec::new();
        let mut bytes = st.bytes;
        for (first, c) in &st.chunks {
            if bytes + need <= self.max_bytes {
                break;
            }
            bytes -= c.bytes;
            dropped += c.held(*first, st.acked);
            doomed.push(*first);
            batch.remove(&key(*first));
        }
        if !doomed.is_empty() {
            batch.insert(META_DROPPED, &(st.dropped_total + dropped).to_be_bytes());
            batch.insert(META_NEXT, &(st.durable + 1).to_be_bytes());
            e.tree.apply_batch(batch).map_err(|e| self.io(e))?;
            for first in doomed {
                st.chunks.remove(&first);
            }
        }
        while bytes + need > self.max_bytes {
            let Some(p) = st.unflushed.pop_front() else { break };
            bytes -= pending_bytes(&p);
            dropped += 1;
        }
        st.dropped_total += dropped;
        st.depth -= dropped;
        st.bytes = bytes;
        if dropped > 0 {
            refresh_oldest(&self.path, st, e);
        }
        Ok(dropped)
    }

    /// Deletes what `upto` acknowledges, under the state lock.
    fn ack_locked(&self, st: &mut State, e: &Engine, upto: u64) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        let mut gone = Vec::new();
        let mut held_before = 0;
        let mut held_after = 0;
        for (first, c) in st.chunks.range(..=upto) {
            held_before += c.held(*first, st.acked);
            held_after += c.held(*first, upto);
            if c.held(*first, upto) == 0 {
                gone.push(*first);
                batch.remove(&key(*first));
            }
        }
        batch.insert(META_ACKED, &upto.to_be_bytes());
        e.tree.apply_batch(batch).map_err(|e| self.io(e))?;
        for first in gone {
            st.bytes -= st.chunks.remove(&first).map(|c| c.bytes).unwrap_or(0);
        }
        st.acked = upto;
        st.depth -= held_before - held_after;
        refresh_oldest(&self.path, st, e);
        Ok(())
    }
}

/// `citysense-agent reset-outbox`: moves a damaged outbox aside and starts an
/// empty one whose first seq follows every seq the old one handed out. Returns
/// where the old one went and the seq the new one starts after.
pub fn reset(path: &Path) -> Result<(PathBuf, u64), String> {
    let mark = Watermark::read(path).map_err(|e| format!("cannot read the watermark in {}: {e}", path.display()))?;
    let after = mark.map(|m| m.next_seq.saturating_sub(1)).unwrap_or(0);
    let aside = PathBuf::from(format!("{}.damaged-{}", path.display(), shared::now_ms() / 1000));
    std::fs::rename(path, &aside).map_err(|e| format!("cannot move {} to {}: {e}", path.display(), aside.display()))?;
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let db = sled::Config::new().path(path).open().map_err(|e| format!("cannot create a new outbox at {}: {e}", path.display()))?;
    let tree = db.open_tree("outbox").map_err(|e| e.to_string())?;
    tree.insert(META_ACKED, &after.to_be_bytes()).map_err(|e| e.to_string())?;
    tree.insert(META_FORMAT, &FORMAT_CHUNKS.to_be_bytes()).map_err(|e| e.to_string())?;
    db.flush().map_err(|e| e.to_string())?;
    Watermark { next_seq: after + 1, durable: after, acked: after }.write(path).map_err(|e| e.to_string())?;
    Ok((aside, after))
}

impl Outbox for SledOutbox {
    fn append(&self, readings: Vec<NewReading>) -> Result<Appended, OutboxError> {
        self.ensure_open()?;
        let mut out = Appended::default();
        let encoded: Vec<(i64, Vec<u8>)> = readings.iter().map(|r| (r.ts_ms, encode(r))).collect();
        let need: u64 = encoded.iter().map(|(_, v)| v.len() as u64).sum();
        let mut st = self.state.lock().unwrap();
        if st.bytes + need > self.max_bytes {
            match self.when_full {
                WhenFull::DropOldest => {
                    let guard = self.engine();
                    let e = guard.as_ref().expect("engine present outside a reopen");
                    out.dropped = self.drop_oldest(e, &mut st, need)?;
                }
                WhenFull::StopPolling => {
                    out.refused = readings.len() as u64;
                    st.dropped_total += out.refused;
                    return Ok(out);
                }
            }
        }
        let was_empty = st.depth == 0;
        for (ts_ms, record) in encoded {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.unflushed.push_back(Pending { seq, ts_ms, record });
        }
        out.stored = readings.len() as u64;
        st.depth += out.stored;
        st.bytes += need;
        if was_empty {
            st.oldest_ts_ms = st.unflushed.front().map(|p| p.ts_ms);
        }
        Ok(out)
    }

    fn flush(&self) -> Result<u64, OutboxError> {
        self.ensure_open()?;
        let _flushing = self.flushing.lock().unwrap();
        // Pending readings leave the state while they are written and come back
        // if the write fails; `flushing` keeps a reopen from happening meanwhile.
        let (pending, upto, acked, dropped_total) = {
            let mut st = self.state.lock().unwrap();
            (std::mem::take(&mut st.unflushed), st.next_seq - 1, st.acked, st.dropped_total)
        };
        let mut written: Vec<(u64, ChunkMeta)> = Vec::new();
        let result = {
            let guard = self.engine();
            let e = guard.as_ref().expect("engine present outside a reopen");
            let mut batch = sled::Batch::default();
            let mut start = 0;
            while start < pending.len() {
                let mut end = start + 1;
                while end < pending.len() && end - start < CHUNK && pending[end].seq == pending[end - 1].seq + 1 {
                    end += 1;
                }
                let value = chunk_value(pending.range(start..end).map(|p| p.record.as_slice()));
                let first = pending[start].seq;
                written.push((first, ChunkMeta { count: (end - start) as u64, bytes: (8 + value.len()) as u64 }));
                batch.insert(&key(first), value);
                start = end;
            }
            batch.insert(META_DROPPED, &dropped_total.to_be_bytes());
            batch.insert(META_NEXT, &(upto + 1).to_be_bytes());
            e.tree.apply_batch(batch).and_then(|_| e.db.flush()).map_err(|err| self.io(err))
        };
        let mut st = self.state.lock().unwrap();
        if let Err(err) = result {
            let mut back = pending;
            back.append(&mut st.unflushed);
            st.unflushed = back;
            return Err(err);
        }
        // Readings acked while this flush ran (none can be: only durable ones are
        // sent) or dropped from the index meanwhile keep their accounting as is.
        for (first, meta) in written {
            st.bytes += meta.bytes;
            st.chunks.insert(first, meta);
        }
        st.bytes -= pending.iter().map(pending_bytes).sum::<u64>();
        st.durable = st.durable.max(upto);
        drop(st);
        let mark = Watermark { next_seq: upto + 1, durable: upto, acked };
        if self.last_mark.lock().unwrap().replace(mark) != Some(mark) {
            if let Err(err) = mark.write(&self.path) {
                *self.last_mark.lock().unwrap() = None;
                return Err(OutboxError::Io { path: self.path.clone(), source: sled::Error::Io(err) });
            }
        }
        Ok(upto)
    }

    fn read(&self, from: u64, upto: u64, max: usize) -> Result<Vec<Reading>, OutboxError> {
        self.ensure_open()?;
        let from = from.max(self.state.lock().unwrap().acked + 1);
        if from > upto {
            return Ok(Vec::new());
        }
        let guard = self.engine();
        let e = guard.as_ref().expect("engine present outside a reopen");
        // The chunk holding `from` starts at or before it.
        let start = match e.tree.range(..=key(from)).next_back() {
            Some(item) => seq_of(&item.map_err(|e| self.io(e))?.0),
            None => from,
        };
        let mut out = Vec::with_capacity(max.min(4096));
        for item in e.tree.range(key(start)..=key(upto)) {
            let (k, v) = item.map_err(|e| self.io(e))?;
            let first = seq_of(&k);
            for (seq, rec) in (first..).zip(decode_chunk(&self.path, first, &v)?) {
                if seq < from {
                    continue;
                }
                if seq > upto || out.len() == max {
                    return Ok(out);
                }
                out.push(Reading { seq, sensor: rec.sensor.to_string(), metric: rec.metric.to_string(), ts_ms: rec.ts_ms, value: rec.value, quality: rec.quality });
            }
        }
        Ok(out)
    }

    fn ack(&self, upto: u64) -> Result<(), OutboxError> {
        self.ensure_open()?;
        let mut st = self.state.lock().unwrap();
        if upto <= st.acked {
            return Ok(());
        }
        let guard = self.engine();
        let e = guard.as_ref().expect("engine present outside a reopen");
        self.ack_locked(&mut st, e, upto)
    }

    fn stats(&self) -> OutboxStats {
        let st = self.state.lock().unwrap();
        let floor_seq = match st.chunks.keys().next() {
            Some(first) => (*first).max(st.acked + 1),
            None => st.unflushed.front().map(|p| p.seq).unwrap_or(st.next_seq),
        };
        OutboxStats {
            depth: st.depth,
            bytes: st.bytes,
            max_bytes: self.max_bytes,
            floor_seq,
            acked: st.acked,
            next_seq: st.next_seq,
            durable: st.durable,
            dropped_total: st.dropped_total,
            oldest_ts_ms: if st.depth == 0 { None } else { st.oldest_ts_ms },
            full: st.bytes >= self.max_bytes.saturating_sub(self.max_bytes / 100),
            unflushed: st.unflushed.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(n: usize, start_value: f64) -> Vec<NewReading> {
        (0..n)
            .map(|i| NewReading { sensor: "wl-01".into(), metric: "water_level_m".into(), ts_ms: 1_000 + i as i64, value: start_value + i as f64, quality: Quality::Good })
            .collect()
    }

    #[test]
    fn seqs_grow_and_acks_delete_only_up_to_the_acked_seq() {
        let dir = tempfile::tempdir().unwrap();
        let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
        assert_eq!(ob.append(readings(5, 0.0)).unwrap().stored, 5);
        assert_eq!(ob.flush().unwrap(), 5);
        let all = ob.read(1, 5, 100).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(all[3].value, 3.0);
        ob.ack(3).unwrap();
        let s = ob.stats();
        assert_eq!((s.depth, s.floor_seq, s.acked), (2, 4, 3));
        assert_eq!(ob.read(1, 100, 100).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn reopening_keeps_unacked_readings_and_never_reuses_an_acked_seq() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
            ob.append(readings(10, 0.0)).unwrap();
            ob.ack(10).unwrap();
            ob.append(readings(3, 100.0)).unwrap();
            assert_eq!(ob.flush().unwrap(), 13);
        }
        let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
        let left = ob.read(0, u64::MAX >> 8, 100).unwrap();
        assert_eq!(left.iter().map(|r| (r.seq, r.value)).collect::<Vec<_>>(), vec![(11, 100.0), (12, 101.0), (13, 102.0)]);
        ob.ack(13).unwrap();
        ob.flush().unwrap();
        drop(ob);
        let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
        assert_eq!(ob.stats().next_seq, 14);
        assert_eq!(ob.append(readings(1, 0.0)).unwrap().stored, 1);
        ob.flush().unwrap();
        assert_eq!(ob.read(0, 100, 10).unwrap()[0].seq, 14);
    }

    #[test]
    fn drop_oldest_counts_what_it_drops_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let ob = SledOutbox::open(dir.path(), 4096, WhenFull::DropOldest).unwrap();
        let mut dropped = 0;
        for round in 0..20 {
            dropped += ob.append(readings(10, round as f64 * 10.0)).unwrap().dropped;
        }
        let s = ob.stats();
        assert!(s.bytes <= 4096, "{s:?}");
        assert!(dropped > 0);
        assert_eq!(s.dropped_total, dropped);
        assert_eq!(s.depth + dropped, 200);
        assert_eq!(s.floor_seq, dropped + 1, "the oldest went first");
        ob.flush().unwrap();
        let newest = ob.read(0, 1000, 1000).unwrap();
        assert_eq!(newest.last().unwrap().seq, 200);
    }

    #[test]
    fn stop_polling_refuses_and_counts_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let ob = SledOutbox::open(dir.path(), 2048, WhenFull::StopPolling).unwrap();
        let mut refused = 0;
        for _ in 0..10 {
            refused += ob.append(readings(10, 0.0)).unwrap().refused;
        }
        let s = ob.stats();
        assert!(refused > 0);
        assert_eq!(s.depth + refused, 100);
        assert_eq!(s.floor_seq, 1, "nothing already buffered was dropped");
        assert_eq!(s.dropped_total, refused);
    }

    #[test]
    fn a_backlog_reads_back_across_chunks_and_partial_acks_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ob = SledOutbox::open(dir.path(), 64 << 20, WhenFull::DropOldest).unwrap();
            for round in 0..7 {
                ob.append(readings(500, round as f64 * 500.0)).unwrap();
                if round % 3 == 2 {
                    ob.flush().unwrap();
                }
            }
            assert_eq!(ob.flush().unwrap(), 3500);
            assert!(ob.stats().bytes < 3500 * 40, "chunks, not one entry per reading: {:?}", ob.stats());
            ob.ack(1500).unwrap();
            let s = ob.stats();
            assert_eq!((s.depth, s.floor_seq, s.oldest_ts_ms), (2000, 1501, Some(1_000 + 1500 % 500)));
            let got = ob.read(1, 3500, 1200).unwrap();
            assert_eq!(got.len(), 1200);
            assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
            assert_eq!((got[0].seq, got[0].value), (1501, 1500.0));
            assert_eq!(ob.read(3400, 3450, 1000).unwrap().len(), 51);
        }
        let ob = SledOutbox::open(dir.path(), 64 << 20, WhenFull::DropOldest).unwrap();
        let s = ob.stats();
        assert_eq!((s.depth, s.floor_seq, s.next_seq, s.acked), (2000, 1501, 3501, 1500));
        let rest = ob.read(0, u64::MAX >> 8, 10_000).unwrap();
        assert_eq!(rest.iter().map(|r| r.value).collect::<Vec<_>>(), (1500..3500).map(|v| v as f64).collect::<Vec<_>>());
        ob.ack(3500).unwrap();
        assert_eq!((ob.stats().depth, ob.stats().bytes, ob.stats().oldest_ts_ms), (0, 0, None));
    }

    #[test]
    fn a_store_kept_one_reading_per_entry_is_converted_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        {
            // No background flusher thread: it would hold sled's lock past this block.
            let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open().unwrap();
            let tree = db.open_tree("outbox").unwrap();
            for seq in 3..=2000u64 {
                let rec = Record { sensor: "wl-01", metric: "water_level_m", ts_ms: seq as i64, value: seq as f64, quality: Quality::Good };
                tree.insert(key(seq), postcard::to_allocvec(&rec).unwrap()).unwrap();
            }
            tree.remove(key(100)).unwrap();
            tree.insert(META_ACKED, &2u64.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let ob = SledOutbox::open(dir.path(), 64 << 20, WhenFull::DropOldest).unwrap();
        let s = ob.stats();
        assert_eq!((s.depth, s.floor_seq, s.next_seq), (1997, 3, 2001));
        let all = ob.read(0, 5000, 5000).unwrap();
        assert_eq!(all.len(), 1997);
        assert!(all.iter().all(|r| r.value == r.seq as f64 && r.seq != 100));
    }

    #[test]
    fn seqs_handed_out_stay_used_when_every_reading_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
            ob.append(readings(50, 0.0)).unwrap();
            ob.flush().unwrap();
        }
        {
            // A smaller buffer: the next append drops all 50 stored readings.
            let ob = SledOutbox::open(dir.path(), 1_000, WhenFull::DropOldest).unwrap();
            assert_eq!(ob.append(readings(1, 0.0)).unwrap().dropped, 50);
            assert_eq!(ob.stats().depth, 1);
        }
        let ob = SledOutbox::open(dir.path(), 1_000, WhenFull::DropOldest).expect("not mistaken for damage");
        assert_eq!(ob.stats().next_seq, 51);
    }
}
