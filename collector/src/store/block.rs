//! One series' samples of one closed hour, packed: how the store gets from
//! ~80 bytes per reading as B-tree entries to a few bytes.
//!
//! Timestamps are delta-of-delta varints (a steady poll costs one byte).
//! Values are stored as scaled integer deltas when every value of the block
//! is a short decimal (sensors report 21.37, not 21.370000000000001), which
//! is exact: decoding divides by the same power of ten, and the encoder only
//! picks a scale that gives back every value bit for bit. Otherwise the raw
//! 8 bytes. Qualities cost a byte each only when one is not Good.

use shared::Quality;

use super::Sample;

const VERSION: u8 = 1;
const RAW_VALUES: u8 = 0xFF;
/// The largest decimal scale tried (10^6: micro-units).
const MAX_SCALE: u8 = 6;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7F) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn f64(&mut self) -> Option<f64> {
        let b = self.bytes.get(self.at..self.at + 8)?;
        self.at += 8;
        Some(f64::from_le_bytes(b.try_into().ok()?))
    }
}

/// The smallest decimal scale at which every value is an exact integer.
fn decimal_scale(samples: &[Sample]) -> Option<u8> {
    (0..=MAX_SCALE).find(|&d| {
        let f = 10f64.powi(d as i32);
        samples.iter().all(|s| {
            let n = (s.value * f).round();
            n.abs() < 9.0e15 && (n / f).to_bits() == s.value.to_bits()
        })
    })
}

/// Packs samples sorted by time, no two at the same time.
pub fn encode(base_ms: i64, samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + samples.len() * 3);
    out.push(VERSION);
    put_varint(&mut out, samples.len() as u64);
    let (mut prev, mut delta) = (base_ms, 0i64);
    for s in samples {
        let d = s.ts_ms - prev;
        put_varint(&mut out, zigzag(d - delta));
        (prev, delta) = (s.ts_ms, d);
    }
    match decimal_scale(samples) {
        Some(scale) => {
            out.push(scale);
            let f = 10f64.powi(scale as i32);
            let mut prev = 0i64;
            for s in samples {
                let n = (s.value * f).round() as i64;
                put_varint(&mut out, zigzag(n.wrapping_sub(prev)));
                prev = n;
            }
        }
        None => {
            out.push(RAW_VALUES);
            for s in samples {
                out.extend_from_slice(&s.value.to_le_bytes());
            }
        }
    }
    if samples.iter().all(|s| s.quality == Quality::Good) {
        out.push(0);
    } else {
        out.push(1);
        out.extend(samples.iter().map(|s| s.quality.as_u8()));
    }
    out
}

/// The samples of a block; None when it does not decode.
pub fn decode(base_ms: i64, bytes: &[u8]) -> Option<Vec<Sample>> {
    let mut r = Reader { bytes, at: 0 };
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
    (r.at == bytes.len()).then(|| ts.into_iter().zip(values).zip(qualities).map(|((ts_ms, value), quality)| Sample { ts_ms, value, quality }).collect())
}

/// Both inputs sorted by time; on equal times `newer` wins.
pub fn merge(older: Vec<Sample>, newer: Vec<Sample>) -> Vec<Sample> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut a, mut b) = (older.into_iter().peekable(), newer.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.ts_ms < y.ts_ms => out.extend(a.next()),
            (Some(x), Some(y)) if x.ts_ms == y.ts_ms => {
                a.next();
                out.extend(b.next());
            }
            (_, Some(_)) => out.extend(b.next()),
            (Some(_), None) => out.extend(a.next()),
            (None, None) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts_ms: i64, value: f64) -> Sample {
        Sample { ts_ms, value, quality: Quality::Good }
    }

    #[test]
    fn steady_decimal_readings_pack_to_a_few_bytes_and_come_back_exactly() {
        let base = 1_700_006_400_000;
        let samples: Vec<Sample> = (0..3600).map(|i| s(base + i * 1000, ((20.0 + (i as f64 / 600.0).sin() * 5.0) * 100.0).round() / 100.0)).collect();
        let bytes = encode(base, &samples);
        assert!(bytes.len() < 3600 * 3, "{} bytes for 3600 samples", bytes.len());
        assert_eq!(decode(base, &bytes).unwrap(), samples);
    }

    #[test]
    fn any_values_irregular_times_and_bad_qualities_come_back_bit_for_bit() {
        let base = -7_200_000;
        let values = [0.1 + 0.2, -0.0, f64::MAX, f64::MIN_POSITIVE, 1e-300, f64::INFINITY, -3.5, 1.0 / 3.0];
        let samples: Vec<Sample> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Sample { ts_ms: base + (i as i64 * i as i64 * 977) % 3_600_000, value: *v, quality: if i == 3 { Quality::Bad } else { Quality::Good } })
            .collect();
        let back = decode(base, &encode(base, &samples)).unwrap();
        assert_eq!(back.len(), samples.len());
        for (a, b) in back.iter().zip(&samples) {
            assert_eq!((a.ts_ms, a.value.to_bits(), a.quality), (b.ts_ms, b.value.to_bits(), b.quality));
        }
        let nan = [s(base, f64::NAN), s(base + 1, 2.5)];
        assert!(decode(base, &encode(base, &nan)).unwrap()[0].value.is_nan());
        let scaled = [s(base, 21.37), s(base + 1000, -0.001), s(base + 5000, 1e9)];
        assert_eq!(decode(base, &encode(base, &scaled)).unwrap(), scaled);
    }

    #[test]
    fn damaged_blocks_are_refused_not_misread() {
        let base = 0;
        let samples: Vec<Sample> = (0..100).map(|i| s(i * 1000, i as f64 / 4.0)).collect();
        let bytes = encode(base, &samples);
        assert!(decode(base, &bytes[..bytes.len() - 1]).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(base, &longer).is_none());
        assert!(decode(base, &[2]).is_none(), "unknown version");
        assert!(decode(base, &[]).is_none());
    }

    #[test]
    fn merging_keeps_time_order_and_the_newer_sample_at_equal_times() {
        let merged = merge(vec![s(1, 1.0), s(3, 3.0), s(5, 5.0)], vec![s(2, 20.0), s(3, 30.0), s(6, 60.0)]);
        assert_eq!(merged.iter().map(|x| (x.ts_ms, x.value)).collect::<Vec<_>>(), vec![(1, 1.0), (2, 20.0), (3, 30.0), (5, 5.0), (6, 60.0)]);
    }
}
