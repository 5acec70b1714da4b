//! `[[modbus.point]]`: where a value sits and how to read it. Register
//! locations may be written the way datasheets print them (Modicon references
//! such as "40101" = holding register at 0-based address 100), so a technician
//! copies the table instead of converting by hand; the conversion, and every
//! way of getting it wrong, is decided here.

use serde::Deserialize;

use crate::source::modbus::{DataType, Table, WordOrder};

/// A register location as written in `address` or `ref`.
#[derive(Debug, Clone, PartialEq)]
pub enum RegisterAddress {
    /// `address = 100`: a 0-based protocol address, kept as written so an
    /// out-of-range or datasheet-looking number can be explained by `check`.
    ZeroBased(u64),
    /// `address = "0x0064"`: 0-based, in hex as some datasheets print it; also
    /// the way to say "this device really is addressed at 0-based 40101".
    Hex(u16),
    /// `address = "40101"`, `address = "40101-40102"` or `ref = 40101`.
    Modicon(Modicon),
}

/// A datasheet (Modicon) reference: the first digit names the table
/// (0 coil, 1 discrete input, 3 input register, 4 holding register), the rest
/// counts registers from 1. Six digits ("400101") reach the whole 65536.
#[derive(Debug, Clone, PartialEq)]
pub struct Modicon {
    pub text: String,
    pub table: Table,
    /// 0-based protocol address.
    pub address: u16,
    /// Registers the datasheet's range spans ("40101-40102" is 2), if a range was written.
    pub span: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a register number: write a datasheet reference such as \"40101\" (holding register 40101 = 0-based address 100), \"30001\" or \"40101-40102\", a hex address such as \"0x0064\", or a 0-based number without quotes")]
pub struct BadRegister(pub String);

impl Modicon {
    pub fn parse(s: &str) -> Result<Modicon, BadRegister> {
        let bad = || BadRegister(s.to_string());
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), Some(b.trim())),
            None => (s.trim(), None),
        };
        let (table, address) = Self::one(first).ok_or_else(bad)?;
        let span = match last {
            None => None,
            Some(l) => {
                let (t2, a2) = Self::one(l).ok_or_else(bad)?;
                if t2 != table || a2 < address {
                    return Err(bad());
                }
                Some(a2 as u32 - address as u32 + 1)
            }
        };
        Ok(Modicon { text: s.to_string(), table, address, span })
    }

    fn one(s: &str) -> Option<(Table, u16)> {
        if !(s.len() == 5 || s.len() == 6) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let table = match s.as_bytes()[0] {
            b'0' => Table::Coil,
            b'1' => Table::Discrete,
            b'3' => Table::Input,
            b'4' => Table::Holding,
            _ => return None,
        };
        let n: u32 = s[1..].parse().ok()?;
        (1..=65536).contains(&n).then(|| (table, (n - 1) as u16))
    }

    /// How the datasheet's first digit names each table.
    pub fn prefix(table: Table) -> char {
        match table {
            Table::Coil => '0',
            Table::Discrete => '1',
            Table::Input => '3',
            Table::Holding => '4',
        }
    }
}

impl<'de> Deserialize<'de> for RegisterAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("write a 0-based number (100) or a datasheet reference in quotes (\"40101\")"))? {
            Raw::Int(n) if n < 0 => Err(serde::de::Error::custom(format!("{n} is negative: register addresses count from 0"))),
            Raw::Int(n) => Ok(RegisterAddress::ZeroBased(n as u64)),
            Raw::Text(s) => match s.trim().strip_prefix("0x").or_else(|| s.trim().strip_prefix("0X")) {
                Some(hex) => u16::from_str_radix(hex, 16).map(RegisterAddress::Hex).map_err(|_| serde::de::Error::custom(BadRegister(s.clone()))),
                None => Modicon::parse(&s).map(RegisterAddress::Modicon).map_err(serde::de::Error::custom),
            },
        }
    }
}

