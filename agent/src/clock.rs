//! The agent's wall clock. Every time the agent stamps — readings, a batch's
//! `sent_ms`, health, status, state — is read through one injected
//! `shared::Clock`, so a test can run a real agent whose clock says 1970 or
//! 2100. Monotonic timers (polling intervals, timeouts) stay on tokio's
//! `Instant`: a wrong wall clock must not change when the agent polls.
//!
//! The agent cannot know the right time, but it can know two things: a
//! reading before the time its source was committed is certainly wrong (the
//! clock was never set), and the collector's time in each ack tells it how far
//! off it is. Both go into status and `health/{gateway}`.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use shared::clock::{Clock, SharedClock};
use shared::wire::ClockState;

/// The time of the commit this agent was built from (epoch ms): a clock
/// reading before it has never been set.
pub const BUILT_MS: i64 = match i64::from_str_radix(env!("CITYSENSE_BUILD_EPOCH_S"), 10) {
    Ok(s) => s * 1000,
    Err(_) => panic!("CITYSENSE_BUILD_EPOCH_S (set by shared/build_rev.rs) is not a number"),
};

/// Offset not yet learned.
const UNKNOWN: i64 = i64::MIN;

/// The clock the agent's components share, and what the collector's acks
/// said about it.
pub struct AgentClock {
    clock: SharedClock,
    offset_ms: AtomicI64,
}

impl AgentClock {
    pub fn new(clock: SharedClock) -> Arc<AgentClock> {
        Arc::new(AgentClock { clock, offset_ms: AtomicI64::new(UNKNOWN) })
    }

    /// An ack stamped `collector_ms` by the collector has just arrived.
    pub fn heard_collector(&self, collector_ms: i64) {
        self.offset_ms.store(collector_ms.saturating_sub(self.now_ms()).max(UNKNOWN + 1), Relaxed);
    }

    pub fn state(&self) -> ClockState {
        let now_ms = self.now_ms();
        let offset = self.offset_ms.load(Relaxed);
        ClockState { now_ms, synced: now_ms >= BUILT_MS, offset_ms: (offset != UNKNOWN).then_some(offset) }
    }
}

impl Clock for AgentClock {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::clock::ManualClock;

    #[test]
    fn a_clock_before_the_build_is_not_synced_and_acks_teach_the_offset() {
        const { assert!(BUILT_MS > 1_700_000_000_000, "the build date is after 2023") };
        let manual = ManualClock::at(5_000);
        let c = AgentClock::new(manual.clone());
        assert_eq!(c.state(), ClockState { now_ms: 5_000, synced: false, offset_ms: None });
        c.heard_collector(1_800_000_000_000);
        assert_eq!(c.state().offset_ms, Some(1_800_000_000_000 - 5_000));
        manual.set(BUILT_MS);
        assert!(c.state().synced);
    }
}
