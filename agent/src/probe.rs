//! `citysense-agent probe modbus`: read a live device once and show every
//! register raw and decoded in each word order side by side, so the order is
//! read off the screen instead of guessed.

use std::fmt::Write as _;
use std::time::Duration;

use crate::source::modbus::poller::{read_once, ProbeReadError};
use crate::source::modbus::{decode_registers, AddressError, DataType, ModbusAddress, Table, WordOrder};

/// Why a probe cannot be made or failed; options are named as on the command line.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("--count must be 1..={max} for table {table}")]
    Count { max: u16, table: &'static str },
    #[error("--start + --count runs past address 65535")]
    PastLastAddress,
    #[error("--type bool needs --table coil or discrete")]
    BoolNeedsBits,
    #[error("table {0} holds bits: use --type bool or no --type")]
    BitsNeedBool(&'static str),
    #[error("{data_type} needs {registers} registers: raise --count")]
    RaiseCount { data_type: &'static str, registers: u16 },
    #[error(transparent)]
    Read(#[from] ProbeReadError),
}

pub struct Probe {
    pub address: ModbusAddress,
    pub unit: u8,
    pub table: Table,
    pub start: u16,
    pub count: u16,
    pub data_type: Option<DataType>,
    pub order: Option<WordOrder>,
    pub timeout: Duration,
}

impl Probe {
    /// `ADDR` as `tcp://HOST:PORT`, `HOST:PORT` or `HOST` (port 502).
    pub fn address(s: &str) -> Result<ModbusAddress, ProbeError> {
        Ok(if s.contains("://") { ModbusAddress::parse(s)? } else { ModbusAddress::parse(&format!("tcp://{s}"))? })
    }

    pub fn check(&self) -> Result<(), ProbeError> {
        if self.count == 0 || self.count > self.table.max_per_request() {
            return Err(ProbeError::Count { max: self.table.max_per_request(), table: self.table.name() });
        }
        if self.start as u32 + self.count as u32 > 65536 {
            return Err(ProbeError::PastLastAddress);
        }
        match self.data_type {
            Some(DataType::Bool) if !self.table.is_bits() => Err(ProbeError::BoolNeedsBits),
            Some(t) if self.table.is_bits() && t != DataType::Bool => Err(ProbeError::BitsNeedBool(self.table.name())),
            Some(t) if t.registers() > self.count => Err(ProbeError::RaiseCount { data_type: t.name(), registers: t.registers() }),
            _ => Ok(()),
        }
    }

    pub async fn run(&self) -> Result<String, ProbeError> {
        self.check()?;
        let words = read_once(&self.address, self.unit, self.table, self.start, self.count, self.timeout).await?;
        Ok(self.render(&words))
    }

    /// The report for registers already read; pure, so it is tested directly.
    pub fn render(&self, words: &[u16]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} unit {} {} {}..{} ({} values)", self.address, self.unit, self.table.name(), self.start, self.start as u32 + self.count as u32 - 1, words.len());
        if self.table.is_bits() {
            for (i, w) in words.iter().enumerate() {
                let _ = writeln!(out, "  {:>5}  {}", self.start as usize + i, if *w != 0 { "on (1)" } else { "off (0)" });
            }
            return out;
        }
        let _ = writeln!(out, "  {:>5}  {:>6}  {:>6}  {:>6}", "addr", "hex", "u16", "i16");
        for (i, w) in words.iter().enumerate() {
            let _ = writeln!(out, "  {:>5}  0x{:04X}  {:>6}  {:>6}", self.start as usize + i, w, w, *w as i16);
        }
        let Some(t) = self.data_type else {
            let _ = writeln!(out, "add --type (u32 i32 f32 u64 i64 f64 ...) to see values decoded in every word order");
            return out;
        };
        let width = t.registers() as usize;
        let _ = write!(out, "\n  {:>5}", "addr");
        for o in WordOrder::ALL {
            let mark = if Some(o) == self.order { "*" } else { "" };
            let _ = write!(out, "  {:>22}", format!("{} {}{mark}", t.name(), o.name()));
        }
        out.push('\n');
        let mut i = 0;
        while i + width <= words.len() {
            let _ = write!(out, "  {:>5}", self.start as usize + i);
            for o in WordOrder::ALL {
                let v = decode_registers(&words[i..i + width], t, o);
                let _ = write!(out, "  {:>22}", format_value(v, t));
            }
            out.push('\n');
            i += width;
        }
        if self.order.is_some() {
            let _ = writeln!(out, "  (* the order given with --order)");
        }
        out
    }
}

/// A float in the plausible order is printed as the shortest decimal that
/// gives back the same float (35.7, not 35.700001): the number `test` prints
/// and the agent sends, so probe and test agree digit for digit. Values far
/// from 1 (mostly the wrong orders' garbage) come in exponent form.
fn format_value(v: f64, t: DataType) -> String {
    match t {
        DataType::F32 | DataType::F64 => {
            if v.is_finite() && v.abs() < 1e12 && (v == 0.0 || v.abs() >= 1e-6) {
                if t == DataType::F32 {
                    (v as f32).to_string()
                } else {
                    v.to_string()
                }
            } else {
                format!("{v:.4e}")
            }
        }
        _ => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(t: Option<DataType>, order: Option<WordOrder>) -> Probe {
        Probe { address: ModbusAddress::Tcp("h:502".into()), unit: 1, table: Table::Holding, start: 0, count: 4, data_type: t, order, timeout: Duration::from_secs(1) }
    }

    #[test]
    fn every_order_is_shown_side_by_side_and_the_right_one_reads_plausibly() {
        let text = probe(Some(DataType::F32), Some(WordOrder::CDAB)).render(&[0xE979, 0x42F6, 0x0000, 0x41A0]);
        assert!(text.contains("0xE979") && text.contains("59769"), "{text}");
        assert!(text.contains("f32 CDAB*"), "{text}");
        let row = text.lines().find(|l| l.trim_start().starts_with("0  ") && l.contains('.')).unwrap();
        assert!(row.split_whitespace().any(|w| w == "123.456"), "the f32 as its shortest decimal: {row}");
        assert!(text.lines().any(|l| l.trim_start().starts_with("2 ") && l.contains(" 20 ")), "0x41A00000 is 20.0 in CDAB: {text}");
    }

    #[test]
    fn wrong_type_for_the_table_is_refused() {
        let mut p = probe(Some(DataType::Bool), None);
        assert!(p.check().unwrap_err().to_string().contains("coil or discrete"));
        p.data_type = Some(DataType::F64);
        p.count = 2;
        assert!(p.check().unwrap_err().to_string().contains("raise --count"));
    }
}
