//! The collector's dedup tracker fed arbitrary batches at arbitrary times:
//! it must never panic (seqs and floors up to u64::MAX, times anywhere), its
//! ack never moves back, and it never acks beyond the highest seq (or floor)
//! it was shown, nor further in one batch than the jump limit allows.
#![no_main]

use collector::ingest::dedup::{JumpLimit, Tracker};
use libfuzzer_sys::fuzz_target;
use shared::{Batch, Quality, Reading, Seq};

const LIMIT: JumpLimit = JumpLimit { per_second: 1_000, slack: 100_000 };

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in d.iter().skip(i).take(8).enumerate() {
        b[k] = *x;
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let mut t = Tracker::starting_at(Seq(u64_at(data, 0).max(1)), 0, LIMIT);
    let mut now = 0i64;
    let mut shown = t.ack().get();
    // Each 17 bytes: a floor, a first seq offset, a count and a wait.
    for chunk in data.get(8..).unwrap_or_default().chunks(17) {
        let floor = u64_at(chunk, 0).max(1);
        let first = floor.saturating_add(u64_at(chunk, 8) % 1_000_000);
        let count = (*chunk.get(16).unwrap_or(&1) % 8) as u64 + 1;
        now = now.saturating_add((u64_at(chunk, 4) % 100_000) as i64);
        let seqs: Vec<u64> = (0..count).map(|k| first.saturating_add(k)).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let readings = seqs.iter().map(|&s| Reading { seq: Seq(s), sensor: "s".into(), metric: "m".into(), ts_ms: 0, value: 1.0, quality: Quality::Good }).collect();
        let before = t.ack().get();
        if t.accept(Batch::new("gw", floor, readings), now, LIMIT).is_ok() {
            shown = shown.max(*seqs.last().unwrap()).max(floor - 1);
            let ack = t.ack().get();
            assert!(ack >= before, "the ack went back from {before} to {ack}");
            assert!(ack <= shown, "acked {ack} beyond anything shown ({shown})");
        } else {
            assert_eq!(t.ack().get(), before, "a refused batch moved the ack");
        }
    }
});