/// `ref = 40101`: always a datasheet reference, as a number or text.
#[derive(Debug, Clone, PartialEq)]
pub struct ModiconRef(pub Modicon);

impl<'de> Deserialize<'de> for ModiconRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("write a datasheet reference such as 40101"))? {
            Raw::Int(n) => format!("{n:05}"),
            Raw::Text(s) => s,
        };
        Modicon::parse(&text).map(ModiconRef).map_err(serde::de::Error::custom)
    }
}

/// `type`: a register type, or one bit (`"bit"`, with `bit = N`) or a bit
/// range (`"bits"`, with `bits = [FIRST, LAST]`) of a 16-bit register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PointType {
    Value(DataType),
    Bit,
    Bits,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown type `{0}`; one of bool u16 i16 u32 i32 u64 i64 f32 f64 bit bits")]
pub struct UnknownPointType(String);

impl TryFrom<String> for PointType {
    type Error = UnknownPointType;
    fn try_from(s: String) -> Result<PointType, UnknownPointType> {
        match s.as_str() {
            "bit" => Ok(PointType::Bit),
            "bits" => Ok(PointType::Bits),
            _ => DataType::parse(&s).map(PointType::Value).map_err(|_| UnknownPointType(s)),
        }
    }
}

/// Why a point's table and address cannot be known; `check` prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("give `address` (0-based) or `ref` (datasheet number), not both")]
    Both,
    #[error("missing `address` (0-based, e.g. 100) or `ref` (datasheet number, e.g. 40101)")]
    Neither,
    #[error("missing `table` (holding, input, coil or discrete); or write the address as a datasheet number such as \"40101\", which names it")]
    NoTable,
    #[error("{0} is past the last register address 65535")]
    PastEnd(u64),
    /// A 0-based address that reads like a datasheet number (see `datasheet_lookalike`).
    #[error("{0}")]
    Lookalike(String),
    #[error("datasheet number \"{text}\" is in the {table} table ({prefix}xxxx), but table = \"{given}\": drop `table` or fix the number")]
    TableMismatch { text: String, table: &'static str, prefix: char, given: &'static str },
    #[error("\"{text}\" spans {span} register(s) but type `{type_name}` takes {width}")]
    Span { text: String, span: u32, type_name: &'static str, width: u32 },
}

