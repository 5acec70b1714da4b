//! `Outbox`: the agent's durable queue. A reading gets its `seq` here and stays
//! until the collector acknowledges it: acks delete, never before. The outbox
//! owns the readings between intake and uplink and the seq bookkeeping that
//! makes "nothing lost, nothing twice" hold across crashes; it knows nothing
//! of MQTT or of how the collector stores readings.
//!
//! Durability is a group commit: `append` holds readings in memory and `flush`
//! writes all of them to sled as chunks and makes them durable with one fsync.
//! The agent flushes as soon as readings arrive; readings appended while a
//! flush runs wait for the next one, which covers them all, so batches grow by
//! themselves under load and an idle agent pays one fsync per poll. A source
//! waits for the flush covering its readings (`append` says their last seq)
//! before it counts them as taken. The uplink only ever sends readings at or
//! below the last flushed `seq`, so a `seq` the collector has seen can never
//! be handed out again after a crash, and a crash loses at most readings whose
//! flush had not returned.
//!
//! Every call may touch the disk: async code calls them through
//! `tokio::task::spawn_blocking`, never on a runtime thread (`stats` alone is
//! memory only).
//!
//! Files: `queue` (the `Outbox` on sled, locking and accounting) · `engine`
//! (the sled handle: open, load, batched writes and reads) · `chunk` (how
//! readings are packed per sled entry) · `index` (what is held, in memory) ·
//! `watermark` (seqs handed out, durable and acked, and the damage check) ·
//! `migrate` (the old one-entry-per-reading format) · `reset` (`reset-outbox`).

mod chunk;
mod engine;
mod index;
mod migrate;
mod queue;
mod reset;
mod watermark;

use std::path::PathBuf;

use shared::Reading;

use crate::source::NewReading;

pub use queue::SledOutbox;
pub use reset::{reset, ResetError};
pub use watermark::Watermark;

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
    /// The seq of the last reading stored (they got consecutive seqs ending
    /// here): they are durable once `flush` has returned this seq or more.
    pub last_seq: u64,
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
    /// The outbox's sequence space, sent with every batch and checked on every ack.
    pub epoch: u64,
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
