//! Exactly-once storage over at-least-once delivery: which readings of a batch
//! are new, and the `seq` to acknowledge, per gateway and outbox epoch.
//!
//! The ack is the highest seq below which everything is stored, or was
//! declared gone by the agent (`floor_seq`). Since a gateway's own batches
//! move it, a broken or hostile one could push it arbitrarily far (a batch
//! at seq 2^62 would make every later honest reading look like a replay). So
//! one batch may move a sequence only as far as the gateway could have
//! produced readings since it was last heard (`JumpLimit`); beyond that the
//! batch is refused whole, nothing stored and nothing acked. All seq
//! arithmetic saturates or is checked: seqs near `u64::MAX` are data, not bugs.

use std::collections::BTreeSet;

use shared::{Batch, Reading, Seq};

use crate::store::Progress;

/// Per-sequence record of which seqs are stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracker {
    contiguous: u64,
    above: BTreeSet<u64>,
    /// When a batch of this sequence was last accepted (collector clock).
    heard_ms: i64,
}

/// How far one batch may move a sequence past its ack: `slack` readings,
/// plus `per_second` for every second since the sequence was last heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpLimit {
    pub per_second: u64,
    pub slack: u64,
}

impl JumpLimit {
    pub fn allowed(&self, elapsed_ms: i64) -> u64 {
        let seconds = (elapsed_ms.max(0) / 1000) as u64;
        self.slack.saturating_add(self.per_second.saturating_mul(seconds))
    }
}

/// A batch that would move its sequence further than plausible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seq {to} is {jump} past acked seq {from}; at most {allowed} readings can have been made since the gateway was last heard")]
pub struct SeqJump {
    pub from: u64,
    pub to: u64,
    pub jump: u64,
    pub allowed: u64,
}

/// What a batch contributes once deduplicated.
#[derive(Debug, Default)]
pub struct Accepted {
    pub fresh: Vec<Reading>,
    pub duplicates: u64,
    /// Seqs the agent reported it no longer holds (dropped under `when_full`)
    /// and that the collector never received.
    pub skipped: u64,
}

impl Tracker {
    /// A sequence first heard now, from a batch whose floor is `floor`. Seqs
    /// below it that the agent could have dropped (within `limit`'s slack)
    /// are counted as dropped when the batch is accepted, as for a known
    /// sequence; a floor beyond that is history this collector never saw
    /// (a new store, an agent older than it), and the sequence starts there.
    pub fn starting_at(floor: Seq, now_ms: i64, limit: JumpLimit) -> Tracker {
        let below = floor.get().saturating_sub(1);
        let contiguous = if below <= limit.allowed(0) { 0 } else { below };
        Tracker { contiguous, above: BTreeSet::new(), heard_ms: now_ms }
    }

    /// `loaded_ms` stands in for progress written before heard times were kept.
    pub fn from_progress(p: &Progress, loaded_ms: i64) -> Tracker {
        let heard_ms = if p.heard_ms == 0 { loaded_ms } else { p.heard_ms };
        Tracker { contiguous: p.contiguous, above: p.above.iter().copied().collect(), heard_ms }
    }

    pub fn progress(&self) -> Progress {
        Progress { contiguous: self.contiguous, above: self.above.iter().copied().collect(), heard_ms: self.heard_ms }
    }

    /// The seq to put in `ack/{gateway}`.
    pub fn ack(&self) -> Seq {
        Seq(self.contiguous)
    }

    pub fn heard_ms(&self) -> i64 {
        self.heard_ms
    }

    /// Seqs stored above the ack, waiting for the gap below them.
    pub fn waiting(&self) -> usize {
        self.above.len()
    }

