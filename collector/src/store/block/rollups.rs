//! One series' 1-minute rollups of one closed hour, packed: 60 entries of
//! 57 bytes (plus redb's own per entry) become one block of a few bytes per
//! minute, column by column with the same packings as samples: starts and
//! last times as timestamps, min, max, sum and last as values, counts as
//! packed integers. Exact: every field comes back bit for bit.

use super::super::Rollup;
use super::bits::{packed, put_packed, put_varint, Reader};
use super::{timestamps, values};

const VERSION: u8 = 1;

/// Rollups sorted by start, no two with the same start.
pub fn encode(base_ms: i64, rollups: &[Rollup]) -> Vec<u8> {
    let mut out = vec![VERSION];
    put_varint(&mut out, rollups.len() as u64);
    timestamps::encode(&mut out, base_ms, &rollups.iter().map(|r| r.start_ms).collect::<Vec<_>>());
    timestamps::encode(&mut out, base_ms, &rollups.iter().map(|r| r.last_ts).collect::<Vec<_>>());
    for field in [|r: &Rollup| r.min, |r: &Rollup| r.max, |r: &Rollup| r.sum, |r: &Rollup| r.last] {
        values::encode(&mut out, &rollups.iter().map(field).collect::<Vec<_>>());
    }
    put_packed(&mut out, &rollups.iter().map(|r| r.count as i64).collect::<Vec<_>>());
    out
}

pub fn decode(base_ms: i64, bytes: &[u8]) -> Option<Vec<Rollup>> {
    let mut r = Reader::new(bytes);
    if r.byte()? != VERSION {
        return None;
    }
    let n = usize::try_from(r.varint()?).ok().filter(|n| *n <= bytes.len().saturating_mul(32))?;
    let starts = timestamps::decode(&mut r, base_ms, n)?;
    let last_ts = timestamps::decode(&mut r, base_ms, n)?;
    let min = values::decode(&mut r, n)?;
    let max = values::decode(&mut r, n)?;
    let sum = values::decode(&mut r, n)?;
    let last = values::decode(&mut r, n)?;
    let counts = packed(&mut r, n)?;
    if !r.done() {
        return None;
    }
    (0..n).map(|i| Some(Rollup { start_ms: starts[i], min: min[i], max: max[i], sum: sum[i], count: u32::try_from(counts[i]).ok()?, last_ts: last_ts[i], last: last[i] })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_minute_rollups_comes_back_bit_for_bit_in_a_fraction_of_its_entries() {
        let h = 1_700_006_400_000;
        let rollups: Vec<Rollup> = (0..60i64)
            .map(|m| {
                // Min, max and last are readings (decimals here); the sum is not.
                let v = |k: i64| (200 + m + k) as f64 / 10.0;
                Rollup { start_ms: h + m * 60_000, min: v(-3), max: v(2), sum: (0..60).map(|i| v(i % 5 - 3)).sum(), count: 60, last_ts: h + m * 60_000 + 59_003, last: v(0) }
            })
            .collect();
        let bytes = encode(h, &rollups);
        assert_eq!(decode(h, &bytes).unwrap(), rollups);
        assert!(bytes.len() < 60 * 57 / 3, "{} bytes for 60 rollups", bytes.len());
        let odd = [Rollup { start_ms: h + 60_000, min: f64::NAN, max: -0.0, sum: f64::INFINITY, count: u32::MAX, last_ts: h + 61_000, last: f64::from_bits(1) }];
        let back = decode(h, &encode(h, &odd)).unwrap();
        assert_eq!(
            (back[0].min.to_bits(), back[0].max.to_bits(), back[0].sum, back[0].count, back[0].last.to_bits()),
            (f64::NAN.to_bits(), (-0.0f64).to_bits(), f64::INFINITY, u32::MAX, 1)
        );
        assert!(decode(h, &bytes[..bytes.len() - 1]).is_none());
    }
}
