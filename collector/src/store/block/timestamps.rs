//! A block's timestamps: the cheaper of two packings, both exact.
//!
//! - `DELTAS`: each time minus the one before (the first minus the hour's
//!   start) in packed runs. A poll every second exactly costs the run
//!   header alone; a poll whose period drifts costs the drift.
//! - `GRID`: each time's offset from a grid of the block's typical interval
//!   (the median delta). An agent polls on a fixed schedule and stamps each
//!   reading when its answer comes, a few ms late: the offset is that
//!   latency, while a delta carries two of them. A missed poll shifts the
//!   offsets of the samples after it by one interval, which the run's
//!   minimum absorbs. The interval is the one of a few guesses (the median
//!   delta, it rounded to 10 ms, 100 ms and 1 s, the mean) that packs
//!   smallest: a median off by a millisecond would make the offsets drift.

use super::bits::{packed, put_packed, put_varint, unzigzag, zigzag, Reader};

const DELTAS: u8 = 0;
const GRID: u8 = 1;

pub fn encode(out: &mut Vec<u8>, base_ms: i64, ts: &[i64]) {
    let mut prev = base_ms;
    let deltas: Vec<i64> = ts
        .iter()
        .map(|&t| {
            let d = t.wrapping_sub(prev);
            prev = t;
            d
        })
        .collect();
    let mut by_delta = vec![DELTAS];
    put_packed(&mut by_delta, &deltas);

    let mut best = by_delta;
    for interval in intervals(ts, &deltas) {
        let offsets: Vec<i64> = ts.iter().enumerate().map(|(i, &t)| t.wrapping_sub(base_ms).wrapping_sub((i as i64).wrapping_mul(interval))).collect();
        let mut by_grid = vec![GRID];
        put_varint(&mut by_grid, zigzag(interval));
        put_packed(&mut by_grid, &offsets);
        if by_grid.len() < best.len() {
            best = by_grid;
        }
    }
    out.extend(best);
}

/// Guesses at the poll interval, distinct, for the grid to try.
fn intervals(ts: &[i64], deltas: &[i64]) -> Vec<i64> {
    let mut sorted: Vec<i64> = deltas.iter().skip(1).copied().collect();
    if sorted.is_empty() {
        return vec![0];
    }
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let round = |to: i64| (median.saturating_add(to / 2)).div_euclid(to).saturating_mul(to);
    let span = ts[ts.len() - 1].wrapping_sub(ts[0]);
    let mut out = vec![median, round(10), round(100), round(1000), span / (ts.len() as i64 - 1)];
    out.sort_unstable();
    out.dedup();
    out
}

pub fn decode(r: &mut Reader, base_ms: i64, n: usize) -> Option<Vec<i64>> {
    match r.byte()? {
        DELTAS => {
            let mut prev = base_ms;
            Some(
                packed(r, n)?
                    .into_iter()
                    .map(|d| {
                        prev = prev.wrapping_add(d);
                        prev
                    })
                    .collect(),
            )
        }
        GRID => {
            let interval = unzigzag(r.varint()?);
            Some(packed(r, n)?.into_iter().enumerate().map(|(i, o)| base_ms.wrapping_add((i as i64).wrapping_mul(interval)).wrapping_add(o)).collect())
        }
        _ => None,
    }
}
