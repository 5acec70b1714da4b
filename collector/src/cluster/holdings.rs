//! The partitions of the batch log this collector holds now, as
//! `super::assignment` takes and lets go of them: what its rule engine
//! answers for (`crate::rules::Scope`), and the partition anything about a
//! gateway belongs in; and the collectors it shares the log with, whose
//! stores hold the rest of the city's history (`super::history`).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use super::partition::Partitions;

/// The partitions this collector holds now: what its rule engine answers
/// for (`crate::rules::Scope`).
pub struct Holdings {
    partitions: Partitions,
    held: Vec<AtomicBool>,
    /// When each partition was last taken (ms since the epoch).
    taken_ms: Vec<AtomicI64>,
    /// The collectors sharing the log, this one included, as last counted.
    members: RwLock<Vec<String>>,
    /// Whether others than this one were counted (read for every batch).
    others: AtomicBool,
}

impl Holdings {
    pub fn new(partitions: Partitions) -> Arc<Holdings> {
        let n = partitions.count();
        Arc::new(Holdings {
            partitions,
            held: (0..n).map(|_| AtomicBool::new(false)).collect(),
            taken_ms: (0..n).map(|_| AtomicI64::new(i64::MIN)).collect(),
            members: RwLock::default(),
            others: AtomicBool::new(false),
        })
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

    /// The collectors sharing the log, by name, as last counted.
    pub fn members(&self) -> Vec<String> {
        self.members.read().unwrap().clone()
    }

    /// Whether other collectors share the log, as last counted.
    pub fn sharing(&self) -> bool {
        self.others.load(Relaxed)
    }

    pub(super) fn counted(&self, members: Vec<String>, me: &str) {
        self.others.store(members.iter().any(|m| m != me), Relaxed);
        *self.members.write().unwrap() = members;
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
