//! One series' samples of one closed hour, packed: how the store gets from
//! ~80 bytes per reading as B-tree entries to about one.
//!
//! Format 2 (format 1, below, is still read):
//! `2`, varint count, the timestamps (`timestamps`: deltas or offsets from a
//! grid, whichever is smaller, in bit-packed runs), the values (`values`:
//! the smallest of raw f64, XOR of f64 or f32 words, scaled decimals of f64
//! or of f32), then qualities: `0` when all are Good, else `1` and one byte
//! each. Every value comes back bit for bit: NaN payloads, -0.0,
//! infinities, subnormals; each packing is exact by construction or tested
//! on the block's own values before it is used.
//!
//! Format 1 (what stores written before issue 21 hold): delta-of-delta
//! timestamps as zigzag varints, values as scaled-integer delta varints when
//! all were f64 decimals at one scale, else raw f64 (`v1`).

use shared::Quality;

use super::Sample;

mod bits;
mod decimal;
mod gorilla;
pub mod rollups;
mod timestamps;
mod v1;
mod values;

pub use values::Packing;

use bits::{put_varint, Reader};

const VERSION: u8 = 2;

/// Packs samples sorted by time, no two at the same time.
pub fn encode(base_ms: i64, samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + samples.len() * 2);
    out.push(VERSION);
    put_varint(&mut out, samples.len() as u64);
    timestamps::encode(&mut out, base_ms, &samples.iter().map(|s| s.ts_ms).collect::<Vec<_>>());
    values::encode(&mut out, &samples.iter().map(|s| s.value).collect::<Vec<_>>());
    if samples.iter().all(|s| s.quality == Quality::Good) {
        out.push(0);
    } else {
        out.push(1);
        out.extend(samples.iter().map(|s| s.quality.as_u8()));
    }
    out
}

/// The count, with a bound that keeps a damaged count from allocating
/// without limit: a packed run of 64 takes at least 2 bytes.
fn count(r: &mut Reader) -> Option<usize> {
    usize::try_from(r.varint()?).ok().filter(|n| *n <= r.bytes.len().saturating_mul(32))
}

/// The samples of a block; None when it does not decode.
pub fn decode(base_ms: i64, bytes: &[u8]) -> Option<Vec<Sample>> {
    let mut r = Reader::new(bytes);
    match r.byte()? {
        v1::VERSION => return v1::decode(base_ms, bytes),
        VERSION => {}
        _ => return None,
    }
    let n = count(&mut r)?;
    let ts = timestamps::decode(&mut r, base_ms, n)?;
    let values = values::decode(&mut r, n)?;
    let qualities: Vec<Quality> = match r.byte()? {
        0 => vec![Quality::Good; n],
        1 => (0..n).map(|_| r.byte().map(Quality::from_u8)).collect::<Option<_>>()?,
        _ => return None,
    };
    r.done().then(|| ts.into_iter().zip(values).zip(qualities).map(|((ts_ms, value), quality)| Sample { ts_ms, value, quality }).collect())
}

