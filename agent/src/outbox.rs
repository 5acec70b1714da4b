//! `Outbox`: the agent's durable queue. A reading gets its `seq` here and stays
//! until the collector acknowledges it (acks delete, never before).
//!
//! Durability is batched: `append` writes to sled's page cache and `flush`
//! (run every `buffer.flush`) makes everything appended so far durable. The
//! uplink only ever sends readings at or below the last flushed `seq`, so a
//! `seq` the collector has seen can never be handed out again after a crash.

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

/// The stored form: `seq` is the key, so it is not repeated in the value.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    sensor: &'a str,
    metric: &'a str,
    ts_ms: i64,
    value: f64,
    quality: Quality,
}

/// Meta keys start with 0xFF; reading keys are big-endian seqs below 2^56, so
/// the two never mix and readings sort first.
const META_ACKED: &[u8] = &[0xFF, b'a'];
const META_DROPPED: &[u8] = &[0xFF, b'd'];
const META_START: &[u8] = &[0xFF];

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

#[derive(Default)]
struct State {
    next_seq: u64,
    acked: u64,
    durable: u64,
    depth: u64,
    bytes: u64,
    dropped_total: u64,
    /// Readings appended since the last successful flush, with their seqs.
    /// sled may accept a write in memory and fail to put it on disk (a full
    /// disk); until a flush succeeds these are kept, to be appended again
    /// should the store have to be reopened.
    unflushed: Vec<(u64, NewReading)>,
}


