//! What the outbox holds, in memory: every stored chunk's size by first seq,
//! the readings waiting for the next flush, and the counters derived from
//! them. It exists so that sizing the outbox (for `max_bytes`, status and
//! health) never reads sled; `queue` keeps it in step with every write.

use std::collections::{BTreeMap, VecDeque};

/// A reading with its seq, encoded, waiting for the next flush to be written.
pub(super) struct Pending {
    pub seq: u64,
    pub ts_ms: i64,
    pub record: Vec<u8>,
}

impl Pending {
    pub fn bytes(&self) -> u64 {
        self.record.len() as u64
    }
}

/// What the index knows of a stored chunk without reading it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkMeta {
    pub count: u64,
    pub bytes: u64,
}

impl ChunkMeta {
    /// Readings of the chunk starting at `first` that are not yet acked.
    pub fn held(&self, first: u64, acked: u64) -> u64 {
        self.count - (acked + 1).saturating_sub(first).min(self.count)
    }
}

#[derive(Default)]
pub(super) struct State {
    /// The outbox's sequence space (see `watermark::META_EPOCH`).
    pub epoch: u64,
    pub next_seq: u64,
    pub acked: u64,
    pub durable: u64,
    pub depth: u64,
    pub bytes: u64,
    pub dropped_total: u64,
    /// Every stored chunk, by first seq: sizes the outbox without reading it.
    pub chunks: BTreeMap<u64, ChunkMeta>,
    /// Readings appended since the last successful flush, oldest first. They
    /// reach sled only in `flush`, as whole chunks; a flush that fails (a full
    /// disk) leaves them here, seqs kept, for the next one.
    pub unflushed: VecDeque<Pending>,
    /// Sled holds changes no flush has made durable yet (acks, drops): the
    /// next flush must sync even with no reading pending.
    pub unsynced: bool,
    pub oldest_ts_ms: Option<i64>,
}

impl State {
    /// Recomputes depth and bytes from the index and the pending readings.
    pub fn recount(&mut self) {
        self.depth = self.chunks.iter().map(|(f, c)| c.held(*f, self.acked)).sum::<u64>() + self.unflushed.len() as u64;
        self.bytes = self.chunks.values().map(|c| c.bytes).sum::<u64>() + self.unflushed.iter().map(Pending::bytes).sum::<u64>();
    }

    /// The lowest `seq` still held: stored, else pending, else the next one.
    pub fn floor_seq(&self) -> u64 {
        match self.chunks.keys().next() {
            Some(first) => (*first).max(self.acked + 1),
            None => self.unflushed.front().map(|p| p.seq).unwrap_or(self.next_seq),
        }
    }
}
