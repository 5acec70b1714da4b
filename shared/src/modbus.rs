//! Modbus register images: every data type in every word/byte order, decoded by
//! the agent and encoded by the simulator, in one place so the two cannot drift.
//!
//! Orders name where the bytes A (most significant) .. D sit on the wire for a
//! 32-bit value; for 64-bit values they generalise: `CDAB` reverses the order of
//! the 16-bit words, `BADC` swaps the two bytes inside each word, `DCBA` does
//! both (fully little-endian). For 16-bit types only the byte swap applies.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
pub enum WordOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl DataType {
    pub const ALL: [DataType; 9] = [DataType::Bool, DataType::U16, DataType::I16, DataType::U32, DataType::I32, DataType::U64, DataType::I64, DataType::F32, DataType::F64];

    /// Registers (or bits, for `Bool`) one value occupies.
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
        }
    }

    pub fn parse(s: &str) -> Result<DataType, UnknownName> {
        DataType::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| UnknownName::Type(s.to_string()))
    }
}

/// A data type or word order name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownName {
    #[error("unknown type `{0}`; one of bool u16 i16 u32 i32 u64 i64 f32 f64")]
    Type(String),
    #[error("unknown order `{0}`; one of ABCD CDAB BADC DCBA")]
    Order(String),
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [WordOrder::ABCD, WordOrder::CDAB, WordOrder::BADC, WordOrder::DCBA];

    fn swaps_words(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }
    fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }

    pub fn name(self) -> &'static str {
        match self {
            WordOrder::ABCD => "ABCD",
            WordOrder::CDAB => "CDAB",
            WordOrder::BADC => "BADC",
            WordOrder::DCBA => "DCBA",
        }
    }

    pub fn parse(s: &str) -> Result<WordOrder, UnknownName> {
        WordOrder::ALL.into_iter().find(|o| o.name().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownName::Order(s.to_string()))
    }
}

/// Big-endian bytes of the value, after undoing the device's order.
fn normalise(words: &[u16], order: WordOrder) -> Vec<u8> {
    let mut ws: Vec<u16> = words.to_vec();
    if order.swaps_words() {
        ws.reverse();
    }
    ws.iter()
        .flat_map(|w| {
            let b = w.to_be_bytes();
            if order.swaps_bytes() {
                [b[1], b[0]]
            } else {
                b
            }
        })
        .collect()
}

/// Decodes `words` (exactly `data_type.registers()` of them) into a number.
/// `Bool` is not decoded here: bits come from coil and discrete tables.
pub fn decode_registers(words: &[u16], data_type: DataType, order: WordOrder) -> f64 {
    debug_assert_eq!(words.len(), data_type.registers() as usize);
    let b = normalise(words, order);
    match data_type {
        DataType::Bool => f64::from(u8::from(words[0] != 0)),
        DataType::U16 => u16::from_be_bytes([b[0], b[1]]) as f64,
        DataType::I16 => i16::from_be_bytes([b[0], b[1]]) as f64,
        DataType::U32 => u32::from_be_bytes(b[..4].try_into().unwrap()) as f64,
        DataType::I32 => i32::from_be_bytes(b[..4].try_into().unwrap()) as f64,
        DataType::F32 => f32::from_be_bytes(b[..4].try_into().unwrap()) as f64,
        DataType::U64 => u64::from_be_bytes(b[..8].try_into().unwrap()) as f64,
        DataType::I64 => i64::from_be_bytes(b[..8].try_into().unwrap()) as f64,
        DataType::F64 => f64::from_be_bytes(b[..8].try_into().unwrap()),
    }
}

