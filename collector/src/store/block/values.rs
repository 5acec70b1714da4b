//! A block's values: every packing that can hold them exactly is tried and
//! the smallest kept, so a block never costs more than its raw 8 bytes per
//! value (plus a tag byte), and real sensor data takes whichever path fits
//! it: short decimals (JSON, scaled Modbus integers), f32 registers at
//! their resolution, f32 noise, or full-precision f64.

use super::bits::{packed, put_packed, Reader};
use super::{decimal, gorilla};

/// Raw little-endian f64: the bound no other packing may exceed.
const RAW: u8 = 0;
/// XOR of 64-bit words: any values, NaN payloads and all.
const XOR64: u8 = 1;
/// XOR of 32-bit words: every value an f32 widened.
const XOR32: u8 = 2;
/// Scale byte, form byte (`DELTAS` or `LEVELS`), then the scaled integers
/// packed: f64 decimals. Deltas suit a trend or a counter; levels suit
/// noise around a level, whose deltas would carry two noises each.
const DECIMAL: u8 = 3;
/// As `DECIMAL`, decoded through f32: f32 whose shortest decimal is short.
const F32_DECIMAL: u8 = 4;

/// The tag of the packing a block's values took, for benchmarks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    Raw,
    Xor64,
    Xor32,
    Decimal,
    F32Decimal,
}

const DELTAS: u8 = 0;
const LEVELS: u8 = 1;

/// The smaller of the deltas and the levels of the scaled integers.
fn decimal_section(tag: u8, (scale, ns): (u8, Vec<i64>)) -> Vec<u8> {
    let mut prev = 0i64;
    let deltas: Vec<i64> = ns
        .iter()
        .map(|&n| {
            let d = n.wrapping_sub(prev);
            prev = n;
            d
        })
        .collect();
    let mut by_delta = vec![tag, scale, DELTAS];
    put_packed(&mut by_delta, &deltas);
    let mut by_level = vec![tag, scale, LEVELS];
    put_packed(&mut by_level, &ns);
    if by_level.len() < by_delta.len() {
        by_level
    } else {
        by_delta
    }
}

pub fn encode(out: &mut Vec<u8>, values: &[f64]) {
    let mut best = Vec::with_capacity(1 + values.len() * 8);
    best.push(RAW);
    for v in values {
        best.extend_from_slice(&v.to_le_bytes());
    }
    let mut keep = |candidate: Vec<u8>| {
        if candidate.len() < best.len() {
            best = candidate;
        }
    };
    if let Some(ints) = decimal::ints(values, false) {
        keep(decimal_section(DECIMAL, ints));
    } else if let Some(ints) = decimal::ints(values, true) {
        keep(decimal_section(F32_DECIMAL, ints));
    }
    if values.iter().all(|&v| decimal::is_f32(v)) {
        let words: Vec<u64> = values.iter().map(|&v| (v as f32).to_bits() as u64).collect();
        let mut s = vec![XOR32];
        s.extend(gorilla::encode(&words, 32));
        keep(s);
    }
    let words: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
    let mut s = vec![XOR64];
    s.extend(gorilla::encode(&words, 64));
    keep(s);
    out.extend(best);
}

pub fn decode(r: &mut Reader, n: usize) -> Option<Vec<f64>> {
    let tag = r.byte()?;
    match tag {
        RAW => (0..n).map(|_| r.f64()).collect(),
        XOR64 | XOR32 => {
            let word = if tag == XOR64 { 64 } else { 32 };
            let (words, used) = gorilla::decode(&r.bytes[r.at..], n, word)?;
            r.at += used;
            Some(words.into_iter().map(|w| if word == 64 { f64::from_bits(w) } else { f32::from_bits(w as u32) as f64 }).collect())
        }
        DECIMAL | F32_DECIMAL => {
            let scale = r.byte()?;
            if scale > decimal::MAX_SCALE {
                return None;
            }
            let f32 = tag == F32_DECIMAL;
            match r.byte()? {
                DELTAS => {
                    let mut prev = 0i64;
                    Some(
                        packed(r, n)?
                            .into_iter()
                            .map(|d| {
                                prev = prev.wrapping_add(d);
                                decimal::value(prev, scale, f32)
                            })
                            .collect(),
                    )
                }
                LEVELS => Some(packed(r, n)?.into_iter().map(|k| decimal::value(k, scale, f32)).collect()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Which packing the values section of an encoded block took (`None` for a
/// block that does not decode or is in the old format).
pub fn packing(r: &mut Reader) -> Option<Packing> {
    Some(match r.byte()? {
        RAW => Packing::Raw,
        XOR64 => Packing::Xor64,
        XOR32 => Packing::Xor32,
        DECIMAL => Packing::Decimal,
        F32_DECIMAL => Packing::F32Decimal,
        _ => return None,
    })
}
