//! Values that are short decimals, as scaled integers: 21.37 at scale 2 is
//! 2137. Exact by construction: a scale is used only if decoding gives back
//! every value bit for bit.
//!
//! Two readings of "decimal": an f64 that is the nearest double to n/10^d
//! (what a JSON sensor or a scaled Modbus integer gives), and an f32 widened
//! to f64 whose shortest decimal is n/10^d (a Modbus float register read as
//! 35.7f32 arrives as 35.70000076293945): that one decodes as
//! `((n / 10^d) as f32) as f64`.

/// 10^d for the scales tried, as constants so encoder and decoder agree on
/// every machine (10^6: micro-units).
const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];
pub const MAX_SCALE: u8 = 6;

/// Whether `v` is an f32 widened: NaN excluded, since narrowing and widening
/// a NaN may set its quiet bit and NaN payloads are kept by the f64 paths.
pub fn is_f32(v: f64) -> bool {
    !v.is_nan() && ((v as f32) as f64).to_bits() == v.to_bits()
}

pub fn value(n: i64, scale: u8, f32: bool) -> f64 {
    let v = n as f64 / POW10[scale as usize];
    if f32 {
        (v as f32) as f64
    } else {
        v
    }
}

/// The smallest scale at which every value is a decimal, with the scaled
/// integers.
pub fn ints(values: &[f64], f32: bool) -> Option<(u8, Vec<i64>)> {
    if f32 && !values.iter().all(|&v| is_f32(v)) {
        return None;
    }
    (0..=MAX_SCALE).find_map(|d| {
        let f = POW10[d as usize];
        values
            .iter()
            .map(|&v| {
                let n = (v * f).round();
                (n.abs() < 9.0e15).then_some(n as i64).filter(|&n| value(n, d, f32).to_bits() == v.to_bits())
            })
            .collect::<Option<Vec<i64>>>()
            .map(|ns| (d, ns))
    })
}