    /// Splits a batch into new readings and duplicates, and advances the
    /// contiguous mark; or refuses it whole when it jumps too far. Call on a
    /// copy and keep it only once the store has written the fresh readings.
    pub fn accept(&mut self, batch: Batch, now_ms: i64, limit: JumpLimit) -> Result<Accepted, SeqJump> {
        let floor = batch.floor_seq.get();
        let highest = batch.readings.last().map_or(floor, |r| r.seq.get()).max(floor.saturating_sub(1));
        let allowed = limit.allowed(now_ms.saturating_sub(self.heard_ms));
        let jump = highest.saturating_sub(self.contiguous);
        if jump > allowed {
            return Err(SeqJump { from: self.contiguous, to: highest, jump, allowed });
        }
        let mut out = Accepted::default();
        if floor > self.contiguous.saturating_add(1) {
            let gap_end = floor - 1;
            let already = self.above.range(..=gap_end).count() as u64;
            out.skipped = gap_end - self.contiguous - already;
            self.above = self.above.split_off(&floor);
            self.contiguous = gap_end;
        }
        for r in batch.readings {
            let seq = r.seq.get();
            if seq <= self.contiguous || !self.above.insert(seq) {
                out.duplicates += 1;
            } else {
                out.fresh.push(r);
            }
        }
        while let Some(next) = self.contiguous.checked_add(1).filter(|n| self.above.first() == Some(n)) {
            self.above.pop_first();
            self.contiguous = next;
        }
        self.heard_ms = self.heard_ms.max(now_ms);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Quality;

    const LIMIT: JumpLimit = JumpLimit { per_second: 100, slack: 1_000 };

    fn batch(floor: u64, seqs: &[u64]) -> Batch {
        Batch::new(
            "gw",
            floor,
            seqs.iter().map(|&s| Reading { seq: Seq(s), sensor: "s".into(), metric: "m".into(), ts_ms: s as i64, value: 0.0, quality: Quality::Good }).collect(),
        )
    }

    fn accept(t: &mut Tracker, b: Batch) -> Accepted {
        t.accept(b, 0, LIMIT).expect("plausible batch")
    }

    #[test]
    fn a_replayed_batch_is_all_duplicates_and_acks_the_same_seq() {
        let mut t = Tracker::default();
        let a = accept(&mut t, batch(1, &[1, 2, 3]));
        assert_eq!((a.fresh.len(), a.duplicates, t.ack().get()), (3, 0, 3));
        let b = accept(&mut t, batch(1, &[1, 2, 3]));
        assert_eq!((b.fresh.len(), b.duplicates, t.ack().get()), (0, 3, 3));
    }

    #[test]
    fn out_of_order_batches_hold_the_ack_until_the_gap_fills() {
        let mut t = Tracker::default();
        accept(&mut t, batch(1, &[1, 2]));
        let a = accept(&mut t, batch(1, &[5, 6]));
        assert_eq!((a.fresh.len(), t.ack().get()), (2, 2));
        let b = accept(&mut t, batch(1, &[3, 4, 5]));
        assert_eq!((b.fresh.len(), b.duplicates, t.ack().get()), (2, 1, 6));
        assert_eq!(t.progress().above, Vec::<u64>::new());
    }

    #[test]
    fn a_gap_the_agent_reports_as_dropped_is_skipped_and_counted() {
        let mut t = Tracker::default();
        accept(&mut t, batch(1, &[1, 2]));
        accept(&mut t, batch(1, &[12]));
        let a = accept(&mut t, batch(10, &[10, 11]));
        assert_eq!((a.fresh.len(), a.skipped, t.ack().get()), (2, 7, 12));
    }

    #[test]
    fn a_jump_past_what_the_gateway_could_have_made_is_refused_and_changes_nothing() {
        let mut t = Tracker::default();
        accept(&mut t, batch(1, &[1, 2]));
        let before = t.clone();
        // The poisoning seen on the demo: a floor at 2^62.
        let e = t.accept(batch(1 << 62, &[1 << 62]), 0, LIMIT).unwrap_err();
        assert_eq!((e.from, e.to, e.allowed), (2, 1 << 62, 1_000));
        assert_eq!(t, before);
        // A reading far ahead without a floor move is refused too.
        assert!(t.accept(batch(1, &[3, 5_000]), 0, LIMIT).is_err());
        assert!(t.accept(batch(u64::MAX, &[u64::MAX]), 0, LIMIT).is_err());
        assert_eq!(t, before);
        // The same jump is plausible after long enough a silence: 100/s for 60 s + 1,000.
        assert!(t.accept(batch(7_000, &[7_000]), 60_000, LIMIT).is_ok());
        assert_eq!(t.ack().get(), 7_000);
    }

    #[test]
    fn seqs_at_the_end_of_the_space_neither_overflow_nor_wrap() {
        let mut t = Tracker::starting_at(Seq(u64::MAX - 1), 0, LIMIT);
        let a = accept(&mut t, batch(u64::MAX - 1, &[u64::MAX - 1, u64::MAX]));
        assert_eq!((a.fresh.len(), t.ack().get()), (2, u64::MAX));
        let b = accept(&mut t, batch(u64::MAX, &[u64::MAX]));
        assert_eq!((b.duplicates, t.ack().get()), (1, u64::MAX));
    }

    #[test]
    fn a_new_sequence_counts_plausible_drops_below_its_floor_and_starts_above_the_rest() {
        let mut t = Tracker::starting_at(Seq(5_000_000), 0, LIMIT);
        let a = accept(&mut t, batch(5_000_000, &[5_000_000, 5_000_001]));
        assert_eq!((a.fresh.len(), a.skipped, t.ack().get()), (2, 0, 5_000_001));
        let mut t = Tracker::starting_at(Seq(11), 0, LIMIT);
        let a = accept(&mut t, batch(11, &[11]));
        assert_eq!((a.skipped, t.ack().get()), (10, 11), "an agent whose first ten readings were dropped before it was heard");
    }

    #[test]
    fn progress_round_trips() {
        let mut t = Tracker::default();
        t.accept(batch(1, &[1, 3]), 5, LIMIT).unwrap();
        assert_eq!(Tracker::from_progress(&t.progress(), 99), t);
        // Progress written before heard times were kept counts as heard at load.
        let old = Progress { heard_ms: 0, ..t.progress() };
        assert_eq!(Tracker::from_progress(&old, 99).heard_ms(), 99);
    }
}

/// The delivery invariants under arbitrary interleavings of an honest agent's
/// batches (sliced, replayed, reordered, with drops it declares) and hostile
/// ones (floors and seqs anywhere up to `u64::MAX`): acked ⊆ stored ∪
/// dropped, every honest reading stored exactly once, the ack reaching the
/// last honest seq, drops counted exactly once.
#[cfg(test)]
mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use shared::{Batch, Quality, Reading, Seq};

