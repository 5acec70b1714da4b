//! Exactly-once storage over at-least-once delivery: which readings of a batch
//! are new, and the `seq` to acknowledge.

use std::collections::BTreeSet;

use shared::{Batch, Reading, Seq};

use crate::store::Progress;

/// Per-gateway record of which seqs are stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracker {
    contiguous: u64,
    above: BTreeSet<u64>,
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
    pub fn from_progress(p: &Progress) -> Tracker {
        Tracker { contiguous: p.contiguous, above: p.above.iter().copied().collect() }
    }

    pub fn progress(&self) -> Progress {
        Progress { contiguous: self.contiguous, above: self.above.iter().copied().collect() }
    }

    /// The seq to put in `ack/{gateway}`.
    pub fn ack(&self) -> Seq {
        Seq(self.contiguous)
    }

    /// Splits a batch into new readings and duplicates, and advances the
    /// contiguous mark. Call on a copy and keep it only once the store has
    /// written the fresh readings.
    pub fn accept(&mut self, batch: Batch) -> Accepted {
        let mut out = Accepted::default();
        let floor = batch.floor_seq.get();
        if floor > self.contiguous.saturating_add(1) {
            let gap_end = floor - 1;
            let already = self.above.range(..=gap_end).count() as u64;
            out.skipped = gap_end - self.contiguous - already;
            self.above = self.above.split_off(&floor);
            self.contiguous = gap_end;
        }
        for r in batch.readings {
            if r.seq.get() <= self.contiguous || !self.above.insert(r.seq.get()) {
                out.duplicates += 1;
            } else {
                out.fresh.push(r);
            }
        }
        while self.above.first() == Some(&(self.contiguous + 1)) {
            self.above.pop_first();
            self.contiguous += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Quality;

    fn batch(floor: u64, seqs: &[u64]) -> Batch {
        Batch::new(
            "gw",
            floor,
            seqs.iter().map(|&s| Reading { seq: Seq(s), sensor: "s".into(), metric: "m".into(), ts_ms: s as i64, value: 0.0, quality: Quality::Good }).collect(),
        )
    }

    #[test]
    fn a_replayed_batch_is_all_duplicates_and_acks_the_same_seq() {
        let mut t = Tracker::default();
        let a = t.accept(batch(1, &[1, 2, 3]));
        assert_eq!((a.fresh.len(), a.duplicates, t.ack().get()), (3, 0, 3));
        let b = t.accept(batch(1, &[1, 2, 3]));
        assert_eq!((b.fresh.len(), b.duplicates, t.ack().get()), (0, 3, 3));
    }

    #[test]
    fn out_of_order_batches_hold_the_ack_until_the_gap_fills() {
        let mut t = Tracker::default();
        t.accept(batch(1, &[1, 2]));
        let a = t.accept(batch(1, &[5, 6]));
        assert_eq!((a.fresh.len(), t.ack().get()), (2, 2));
        let b = t.accept(batch(1, &[3, 4, 5]));
        assert_eq!((b.fresh.len(), b.duplicates, t.ack().get()), (2, 1, 6));
        assert_eq!(t.progress().above, Vec::<u64>::new());
    }

    #[test]
    fn a_gap_the_agent_reports_as_dropped_is_skipped_and_counted() {
        let mut t = Tracker::default();
        t.accept(batch(1, &[1, 2]));
        t.accept(batch(1, &[12]));
        let a = t.accept(batch(10, &[10, 11]));
        assert_eq!((a.fresh.len(), a.skipped, t.ack().get()), (2, 7, 12));
    }

    #[test]
    fn progress_round_trips() {
        let mut t = Tracker::default();
        t.accept(batch(1, &[1, 3]));
        assert_eq!(Tracker::from_progress(&t.progress()), t);
    }
}
