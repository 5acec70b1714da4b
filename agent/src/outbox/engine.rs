//! The sled engine: opening a store, indexing what it holds, and the few
//! batched writes and ranged reads the queue makes. It exists so that sled's
//! API and its quirks (its file lock, its page cache, its failure modes) are in
//! one file; `queue` above it deals only in seqs and chunks. Every function
//! here blocks on the disk.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use shared::Reading;

use super::chunk::{chunk_count, chunk_value, decode_chunk, key, seq_of, CHUNK};
use super::index::{ChunkMeta, Pending, State};
use super::watermark::{read_u64, META_ACKED, META_DROPPED, META_EPOCH, META_NEXT, META_START};
use super::{migrate, watermark, OutboxError};

/// sled's page cache. Its default (1 GiB) is sized for a server, not a gateway.
const CACHE_BYTES: u64 = 8 << 20;

pub(super) struct Engine {
    db: sled::Db,
    tree: sled::Tree,
    /// sled's log file, fsynced after each of sled's flushes: on Linux sled
    /// 0.34 "flushes" with `sync_file_range`, which neither flushes the disk's
    /// write cache nor writes the file's size, so a power cut can lose what it
    /// called durable (spacejam/sled#1452; every cut of the power-cut suite
    /// lost the whole log before this).
    log: std::fs::File,
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
pub(super) fn load(path: &Path) -> Result<(Engine, State), OutboxError> {
    let open_err = |source: sled::Error| match source {
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => OutboxError::Damaged { path: path.to_path_buf(), detail: source.to_string() },
        source => OutboxError::Open { path: path.to_path_buf(), source },
    };
    let damaged = |detail: String| OutboxError::Damaged { path: path.to_path_buf(), detail };
    let existed = path.is_dir();
    std::fs::create_dir_all(path).map_err(|e| open_err(sled::Error::Io(e)))?;
    // sled's own background flush is off: `flush` is called on the configured
    // schedule, which is the one durability knob users set.
    let db = open_sled(path).map_err(open_err)?;
    let tree = db.open_tree("outbox").map_err(open_err)?;
    migrate::ensure_chunks(&tree).map_err(open_err)?;
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
    let epoch = epoch_of(path, &tree, next_seq).map_err(open_err)?;
    // sled creates its files (`db`, `conf`, `blobs/`) and never fsyncs the
    // directory naming them: until something else does, a power cut can take
    // the whole store, readings made durable included.
    let log = std::fs::File::open(path.join("db")).map_err(|e| open_err(sled::Error::Io(e)))?;
    log.sync_data().map_err(|e| open_err(sled::Error::Io(e)))?;
    sync_dir(path).map_err(|e| open_err(sled::Error::Io(e)))?;
    if !existed {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(|e| open_err(sled::Error::Io(e)))?;
        }
    }
    let mut st = State { epoch, next_seq, acked, durable: next_seq - 1, dropped_total, chunks, ..State::default() };
    st.recount();
    watermark::check(path, next_seq, acked, last, st.depth)?;
    let engine = Engine { db, tree, log };
    engine.refresh_oldest(path, &mut st);
    tracing::info!(path = %path.display(), depth = st.depth, bytes = st.bytes, next_seq, acked, epoch, "outbox opened");
    Ok((engine, st))
}

/// fsync of a directory: the names in it become durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The store's epoch. A store that never handed out a seq (and has no
/// watermark: it is not one that lost everything) is new, and gets a random
/// epoch now; a store made before epochs keeps 0.
fn epoch_of(path: &Path, tree: &sled::Tree, next_seq: u64) -> sled::Result<u64> {
    if tree.get(META_EPOCH)?.is_some() {
        return read_u64(tree, META_EPOCH);
    }
    let fresh = next_seq == 1 && matches!(watermark::Watermark::read(path), Ok(None));
    let epoch = if fresh { shared::auth::random_u64().map_err(sled::Error::Io)? } else { 0 };
    tree.insert(META_EPOCH, &epoch.to_be_bytes())?;
    tree.flush()?;
    Ok(epoch)
}

impl Engine {
    /// The timestamp of the oldest reading held, for health reports.
    pub fn refresh_oldest(&self, path: &Path, st: &mut State) {
        let stored = st.chunks.keys().next().and_then(|first| {
            let v = self.tree.get(key(*first)).ok()??;
            let records = decode_chunk(path, *first, &v).ok()?;
            let skip = (st.acked + 1).saturating_sub(*first) as usize;
            records.get(skip).map(|r| r.ts_ms)
        });
        st.oldest_ts_ms = stored.or_else(|| st.unflushed.front().map(|p| p.ts_ms));
    }

    /// Writes pending readings as chunks of consecutive seqs, with the meta
    /// values, in one batch, and makes it durable. Returns the chunks written.
    pub fn write(&self, pending: &VecDeque<Pending>, dropped_total: u64, next_seq: u64) -> sled::Result<Vec<(u64, ChunkMeta)>> {
        let mut written = Vec::new();
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
        batch.insert(META_NEXT, &next_seq.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        self.log.sync_data()?;
        Ok(written)
    }

    /// Removes whole chunks the `drop_oldest` policy discarded, with the meta values.
    pub fn drop_chunks(&self, firsts: &[u64], dropped_total: u64, next_seq: u64) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for first in firsts {
            batch.remove(&key(*first));
        }
        batch.insert(META_DROPPED, &dropped_total.to_be_bytes());
        batch.insert(META_NEXT, &next_seq.to_be_bytes());
        self.tree.apply_batch(batch)
    }

    /// Records the acked floor and removes the chunks it covers entirely.
    pub fn ack(&self, gone: &[u64], upto: u64) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for first in gone {
            batch.remove(&key(*first));
        }
        batch.insert(META_ACKED, &upto.to_be_bytes());
        self.tree.apply_batch(batch)
    }

    /// Up to `max` readings with `from <= seq <= upto`, in `seq` order; `io`
    /// maps sled's errors.
    pub fn read(&self, path: &Path, from: u64, upto: u64, max: usize, io: impl Fn(sled::Error) -> OutboxError) -> Result<Vec<Reading>, OutboxError> {
        // The chunk holding `from` starts at or before it.
        let start = match self.tree.range(..=key(from)).next_back() {
            Some(item) => seq_of(&item.map_err(&io)?.0),
            None => from,
        };
        let mut out = Vec::with_capacity(max.min(4096));
        for item in self.tree.range(key(start)..=key(upto)) {
            let (k, v) = item.map_err(&io)?;
            let first = seq_of(&k);
            for (seq, rec) in (first..).zip(decode_chunk(path, first, &v)?) {
                if seq < from {
                    continue;
                }
                if seq > upto || out.len() == max {
                    return Ok(out);
                }
                out.push(Reading { seq: shared::Seq(seq), sensor: rec.sensor.into(), metric: rec.metric.into(), ts_ms: rec.ts_ms, value: rec.value, quality: rec.quality });
            }
        }
        Ok(out)
    }
}