pub struct SledOutbox {
    path: PathBuf,
    max_bytes: u64,
    when_full: WhenFull,
    /// Lock order: `state` before `engine`.
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

/// Opens sled at `path`, checks it against the watermark and counts what it holds.
fn load(path: &Path) -> Result<(Engine, State), OutboxError> {
    let open_err = |source: sled::Error| match source {
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => OutboxError::Damaged { path: path.to_path_buf(), detail: source.to_string() },
        source => OutboxError::Open { path: path.to_path_buf(), source },
    };
    std::fs::create_dir_all(path).map_err(|e| open_err(sled::Error::Io(e)))?;
    // sled's own background flush is off: `flush` is called on the configured
    // schedule, which is the one durability knob users set.
    let db = sled::Config::new().path(path).flush_every_ms(None).open().map_err(open_err)?;
    let tree = db.open_tree("outbox").map_err(open_err)?;
    let acked = read_u64(&tree, META_ACKED).map_err(open_err)?;
    let dropped_total = read_u64(&tree, META_DROPPED).map_err(open_err)?;
    let (mut depth, mut bytes, mut last) = (0u64, 0u64, 0u64);
    for item in tree.range(..META_START) {
        let (k, v) = item.map_err(open_err)?;
        depth += 1;
        bytes += (k.len() + v.len()) as u64;
        last = seq_of(&k);
    }
    let next_seq = last.max(acked) + 1;
    let damaged = |detail: String| OutboxError::Damaged { path: path.to_path_buf(), detail };
    match Watermark::read(path) {
        Ok(Some(w)) if w.durable >= next_seq || w.acked > acked.max(last) => {
            return Err(damaged(format!(
                "it held readings up to seq {} (acknowledged up to {}), but only {} survive up to seq {}",
                w.durable,
                w.acked,
                depth,
                next_seq - 1
            )))
        }
        Ok(_) => {}
        Err(e) => return Err(damaged(format!("unreadable watermark: {e}"))),
    }
    tracing::info!(path = %path.display(), depth, bytes, next_seq, acked, "outbox opened");
    Ok((Engine { db, tree }, State { next_seq, acked, durable: next_seq - 1, depth, bytes, dropped_total, unflushed: Vec::new() }))
}

impl SledOutbox {
    pub fn open(path: &Path, max_bytes: u64, when_full: WhenFull) -> Result<SledOutbox, OutboxError> {
        let (engine, state) = load(path)?;
        Ok(SledOutbox {
            path: path.to_path_buf(),
            max_bytes,
            when_full,
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

    /// Reopens sled after an I/O error. Readings appended since the last
    /// successful flush were never sent (the uplink only sends durable ones), so
    /// their seqs may be handed out again; everything durable is kept.
    fn ensure_open(&self) -> Result<(), OutboxError> {
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut st = self.state.lock().unwrap();
        let mut engine = self.engine.write().unwrap();
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        // sled locks its files: the failed instance must be gone before the new one opens.
        *engine = None;
        let (fresh, disk) = load(&self.path)?;
        let dropped_total = st.dropped_total.max(disk.dropped_total);
        let old = std::mem::replace(&mut *st, State { dropped_total, ..disk });
        // What the failed instance accepted but never wrote goes in again, in order.
        let lost: Vec<NewReading> = old.unflushed.into_iter().filter(|(seq, _)| *seq >= st.next_seq).map(|(_, r)| r).collect();
        let again = lost.len();
        *self.last_mark.lock().unwrap() = None;
        self.broken.store(false, Ordering::SeqCst);
        let result = self.append_locked(&mut st, &fresh, lost.clone());
        if result.is_err() {
            // Still failing: keep them for the next reopen (a seq above any real one).
            st.unflushed.extend(lost.into_iter().map(|r| (u64::MAX, r)));
        }
        *engine = Some(fresh);
        tracing::warn!(path = %self.path.display(), next_seq = st.next_seq, again, "outbox reopened after a storage error");
        result.map(|_| ())
    }

    /// Appends under the state lock, onto `e`. An error leaves the readings
    /// unappended (nothing of a failed batch is kept by sled).
    fn append_locked(&self, st: &mut State, e: &Engine, readings: Vec<NewReading>) -> Result<Appended, OutboxError> {
        let mut out = Appended::default();
        let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(readings.len());
        let mut need = 0u64;
        for r in &readings {
            let rec = Record { sensor: &r.sensor, metric: &r.metric, ts_ms: r.ts_ms, value: r.value, quality: r.quality };
            let v = postcard::to_allocvec(&rec).expect("a record always serializes");
            need += (8 + v.len()) as u64;
            encoded.push(v);
        }
        if st.bytes + need > self.max_bytes {
            match self.when_full {
                WhenFull::DropOldest => out.dropped = self.drop_oldest(e, st, need)?,
                WhenFull::StopPolling => {
                    out.refused = readings.len() as u64;
                    st.dropped_total += out.refused;
                    e.tree.insert(META_DROPPED, &st.dropped_total.to_be_bytes()).map_err(|e| self.io(e))?;
                    return Ok(out);
                }
            }
        }
        let mut batch = sled::Batch::default();
        for v in encoded {
            batch.insert(&key(st.next_seq + out.stored), v);
            out.stored += 1;
        }
        e.tree.apply_batch(batch).map_err(|e| self.io(e))?;
        let first = st.next_seq;
        st.next_seq += out.stored;
        st.depth += out.stored;
        st.bytes += need;
        st.unflushed.extend((first..).zip(readings));
        Ok(out)
    }

    fn engine(&self) -> std::sync::RwLockReadGuard<'_, Option<Engine>> {
        self.engine.read().unwrap()
    }

    /// Removes the oldest readings until `need` more bytes fit; returns how many.
    fn drop_oldest(&self, e: &Engine, st: &mut State, need: u64) -> Result<u64, OutboxError> {
        let mut batch = sled::Batch::default();
        let mut dropped = 0u64;
        let mut freed = 0u64;
        for item in e.tree.range(..META_START) {
            if st.bytes - freed + need <= self.max_bytes {
                break;
            }
            let (k, v) = item.map_err(|e| self.io(e))?;
            freed += (k.len() + v.len()) as u64;
            dropped += 1;
            batch.remove(k);
        }
        if dropped > 0 {
            st.dropped_total += dropped;
            batch.insert(META_DROPPED, &st.dropped_total.to_be_bytes());
            e.tree.apply_batch(batch).map_err(|e| self.io(e))?;
            st.depth -= dropped;
            st.bytes -= freed;
        }
        Ok(dropped)
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
    db.flush().map_err(|e| e.to_string())?;
    Watermark { next_seq: after + 1, durable: after, acked: after }.write(path).map_err(|e| e.to_string())?;
    Ok((aside, after))
}

impl Outbox for SledOutbox {
    fn append(&self, readings: Vec<NewReading>) -> Result<Appended, OutboxError> {
        self.ensure_open()?;
        let mut st = self.state.lock().unwrap();
        let guard = self.engine();
        let e = guard.as_ref().expect("engine present outside a reopen");
        self.append_locked(&mut st, e, readings)
    }

    fn flush(&self) -> Result<u64, OutboxError> {
        self.ensure_open()?;
        let (upto, acked) = {
            let st = self.state.lock().unwrap();
            (st.next_seq - 1, st.acked)
        };
        {
            let guard = self.engine();
            let e = guard.as_ref().expect("engine present outside a reopen");
            e.db.flush().map_err(|e| self.io(e))?;
        }
        let mark = Watermark { next_seq: upto + 1, durable: upto, acked };
        if self.last_mark.lock().unwrap().replace(mark) != Some(mark) {
            if let Err(err) = mark.write(&self.path) {
                *self.last_mark.lock().unwrap() = None;
                return Err(OutboxError::Io { path: self.path.clone(), source: sled::Error::Io(err) });
            }
        }
        let mut st = self.state.lock().unwrap();
        st.durable = st.durable.max(upto).min(st.next_seq - 1);
        st.unflushed.retain(|(seq, _)| *seq > upto);
        Ok(st.durable)
    }

    fn read(&self, from: u64, upto: u64, max: usize) -> Result<Vec<Reading>, OutboxError> {
        if from > upto {
            return Ok(Vec::new());
        }
        self.ensure_open()?;
        let guard = self.engine();
        let e = guard.as_ref().expect("engine present outside a reopen");
        let mut out = Vec::with_capacity(max.min(4096));
        for item in e.tree.range(key(from)..=key(upto)).take(max) {
            let (k, v) = item.map_err(|e| self.io(e))?;
            let seq = seq_of(&k);
            let rec: Record = postcard::from_bytes(&v)
                .map_err(|e| OutboxError::Corrupt { path: self.path.clone(), seq, detail: e.to_string() })?;
            out.push(Reading { seq, sensor: rec.sensor.to_string(), metric: rec.metric.to_string(), ts_ms: rec.ts_ms, value: rec.value, quality: rec.quality });
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
        let mut batch = sled::Batch::default();
        let (mut n, mut freed) = (0u64, 0u64);
        for item in e.tree.range(..=key(upto)) {
            let (k, v) = item.map_err(|e| self.io(e))?;
            freed += (k.len() + v.len()) as u64;
            n += 1;
            batch.remove(k);
        }
        batch.insert(META_ACKED, &upto.to_be_bytes());
        e.tree.apply_batch(batch).map_err(|e| self.io(e))?;
        st.acked = upto;
        st.depth -= n;
        st.bytes -= freed;
        Ok(())
    }

    fn stats(&self) -> OutboxStats {
        let st = self.state.lock().unwrap();
        let guard = self.engine();
        let first = guard.as_ref().and_then(|e| e.tree.range(..META_START).next()).and_then(|r| r.ok());
        let floor_seq = first.as_ref().map(|(k, _)| seq_of(k)).unwrap_or(st.next_seq);
        let oldest_ts_ms = first.and_then(|(_, v)| postcard::from_bytes::<Record>(&v).ok().map(|r| r.ts_ms));
        OutboxStats {
            depth: st.depth,
            bytes: st.bytes,
            max_bytes: self.max_bytes,
            floor_seq,
            acked: st.acked,
            next_seq: st.next_seq,
            durable: st.durable,
            dropped_total: st.dropped_total,
            oldest_ts_ms,
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
}
