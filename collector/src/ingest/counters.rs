//! What ingest has done since start, for `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::RwLock;

use super::Rejection;

#[derive(Debug, Default)]
pub struct Counters {
    pub batches: AtomicU64,
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub duplicate: AtomicU64,
    pub skipped: AtomicU64,
    /// Readings refused because their gateway does not own their sensor
    /// (acknowledged, never stored).
    pub sensor_not_owned: AtomicU64,
    /// Readings with an implausible time moved onto the collector's clock.
    pub clock_skew: AtomicU64,
    pub store_errors: AtomicU64,
    /// Writes made durable, each one sync for every group queued behind the
    /// last (group commit): readings stored over these is what a sync carries.
    pub commits: AtomicU64,
    /// Batches of stored readings the alert engine could not take in time.
    pub rules_lagged: AtomicU64,
    /// The readings in those batches: stored and fed, never evaluated.
    pub rules_lagged_readings: AtomicU64,
    /// Rejected batches by reason.
    pub rejected: RwLock<BTreeMap<Rejection, u64>>,
}

impl Counters {
    pub fn reject(&self, reason: Rejection) {
        *self.rejected.write().unwrap().entry(reason).or_default() += 1;
    }
}
