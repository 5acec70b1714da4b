//! Format 1, as stores written before issue 21 hold it: read, never written.
//! Delta-of-delta timestamps as zigzag varints; values as zigzag varint
//! deltas of scaled integers (scale byte 0..=6) or raw f64 (`0xFF`);
//! qualities as in format 2.

use shared::Quality;

use super::super::Sample;
use super::bits::{unzigzag, Reader};

pub const VERSION: u8 = 1;
const RAW_VALUES: u8 = 0xFF;
const MAX_SCALE: u8 = 6;

pub fn decode(base_ms: i64, bytes: &[u8]) -> Option<Vec<Sample>> {
    let mut r = Reader::new(bytes);
    if r.byte()? != VERSION {
        return None;
    }
    let n = usize::try_from(r.varint()?).ok().filter(|n| *n <= bytes.len())?;
    let mut ts = Vec::with_capacity(n);
    let (mut prev, mut delta) = (base_ms, 0i64);
    for _ in 0..n {
        delta = delta.checked_add(unzigzag(r.varint()?))?;
        prev = prev.checked_add(delta)?;
        ts.push(prev);
    }
    let mut values = Vec::with_capacity(n);
    match r.byte()? {
        RAW_VALUES => {
            for _ in 0..n {
                values.push(r.f64()?);
            }
        }
        scale if scale <= MAX_SCALE => {
            let f = 10f64.powi(scale as i32);
            let mut prev = 0i64;
            for _ in 0..n {
                prev = prev.wrapping_add(unzigzag(r.varint()?));
                values.push(prev as f64 / f);
            }
        }
        _ => return None,
    }
    let qualities: Vec<Quality> = match r.byte()? {
        0 => vec![Quality::Good; n],
        1 => (0..n).map(|_| r.byte().map(Quality::from_u8)).collect::<Option<_>>()?,
        _ => return None,
    };
    r.done().then(|| ts.into_iter().zip(values).zip(qualities).map(|((ts_ms, value), quality)| Sample { ts_ms, value, quality }).collect())
}
