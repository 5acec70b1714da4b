//! Whether each long-running component is doing its job, for `/healthz`: a
//! component that has stopped (its task ended or panicked), reports a
//! failure (the store refusing writes), or has work waiting and has made no
//! progress for `STALL_MS`, makes the collector unhealthy, by name.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use shared::clock::SharedClock;

/// No progress for this long with work waiting is a stall.
pub const STALL_MS: i64 = 10_000;

/// One component's state, shared between it and `/healthz`.
pub struct Heartbeat {
    pub name: &'static str,
    clock: SharedClock,
    alive: AtomicBool,
    last_progress_ms: AtomicI64,
    /// When it has work waiting, since when (0: none).
    pending_since_ms: AtomicI64,
    failure: Mutex<Option<String>>,
}

/// Held by a component's task: dropped when the task ends, or unwinds from a
/// panic, which marks the component stopped.
pub struct Alive(Arc<Heartbeat>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.store(false, Relaxed);
    }
}

impl Heartbeat {
    pub fn new(name: &'static str, clock: SharedClock) -> Arc<Heartbeat> {
        let now = clock.now_ms();
        Arc::new(Heartbeat { name, clock, alive: AtomicBool::new(true), last_progress_ms: AtomicI64::new(now), pending_since_ms: AtomicI64::new(0), failure: Mutex::new(None) })
    }

    /// The guard the component's task keeps for as long as it runs.
    pub fn alive(self: &Arc<Self>) -> Alive {
        self.alive.store(true, Relaxed);
        Alive(self.clone())
    }

    /// Work done: clears a stall and a reported failure.
    pub fn progress(&self) {
        self.last_progress_ms.store(self.clock.now_ms(), Relaxed);
        *self.failure.lock().unwrap() = None;
    }

    /// Whether work is waiting for it (input queued, a backlog to write).
    pub fn pending(&self, waiting: bool) {
        let now = self.clock.now_ms();
        if !waiting {
            self.pending_since_ms.store(0, Relaxed);
        } else {
            let _ = self.pending_since_ms.compare_exchange(0, now, Relaxed, Relaxed);
        }
    }

    pub fn failing(&self, why: impl Into<String>) {
        *self.failure.lock().unwrap() = Some(why.into());
    }

    /// None when healthy; otherwise what is wrong.
    pub fn problem(&self) -> Option<String> {
        if !self.alive.load(Relaxed) {
            return Some("stopped".into());
        }
        if let Some(f) = self.failure.lock().unwrap().clone() {
            return Some(f);
        }
        let now = self.clock.now_ms();
        let (since, last) = (self.pending_since_ms.load(Relaxed), self.last_progress_ms.load(Relaxed));
        if since != 0 && now - since.max(last) > STALL_MS {
            return Some(format!("no progress for {} s with work waiting", (now - since.max(last)) / 1000));
        }
        None
    }
}

/// Every component's heartbeat.
#[derive(Default, Clone)]
pub struct Liveness(Arc<Mutex<Vec<Arc<Heartbeat>>>>);

impl Liveness {
    pub fn register(&self, name: &'static str, clock: SharedClock) -> Arc<Heartbeat> {
        let h = Heartbeat::new(name, clock);
        self.0.lock().unwrap().push(h.clone());
        h
    }

    /// (component, problem) for each unhealthy one.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        self.0.lock().unwrap().iter().filter_map(|h| h.problem().map(|p| (h.name, p))).collect()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().iter().map(|h| h.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::clock::ManualClock;

    #[test]
    fn stopped_failing_and_stalled_components_are_named_and_recover() {
        let clock = ManualClock::at(1_000);
        let live = Liveness::default();
        let ingest = live.register("ingest", clock.clone());
        let guard = ingest.alive();
        assert!(live.problems().is_empty());
        // Work waiting, no progress: a stall once STALL_MS has passed.
        ingest.pending(true);
        clock.advance(std::time::Duration::from_millis(STALL_MS as u64 - 1));
        assert!(live.problems().is_empty());
        clock.advance(std::time::Duration::from_millis(2));
        assert_eq!(live.problems()[0].0, "ingest");
        ingest.progress();
        assert!(live.problems().is_empty(), "progress clears a stall");
        ingest.failing("store write failed");
        assert_eq!(live.problems(), vec![("ingest", "store write failed".to_string())]);
        ingest.progress();
        drop(guard);
        assert_eq!(live.problems(), vec![("ingest", "stopped".to_string())]);
    }
}