    use super::{JumpLimit, Tracker};

    const LIMIT: JumpLimit = JumpLimit { per_second: 10, slack: 1_000 };

    #[derive(Debug, Clone)]
    enum Op {
        /// Seqs `from..from+len` of the honest readings (clamped), `wait_ms` after the last op.
        Honest { from: u64, len: u64, wait_ms: i64 },
        /// A batch with this floor and readings at `floor + offsets`, saturating.
        Hostile { floor: u64, offsets: Vec<u64>, wait_ms: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        let far = prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(1u64 << 62), 1_000_000u64..u64::MAX / 2];
        prop_oneof![
            3 => (0u64..80, 1u64..20, 0i64..2_000).prop_map(|(from, len, wait_ms)| Op::Honest { from, len, wait_ms }),
            1 => (far, proptest::collection::vec(0u64..5, 1..4), 0i64..2_000).prop_map(|(floor, offsets, wait_ms)| Op::Hostile { floor, offsets, wait_ms }),
        ]
    }

    fn reading(seq: u64) -> Reading {
        Reading { seq: Seq(seq), sensor: "s".into(), metric: "m".into(), ts_ms: 0, value: seq as f64, quality: Quality::Good }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn honest_readings_are_stored_once_and_nothing_unreceived_is_acked(n in 10u64..80, dropped in 0u64..10, ops in proptest::collection::vec(op(), 0..40)) {
            let floor = dropped + 1;
            let mut now = 1_000_000i64;
            // The honest agent's first batch starts the sequence (a hostile
            // one would need the new outbox's random epoch before it is sent).
            let mut t = Tracker::starting_at(Seq(floor), now, LIMIT);
            let mut stored: BTreeMap<u64, u32> = BTreeMap::new();
            let mut skipped = 0;
            let mut accept = |t: &mut Tracker, b: Batch, now: i64, stored: &mut BTreeMap<u64, u32>| {
                if let Ok(a) = t.accept(b, now, LIMIT) {
                    skipped += a.skipped;
                    for r in a.fresh {
                        *stored.entry(r.seq.get()).or_default() += 1;
                    }
                }
            };
            let honest = |from: u64, len: u64| {
                let first = (floor + from).min(n);
                let last = (first + len - 1).min(n);
                Batch::new("gw", floor, (first..=last).map(reading).collect())
            };
            accept(&mut t, honest(0, 1), now, &mut stored);
            for op in ops {
                match op {
                    Op::Honest { from, len, wait_ms } => {
                        now += wait_ms;
                        accept(&mut t, honest(from, len), now, &mut stored);
                    }
                    Op::Hostile { floor: f, offsets, wait_ms } => {
                        now += wait_ms;
                        let seqs: BTreeSet<u64> = offsets.iter().map(|o| f.saturating_add(*o)).collect();
                        accept(&mut t, Batch::new("gw", f, seqs.into_iter().map(reading).collect()), now, &mut stored);
                    }
                }
                // Acked ⊆ stored ∪ dropped, at every step.
                let ack = t.ack().get();
                prop_assert!(ack <= n, "acked {ack} beyond the last honest seq {n}");
                prop_assert!((floor..=ack).all(|s| stored.contains_key(&s)), "acked {ack} with a seq below it never stored");
            }
            // The agent resends whatever it holds until acked.
            accept(&mut t, Batch::new("gw", floor, (floor..=n).map(reading).collect()), now, &mut stored);
            prop_assert_eq!(t.ack().get(), n);
            prop_assert!(stored.values().all(|c| *c == 1), "a reading stored twice");
            prop_assert_eq!(stored.keys().copied().collect::<Vec<_>>(), (floor..=n).collect::<Vec<_>>());
            prop_assert_eq!(skipped, dropped);
        }
    }
}
