//! A register image turned into the number that is sent, at the precision it
//! was read at. `raw * 0.1` in binary floating point gives 87.60000000000001,
//! and an f32 widened to f64 gives 37.29999923706055; both are noise the
//! device never measured, which then shows in the API, the exports and the
//! line protocol, and compresses badly in the store. So a scaled value is
//! rounded to the decimals of its inputs, and an f32 is carried as the
//! shortest decimal that gives back the same f32.

use shared::modbus::{decode_registers, DataType, WordOrder};

/// Decimal places of the shortest decimal that gives back `x` exactly
/// (Rust's `Display` for floats prints exactly that, never an exponent).
pub fn decimals(x: f64) -> usize {
    let s = x.to_string();
    s.split_once('.').map_or(0, |(_, frac)| frac.len())
}

/// `x` rounded to `places` decimals, as the nearest f64 to that decimal.
pub fn round_to(x: f64, places: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.places$}").parse().unwrap_or(x)
}

/// The number a device meant by this register image, before scaling: an f32
/// becomes the f64 nearest to its shortest decimal (35.7f32 is 35.7, not
/// 35.70000076293945). With `bits`, the unsigned value of bits first..=last of
/// the (first) register, bit 0 being the least significant.
pub fn raw_value(words: &[u16], data_type: DataType, order: WordOrder, bits: Option<(u8, u8)>) -> f64 {
    if let Some((first, last)) = bits {
        let width = u32::from(last - first + 1);
        let mask = if width >= 16 { 0xFFFF } else { (1u32 << width) - 1 };
        return f64::from((u32::from(words[0]) >> first) & mask);
    }
    let v = decode_registers(words, data_type, order);
    match data_type {
        DataType::F32 if v.is_finite() => (v as f32).to_string().parse().unwrap_or(v),
        _ => v,
    }
}

/// `raw * scale + offset`, rounded to as many decimals as the inputs carry
/// between them (a product has the decimals of both factors; a sum, the
/// larger of the two), which is exact decimal arithmetic for them.
pub fn scaled(raw: f64, scale: f64, offset: f64) -> f64 {
    if scale == 1.0 && offset == 0.0 {
        return raw;
    }
    let places = (decimals(raw) + decimals(scale)).max(decimals(offset));
    round_to(raw * scale + offset, places)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::modbus::encode_registers;

    #[test]
    fn scaled_values_are_the_decimal_the_device_meant_bit_for_bit() {
        assert_eq!(876.0 * 0.1, 87.60000000000001, "the noise this module exists for");
        assert_eq!(scaled(876.0, 0.1, 0.0).to_bits(), 87.6f64.to_bits());
        assert_eq!(scaled(-53.0, 0.1, 0.0).to_bits(), (-5.3f64).to_bits());
        assert_eq!(scaled(650.0, 0.1, -40.0).to_bits(), 25.0f64.to_bits());
        assert_eq!(scaled(12345.0, 0.01, 0.0).to_bits(), 123.45f64.to_bits());
        assert_eq!(scaled(7.0, 0.5, 0.25).to_bits(), 3.75f64.to_bits());
        assert_eq!(scaled(65538.0, 1.0, 0.0), 65538.0);
    }

    #[test]
    fn an_f32_is_carried_as_its_shortest_decimal() {
        for (f, want) in [(35.7f32, 35.7f64), (37.3, 37.3), (-0.1, -0.1), (123.456, 123.456), (1.0e-3, 0.001)] {
            let regs = encode_registers(f as f64, DataType::F32, WordOrder::CDAB);
            let got = raw_value(&regs, DataType::F32, WordOrder::CDAB, None);
            assert_eq!(got.to_bits(), want.to_bits(), "{f}: {got}");
            assert_eq!(got.to_string(), want.to_string());
        }
        assert_eq!(scaled(raw_value(&encode_registers(35.7, DataType::F32, WordOrder::ABCD), DataType::F32, WordOrder::ABCD, None), 0.1, 0.0).to_bits(), 3.57f64.to_bits());
    }

    #[test]
    fn bit_fields_take_one_bit_or_a_range() {
        let w = [0b1010_0110_0000_0101u16];
        assert_eq!(raw_value(&w, DataType::U16, WordOrder::ABCD, Some((0, 0))), 1.0);
        assert_eq!(raw_value(&w, DataType::U16, WordOrder::ABCD, Some((1, 1))), 0.0);
        assert_eq!(raw_value(&w, DataType::U16, WordOrder::ABCD, Some((2, 2))), 1.0);
        assert_eq!(raw_value(&w, DataType::U16, WordOrder::ABCD, Some((9, 11))), 0b011 as f64);
        assert_eq!(raw_value(&w, DataType::U16, WordOrder::ABCD, Some((12, 15))), 0b1010 as f64);
        assert_eq!(raw_value(&w, DataType::U16, WordOrder::ABCD, Some((0, 15))), w[0] as f64);
    }
}