impl PointType {
    pub fn name(self) -> &'static str {
        match self {
            PointType::Value(t) => t.name(),
            PointType::Bit => "bit",
            PointType::Bits => "bits",
        }
    }

    /// The register type read: bit fields come out of one 16-bit register.
    pub fn registers_type(self) -> DataType {
        match self {
            PointType::Value(t) => t,
            PointType::Bit | PointType::Bits => DataType::U16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    pub metric: String,
    /// Optional with a datasheet reference, whose first digit names the table.
    pub table: Option<Table>,
    pub address: Option<RegisterAddress>,
    #[serde(rename = "ref")]
    pub reference: Option<ModiconRef>,
    /// Absent means u16: `check -v` says so, since a 32-bit value read as u16 is silently wrong.
    #[serde(rename = "type")]
    pub data_type: Option<PointType>,
    /// Absent means ABCD; shown by `check -v` for multi-register types.
    pub order: Option<WordOrder>,
    /// With `type = "bit"`: 0 (least significant) ..= 15.
    pub bit: Option<u8>,
    /// With `type = "bits"`: first and last bit, inclusive.
    pub bits: Option<[u8; 2]>,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Plausible `[min, max]`; a value outside is sent as `uncertain`.
    pub range: Option<[f64; 2]>,
    pub unit: Option<String>,
}

fn one() -> f64 {
    1.0
}

impl PointConfig {
    pub fn point_type(&self) -> PointType {
        self.data_type.unwrap_or(PointType::Value(DataType::U16))
    }

    pub fn word_order(&self) -> WordOrder {
        self.order.unwrap_or_default()
    }

    /// Bits `(first, last)` taken from the register, for bit-field types.
    pub fn bit_range(&self) -> Option<(u8, u8)> {
        match self.point_type() {
            PointType::Bit => self.bit.map(|b| (b, b)),
            PointType::Bits => self.bits.map(|[a, b]| (a, b)),
            PointType::Value(_) => None,
        }
    }

    /// The table and 0-based address, or why they cannot be known. `check`
    /// reports the error; a config that passed `check` always resolves.
    pub fn location(&self) -> Result<(Table, u16), LocationError> {
        match (&self.address, &self.reference) {
            (Some(_), Some(_)) => Err(LocationError::Both),
            (None, None) => Err(LocationError::Neither),
            (None, Some(ModiconRef(m))) | (Some(RegisterAddress::Modicon(m)), None) => self.modicon_location(m),
            (Some(RegisterAddress::Hex(a)), None) => Ok((self.table_required()?, *a)),
            (Some(RegisterAddress::ZeroBased(n)), None) => {
                // Before asking for a table: `address = 40101` without one is
                // a datasheet number copied as printed, and the conversion is
                // the fix to name, not the missing table.
                if let Some(hint) = datasheet_lookalike(*n) {
                    return Err(LocationError::Lookalike(hint));
                }
                let table = self.table_required()?;
                u16::try_from(*n).map(|a| (table, a)).map_err(|_| LocationError::PastEnd(*n))
            }
        }
    }

    fn table_required(&self) -> Result<Table, LocationError> {
        self.table.ok_or(LocationError::NoTable)
    }

    fn modicon_location(&self, m: &Modicon) -> Result<(Table, u16), LocationError> {
        if let Some(t) = self.table.filter(|t| *t != m.table) {
            return Err(LocationError::TableMismatch { text: m.text.clone(), table: m.table.name(), prefix: Modicon::prefix(m.table), given: t.name() });
        }
        let width = self.point_type().registers_type().registers() as u32;
        if let Some(span) = m.span.filter(|s| *s != width) {
            return Err(LocationError::Span { text: m.text.clone(), span, type_name: self.point_type().name(), width });
        }
        Ok((m.table, m.address))
    }
}

/// A 0-based address that reads like a datasheet number (5 digits, first
/// 1, 3 or 4): almost always the Modicon reference copied as is, which then
/// fails at run time with exception 2 or, worse, reads a neighbour.
fn datasheet_lookalike(n: u64) -> Option<String> {
    let text = n.to_string();
    let m = Modicon::parse(&text).ok().filter(|_| text.len() == 5)?;
    Some(format!(
        "{n} looks like a datasheet (Modicon) number: {} register {n} is 0-based address {}. Write `ref = {n}` (or address = \"{n}\"), or address = {}; if the device really is addressed at 0-based {n}, write address = \"0x{n:04X}\"",
        m.table.name(),
        m.address,
        m.address
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasheet_numbers_convert_to_table_and_zero_based_address() {
        let m = Modicon::parse("40101").unwrap();
        assert_eq!((m.table, m.address, m.span), (Table::Holding, 100, None));
        assert_eq!(Modicon::parse("30001").unwrap().address, 0);
        assert_eq!(Modicon::parse("30001").unwrap().table, Table::Input);
        assert_eq!(Modicon::parse("00001").unwrap().table, Table::Coil);
        assert_eq!(Modicon::parse("10003").unwrap().table, Table::Discrete);
        assert_eq!(Modicon::parse("465536").unwrap().address, 65535);
        assert_eq!(Modicon::parse("40101-40102").unwrap().span, Some(2));
        for bad in ["20001", "40000", "4010", "40101-30102", "40102-40101", "abcde"] {
            assert!(Modicon::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_zero_based_number_that_looks_like_a_datasheet_one_names_the_conversion() {
        let hint = datasheet_lookalike(40101).unwrap();
        assert!(hint.contains("holding register 40101 is 0-based address 100") && hint.contains("ref = 40101") && hint.contains("0x9CA5"), "{hint}");
        assert!(datasheet_lookalike(100).is_none());
        assert!(datasheet_lookalike(50000).is_none());
    }
}
