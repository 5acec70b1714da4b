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
//!
//! Each also in patched runs (`bits::put_patched`), whichever is smallest:
//! one poll in 100 answered late (up to 200 ms) widened about half the runs
//! of a 1 s series from 4 bits a timestamp to 8. Blocks written before
//! patched runs hold only the first two.

use super::bits::{packed, patched, put_packed, put_patched, put_varint, unzigzag, zigzag, Reader};

const DELTAS: u8 = 0;
const GRID: u8 = 1;
const DELTAS_PATCHED: u8 = 2;
const GRID_PATCHED: u8 = 3;

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
    let mut best = vec![DELTAS];
    put_packed(&mut best, &deltas);
    let mut keep = |candidate: Vec<u8>| {
        if candidate.len() < best.len() {
            best = candidate;
        }
    };
    let mut by_delta = vec![DELTAS_PATCHED];
    put_patched(&mut by_delta, &deltas);
    keep(by_delta);
    for interval in intervals(ts, &deltas) {
        let offsets: Vec<i64> = ts.iter().enumerate().map(|(i, &t)| t.wrapping_sub(base_ms).wrapping_sub((i as i64).wrapping_mul(interval))).collect();
        for (tag, put) in [(GRID, put_packed as fn(&mut Vec<u8>, &[i64])), (GRID_PATCHED, put_patched)] {
            let mut by_grid = vec![tag];
            put_varint(&mut by_grid, zigzag(interval));
            put(&mut by_grid, &offsets);
            keep(by_grid);
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
    let tag = r.byte()?;
    let runs = match tag {
        DELTAS | GRID => packed,
        DELTAS_PATCHED | GRID_PATCHED => patched,
        _ => return None,
    };
    match tag {
        DELTAS | DELTAS_PATCHED => {
            let mut prev = base_ms;
            Some(
                runs(r, n)?
                    .into_iter()
                    .map(|d| {
                        prev = prev.wrapping_add(d);
                        prev
                    })
                    .collect(),
            )
        }
        _ => {
            let interval = unzigzag(r.varint()?);
            Some(runs(r, n)?.into_iter().enumerate().map(|(i, o)| base_ms.wrapping_add((i as i64).wrapping_mul(interval)).wrapping_add(o)).collect())
        }
    }
}