/// Which packing a block's values took; None for format 1 or a damaged block.
pub fn packing(base_ms: i64, bytes: &[u8]) -> Option<Packing> {
    let mut r = Reader::new(bytes);
    if r.byte()? != VERSION {
        return None;
    }
    let n = count(&mut r)?;
    timestamps::decode(&mut r, base_ms, n)?;
    values::packing(&mut r)
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
        assert!(decode(base, &[3]).is_none(), "unknown version");
        assert!(decode(base, &[2]).is_none(), "no count");
        assert!(decode(base, &[1]).is_none(), "format 1, no count");
        let mut wrong_tag = bytes.clone();
        let at = wrong_tag.len() - 1;
        wrong_tag[at] = 7;
        assert!(decode(base, &wrong_tag).is_none(), "unknown quality tag");
        assert!(decode(base, &[]).is_none());
    }

    fn assert_bits_eq(back: &[Sample], given: &[Sample]) {
        assert_eq!(back.len(), given.len());
        for (a, b) in back.iter().zip(given) {
            assert_eq!((a.ts_ms, a.value.to_bits(), a.quality), (b.ts_ms, b.value.to_bits(), b.quality), "{} given, {} back", b.value, a.value);
        }
    }

    /// Encodes, decodes, checks every bit; the encoded bytes.
    fn round_trip(base: i64, samples: &[Sample]) -> Vec<u8> {
        let bytes = encode(base, samples);
        assert_bits_eq(&decode(base, &bytes).expect("decodes"), samples);
        bytes
    }

    /// A deterministic jitter in 0..=8 ms: the latency of a poll's answer.
    fn jitter(i: i64) -> i64 {
        ((i as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as i64 % 9
    }

    #[test]
    fn blocks_in_format_1_from_before_issue_21_still_decode() {
        // Bytes from the format-1 encoder (commit f1afc39), one block per values path.
        let base = 1_700_006_400_000;
        let decimal = [1, 4, 0, 208, 15, 6, 15, 2, 178, 33, 6, 193, 33, 202, 154, 12, 0];
        let want: Vec<Sample> = [(0, 21.37), (1000, 21.4), (2003, -0.05), (2998, 1e3)].iter().map(|&(t, v)| s(base + t, v)).collect();
        assert_bits_eq(&decode(base, &decimal).unwrap(), &want);
        let raw = [1, 3, 0, 208, 15, 231, 7, 255, 0, 0, 0, 160, 153, 217, 65, 64, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0, 0, 0, 0, 0, 240, 127, 1, 0, 2, 1];
        let want = [
            Sample { ts_ms: base, value: 35.7f32 as f64, quality: Quality::Good },
            Sample { ts_ms: base + 1000, value: -0.0, quality: Quality::Bad },
            Sample { ts_ms: base + 1500, value: f64::INFINITY, quality: Quality::Uncertain },
        ];
        assert_bits_eq(&decode(base, &raw).unwrap(), &want);
        assert!(decode(base, &raw[..raw.len() - 1]).is_none());
    }

    #[test]
    fn modbus_f32_at_the_sensors_resolution_comes_back_as_the_exact_f64_it_was_in_under_a_byte() {
        let base = 1_700_006_400_000;
        // pm25 at 0.1 µg/m³ read from a float register: 35.7f32 arrives as 35.70000076293945.
        let samples: Vec<Sample> = (0..3600i64).map(|i| s(base + i * 1000 + jitter(i), ((350 + i / 97 + jitter(i * 3) % 5 - 2) as f32 / 10.0) as f64)).collect();
        let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
        assert!(decimal::ints(&values, false).is_none(), "not f64 decimals: the format-1 encoder stored these raw");
        let bytes = round_trip(base, &samples);
        assert_eq!(packing(base, &bytes), Some(Packing::F32Decimal));
        assert!(bytes.len() < 3600, "{} bytes for 3600 jittered f32 readings", bytes.len());
    }

    #[test]
    fn noisy_f32_and_full_precision_f64_take_the_xor_paths_and_stay_under_raw_size() {
        let base = 0;
        let f32_noise: Vec<Sample> = (0..3600i64).map(|i| s(i * 1000, (0.37f32 + (i as f32 / 300.0).sin() * 0.033 + jitter(i) as f32 * 0.000_137) as f64)).collect();
        let bytes = round_trip(base, &f32_noise);
        assert_eq!(packing(base, &bytes), Some(Packing::Xor32));
        assert!(bytes.len() < 3600 * 4, "{} bytes", bytes.len());
        let f64_noise: Vec<Sample> = (0..3600i64).map(|i| s(i * 10_000, 1013.25 + (i as f64 / 77.0).sin() / 3.0)).collect();
        let bytes = round_trip(base, &f64_noise);
        assert_eq!(packing(base, &bytes), Some(Packing::Xor64));
        assert!(bytes.len() < 3600 * 8, "{} bytes", bytes.len());
        let steady: Vec<Sample> = (0..3600i64).map(|i| s(i * 1000, 1.0 / 3.0)).collect();
        let bytes = round_trip(base, &steady);
        assert!(bytes.len() < 3600 / 4, "a repeated f64 costs a bit each: {} bytes", bytes.len());
    }

    #[test]
    fn jittered_polls_cost_about_four_bits_per_timestamp_and_a_missed_poll_little_more() {
        let base = 1_700_006_400_000;
        let mut samples: Vec<Sample> = (0..3600i64).map(|i| s(base + i * 1000 + jitter(i), 7.0)).collect();
        let bytes = round_trip(base, &samples);
        assert!(bytes.len() < 3600 * 62 / 100, "{} bytes for 3600 jittered 1 s timestamps", bytes.len());
        samples.remove(1800);
        let gap = round_trip(base, &samples);
        assert!(gap.len() < bytes.len() + 100, "{} bytes with a missed poll, {} without", gap.len(), bytes.len());
        let ten_s: Vec<Sample> = (0..360i64).map(|i| s(base + i * 10_000 + jitter(i), 7.0)).collect();
        let bytes = round_trip(base, &ten_s);
        assert!(bytes.len() < 360 * 62 / 100, "{} bytes for 360 jittered 10 s timestamps", bytes.len());
    }

    #[test]
    fn a_poll_in_a_hundred_answered_late_costs_its_own_bytes_not_wider_runs() {
        let base = 1_700_006_400_000;
        let late = |i: i64| if i % 100 == 37 { 120 + i % 80 } else { 0 };
        let samples: Vec<Sample> = (0..3600i64).map(|i| s(base + i * 1000 + jitter(i) + late(i), 7.0)).collect();
        let bytes = round_trip(base, &samples);
        // 3,188 bytes without patched runs.
        assert!(bytes.len() < 2400, "{} bytes for 3600 timestamps, 36 of them late", bytes.len());
    }

    #[test]
    fn special_values_come_back_bit_for_bit_on_every_path() {
        let specials = [
            f64::from_bits(0x7FF0_0000_0000_0001), // signalling NaN
            f64::NAN,
            f64::from_bits(0xFFF8_0000_DEAD_BEEF), // negative NaN with a payload
            (f32::from_bits(0x7FC0_1234)) as f64,  // an f32 NaN widened
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::from_bits(1), // the smallest subnormal
            -f64::MIN_POSITIVE / 3.0,
            f32::from_bits(1) as f64, // an f32 subnormal widened
            f32::MAX as f64,
            f64::MAX,
            0.1 + 0.2,
            35.7f32 as f64,
            (35.7f32 as f64).next_up(), // next to an f32, not one
        ];
        let base = 1_700_006_400_000;
        let paths: [fn(i64) -> f64; 4] = [|i| (i % 50) as f64 / 10.0, |i| ((i % 50) as f32 / 10.0) as f64, |i| (i as f32 * 1.000_1).sqrt() as f64, |i| (i as f64).sqrt()];
        for (p, path) in paths.iter().enumerate() {
            let plain: Vec<Sample> = (0..200).map(|i| s(base + i * 1000, path(i))).collect();
            let plain_packing = packing(base, &round_trip(base, &plain));
            for (k, v) in specials.iter().enumerate() {
                let mut samples = plain.clone();
                samples[37 + k].value = *v;
                round_trip(base, &samples);
            }
            let mut all = plain;
            for (k, v) in specials.iter().enumerate() {
                all[k * 5].value = *v;
            }
            round_trip(base, &all);
            assert!(plain_packing.is_some(), "path {p}");
        }
        let alone: Vec<Sample> = specials.iter().enumerate().map(|(i, v)| s(base + i as i64, *v)).collect();
        round_trip(base, &alone);
    }

    mod generated {
        use super::super::{decode, encode, Sample};
        use proptest::prelude::*;
        use shared::Quality;

        /// Block values of one kind, as real series are, or a mix.
        fn values(n: usize) -> impl Strategy<Value = Vec<f64>> {
            let walk = |steps: Vec<i64>, start: i64| {
                steps
                    .into_iter()
                    .scan(start, |n, d| {
                        *n += d;
                        Some(*n)
                    })
                    .collect::<Vec<i64>>()
            };
            prop_oneof![
                proptest::collection::vec(any::<u64>().prop_map(f64::from_bits), n),
                proptest::collection::vec(any::<u32>().prop_map(|b| f32::from_bits(b) as f64), n),
                (0i32..=6, -1_000_000i64..1_000_000, proptest::collection::vec(-40i64..40, n))
                    .prop_map(move |(d, start, steps)| walk(steps, start).into_iter().map(|k| k as f64 / 10f64.powi(d)).collect()),
                (0i32..=3, -100_000i64..100_000, proptest::collection::vec(-40i64..40, n))
                    .prop_map(move |(d, start, steps)| walk(steps, start).into_iter().map(|k| (k as f64 / 10f64.powi(d)) as f32 as f64).collect()),
                (any::<f32>(), proptest::collection::vec(-1e-3f32..1e-3, n)).prop_map(|(start, steps)| steps
                    .into_iter()
                    .scan(start, |v, d| {
                        *v += d;
                        Some(*v as f64)
                    })
                    .collect()),
                proptest::collection::vec(prop_oneof![any::<u64>().prop_map(f64::from_bits), (-1000i64..1000).prop_map(|k| k as f64 / 100.0), Just(f64::NAN), Just(-0.0)], n),
            ]
        }

        /// Sorted distinct times: anywhere in i64, or polls with jitter and gaps.
        fn times(n: usize) -> impl Strategy<Value = Vec<i64>> {
            prop_oneof![
                proptest::collection::vec(any::<i64>(), n).prop_map(|mut t| {
                    t.sort_unstable();
                    t.dedup();
                    t
                }),
                (any::<i32>(), 1i64..20_000, proptest::collection::vec((0i64..20, 0u8..40), n)).prop_map(|(start, every, polls)| {
                    let mut t: Vec<i64> = polls.iter().enumerate().map(|(i, &(lat, skip))| start as i64 + i as i64 * every + lat + if skip == 0 { every } else { 0 }).collect();
                    t.sort_unstable();
                    t.dedup();
                    t
                }),
            ]
        }

        fn block() -> impl Strategy<Value = (i64, Vec<Sample>)> {
            (0usize..300).prop_flat_map(|n| (any::<i64>(), times(n), values(n), proptest::collection::vec(0u8..3, n))).prop_map(|(base, ts, vs, qs)| {
                let samples = ts.into_iter().zip(vs).zip(qs).map(|((ts_ms, value), q)| Sample { ts_ms, value, quality: Quality::from_u8(q) }).collect();
                (base, samples)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

            #[test]
            fn every_block_comes_back_bit_for_bit_and_never_much_above_raw_size((base, samples) in block()) {
                let bytes = encode(base, &samples);
                let back = decode(base, &bytes).expect("decodes");
                prop_assert_eq!(back.len(), samples.len());
                for (a, b) in back.iter().zip(&samples) {
                    prop_assert_eq!((a.ts_ms, a.value.to_bits(), a.quality), (b.ts_ms, b.value.to_bits(), b.quality));
                }
                prop_assert!(bytes.len() <= 16 + samples.len() * 19, "{} bytes for {} samples", bytes.len(), samples.len());
            }

            #[test]
            fn a_damaged_block_is_refused_or_decodes_to_something_else_never_panics((base, samples) in block(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
                let bytes = encode(base, &samples);
                let _ = decode(base, &bytes[..cut.index(bytes.len() + 1)]);
                let mut flipped = bytes.clone();
                let at = flip.index(flipped.len());
                flipped[at] ^= 0x5A;
                let _ = decode(base, &flipped);
            }
        }
    }

    #[test]
    fn merging_keeps_time_order_and_the_newer_sample_at_equal_times() {
        let merged = merge(vec![s(1, 1.0), s(3, 3.0), s(5, 5.0)], vec![s(2, 20.0), s(3, 30.0), s(6, 60.0)]);
        assert_eq!(merged.iter().map(|x| (x.ts_ms, x.value)).collect::<Vec<_>>(), vec![(1, 1.0), (2, 20.0), (3, 30.0), (5, 5.0), (6, 60.0)]);
    }
}