/// The inverse of `decode_registers`: the registers a device in `order` holds for
/// `value`. Used by the simulator and by tests; kept beside the decoder so the two
/// cannot drift apart.
pub fn encode_registers(value: f64, data_type: DataType, order: WordOrder) -> Vec<u16> {
    let be: Vec<u8> = match data_type {
        DataType::Bool => vec![0, u8::from(value != 0.0)],
        DataType::U16 => (value as u16).to_be_bytes().to_vec(),
        DataType::I16 => (value as i16).to_be_bytes().to_vec(),
        DataType::U32 => (value as u32).to_be_bytes().to_vec(),
        DataType::I32 => (value as i32).to_be_bytes().to_vec(),
        DataType::F32 => (value as f32).to_be_bytes().to_vec(),
        DataType::U64 => (value as u64).to_be_bytes().to_vec(),
        DataType::I64 => (value as i64).to_be_bytes().to_vec(),
        DataType::F64 => value.to_be_bytes().to_vec(),
    };
    let mut words: Vec<u16> = be.chunks(2).map(|c| if order.swaps_bytes() { u16::from_be_bytes([c[1], c[0]]) } else { u16::from_be_bytes([c[0], c[1]]) }).collect();
    if order.swaps_words() {
        words.reverse();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;
    use WordOrder::*;

    /// Register images taken from device manuals' worked examples: 123.456f32 is
    /// 0x42F6E979 (bytes A=42 B=F6 C=E9 D=79).
    #[test]
    fn f32_in_every_order_matches_known_registers() {
        let v = decode_registers(&[0x42F6, 0xE979], F32, ABCD);
        assert!((v - 123.456).abs() < 1e-4, "{v}");
        for (regs, order) in [([0xE979, 0x42F6], CDAB), ([0xF642, 0x79E9], BADC), ([0x79E9, 0xF642], DCBA)] {
            let v = decode_registers(&regs, F32, order);
            assert!((v - 123.456).abs() < 1e-4, "{order:?}: {v}");
        }
    }

    #[test]
    fn integers_in_every_order_match_known_registers() {
        // 0x12345678 = 305419896
        assert_eq!(decode_registers(&[0x1234, 0x5678], U32, ABCD), 305_419_896.0);
        assert_eq!(decode_registers(&[0x5678, 0x1234], U32, CDAB), 305_419_896.0);
        assert_eq!(decode_registers(&[0x3412, 0x7856], U32, BADC), 305_419_896.0);
        assert_eq!(decode_registers(&[0x7856, 0x3412], U32, DCBA), 305_419_896.0);
        assert_eq!(decode_registers(&[0xFFFF, 0xFFFE], I32, ABCD), -2.0);
        assert_eq!(decode_registers(&[0xFFFE, 0xFFFF], I32, CDAB), -2.0);
        assert_eq!(decode_registers(&[0xFF85], I16, ABCD), -123.0);
        assert_eq!(decode_registers(&[0x85FF], I16, BADC), -123.0);
        assert_eq!(decode_registers(&[0x85FF], I16, DCBA), -123.0);
        assert_eq!(decode_registers(&[0xFF85], I16, CDAB), -123.0);
        assert_eq!(decode_registers(&[0xFF85], U16, ABCD), 65413.0);
        // 0x0102030405060708 = 72623859790382856
        let w = [0x0102, 0x0304, 0x0506, 0x0708];
        assert_eq!(decode_registers(&w, U64, ABCD), 72_623_859_790_382_856.0);
        assert_eq!(decode_registers(&[0x0708, 0x0506, 0x0304, 0x0102], U64, CDAB), 72_623_859_790_382_856.0);
        assert_eq!(decode_registers(&[0x0201, 0x0403, 0x0605, 0x0807], U64, BADC), 72_623_859_790_382_856.0);
        assert_eq!(decode_registers(&[0x0807, 0x0605, 0x0403, 0x0201], U64, DCBA), 72_623_859_790_382_856.0);
        assert_eq!(decode_registers(&[0xFFFF, 0xFFFF, 0xFFFF, 0xFFF6], I64, ABCD), -10.0);
    }

    #[test]
    fn f64_known_registers() {
        // 1.5 = 0x3FF8_0000_0000_0000
        assert_eq!(decode_registers(&[0x3FF8, 0, 0, 0], F64, ABCD), 1.5);
        assert_eq!(decode_registers(&[0, 0, 0, 0x3FF8], F64, CDAB), 1.5);
        assert_eq!(decode_registers(&[0xF83F, 0, 0, 0], F64, BADC), 1.5);
        assert_eq!(decode_registers(&[0, 0, 0, 0xF83F], F64, DCBA), 1.5);
    }

    #[test]
    fn encode_is_the_inverse_of_decode_for_every_type_and_order() {
        let samples: [(DataType, f64); 8] =
            [(U16, 54321.0), (I16, -1234.0), (U32, 4_000_000_000.0), (I32, -2_000_000.0), (U64, 9.0e15), (I64, -9.0e15), (F32, -3.25), (F64, 2.718_281_828_459_1)];
        for (t, v) in samples {
            for o in WordOrder::ALL {
                let regs = encode_registers(v, t, o);
                assert_eq!(regs.len(), t.registers() as usize);
                assert_eq!(decode_registers(&regs, t, o), v, "{t:?} {o:?}");
            }
        }
    }

    #[test]
    fn wrong_order_gives_a_different_value() {
        let regs = encode_registers(21.5, F32, CDAB);
        assert_ne!(decode_registers(&regs, F32, ABCD), 21.5);
    }
}
