//! The partitions of the batch log this collector holds now, as
//! `super::assignment` takes and lets go of them: what its rule engine
//! answers for (`crate::rules::Scope`), and the partition anything about a
//! gateway belongs in.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use super::partition::Partitions;

/// The partitions this collector holds now: what its rule engine answers
/// for (`crate::rules::Scope`).
pub struct Holdings {
    partitions: Partitions,
    held: Vec<AtomicBool>,
    /// When each partition was last taken (ms since the epoch).
    taken_ms: Vec<AtomicI64>,
}

impl Holdings {
    pub fn new(partitions: Partitions) -> Arc<Holdings> {
        let n = partitions.count();
        Arc::new(Holdings { partitions, held: (0..n).map(|_| AtomicBool::new(false)).collect(), taken_ms: (0..n).map(|_| AtomicI64::new(i64::MIN)).collect() })
    }

    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    pub fn holds(&self, p: u32) -> bool {
        self.held[p as usize].load(Relaxed)
    }

    /// The partitions held, in order.
    pub fn held(&self) -> Vec<u32> {
        (0..self.partitions.count()).filter(|p| self.holds(*p)).collect()
    }

    /// The partition of what is about `gateway`; partition 0 for a sensor
    /// whose gateway is not known.
    pub fn of(&self, gateway: Option<&str>) -> u32 {
        gateway.map_or(0, |g| self.partitions.of(g))
    }

    pub(super) fn set(&self, p: u32, held: bool) {
        if held {
            self.taken_ms[p as usize].store(shared::now_ms(), Relaxed);
        }
        self.held[p as usize].store(held, Relaxed);
    }

    pub(super) fn clear(&self) {
        for h in &self.held {
            h.store(false, Relaxed);
        }
    }
}

impl crate::rules::Scope for Holdings {
    fn gateway(&self, id: &str) -> bool {
        self.holds(self.partitions.of(id))
    }

    fn unplaced(&self) -> bool {
        self.holds(0)
    }

    fn given_ms(&self, gateway: Option<&str>) -> i64 {
        self.taken_ms[self.of(gateway) as usize].load(Relaxed)
    }
}
