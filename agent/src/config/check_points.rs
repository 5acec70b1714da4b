//! `check` for `[[modbus.point]]`: where each point sits (datasheet numbers
//! converted or refused with the conversion named), whether its type fits the
//! table, bit fields, ranges, and overlaps between points. Bit fields of one
//! register may share it as long as their bits do not overlap.

use std::collections::HashMap;

use shared::config::Problem;
use shared::topics::valid_id;

use super::{PointConfig, PointType};
use crate::source::modbus::{DataType, Table};

/// What a point occupies: registers first..=last, and bits of the register for bit fields.
struct Span {
    table: Table,
    first: u32,
    last: u32,
    bits: Option<(u8, u8)>,
    point: usize,
}

impl Span {
    fn overlaps(&self, o: &Span) -> bool {
        if self.table != o.table || self.first > o.last || o.first > self.last {
            return false;
        }
        match (self.bits, o.bits) {
            (Some((a, b)), Some((c, d))) => a <= d && c <= b,
            _ => true,
        }
    }
}

pub(super) fn validate_points(points: &[PointConfig], path: &str, p: &mut Vec<Problem>) {
    let mut metrics: HashMap<&str, usize> = HashMap::new();
    let mut spans: Vec<Span> = Vec::new();
    for (j, pt) in points.iter().enumerate() {
        let pp = format!("{path}.point[{j}]");
        if pt.metric.is_empty() || !valid_id(&pt.metric) {
            p.push(Problem::new(format!("{pp}.metric"), format!("`{}` is not a valid metric name", pt.metric)));
        }
        if let Some(first) = metrics.insert(&pt.metric, j) {
            p.push(Problem::new(format!("{pp}.metric"), format!("`{}` is already read by point[{first}] of this device", pt.metric)));
        }
        if !pt.scale.is_finite() || pt.scale == 0.0 {
            p.push(Problem::new(format!("{pp}.scale"), "must be a finite number other than 0"));
        }
        if !pt.offset.is_finite() {
            p.push(Problem::new(format!("{pp}.offset"), "must be a finite number"));
        }
        if let Some([lo, hi]) = pt.range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                p.push(Problem::new(format!("{pp}.range"), "write [min, max] with min below max, e.g. range = [-40, 80]"));
            }
        }
        check_bits(pt, &pp, p);
        // Problems of the location go on the key that was written.
        let key = if pt.reference.is_some() && pt.address.is_none() { "ref" } else { "address" };
        let (table, address) = match pt.location() {
            Ok(l) => l,
            Err(message) => {
                p.push(Problem::new(if pt.reference.is_none() && pt.address.is_none() { pp.clone() } else { format!("{pp}.{key}") }, message.to_string()));
                continue;
            }
        };
        let ty = pt.point_type();
        let bits_table = table.is_bits();
        match ty {
            PointType::Value(DataType::Bool) if !bits_table => p.push(Problem::new(
                format!("{pp}.type"),
                format!("\"bool\" needs table \"coil\" or \"discrete\", not `{}`; for one bit of a register use type = \"bit\"", table.name()),
            )),
            PointType::Value(DataType::Bool) => {}
            _ if bits_table => p.push(Problem::new(format!("{pp}.type"), format!("table `{}` holds single bits: type must be \"bool\"", table.name()))),
            _ => {}
        }
        let width = ty.registers_type().registers() as u32;
        let first = address as u32;
        let last = first + width - 1;
        if last > u16::MAX as u32 {
            p.push(Problem::new(format!("{pp}.{key}"), format!("{} at address {first} needs registers {first}..={last}, past the last address 65535", ty.name())));
            continue;
        }
        let span = Span { table, first, last, bits: pt.bit_range(), point: j };
        for o in spans.iter().filter(|o| o.overlaps(&span)) {
            let what = if span.bits.is_some() && o.bits.is_some() { "bits of register" } else { "registers" };
            let at = if o.first == o.last { o.first.to_string() } else { format!("{}..={}", o.first, o.last) };
            let mine = if first == last { first.to_string() } else { format!("{first}..={last}") };
            p.push(Problem::new(format!("{pp}.{key}"), format!("{what} {mine} of table `{}` overlap point[{}] ({}) at {at}", table.name(), o.point, points[o.point].metric)));
        }
        spans.push(span);
    }
}

/// `bit`/`bits` go with `type = "bit"`/`"bits"` and nothing else.
fn check_bits(pt: &PointConfig, pp: &str, p: &mut Vec<Problem>) {
    match pt.point_type() {
        PointType::Bit => match pt.bit {
            None => p.push(Problem::new(format!("{pp}.type"), "type = \"bit\" needs `bit = N` (0 = least significant, up to 15)")),
            Some(b) if b > 15 => p.push(Problem::new(format!("{pp}.bit"), format!("{b} is not a bit of a 16-bit register (0..=15)"))),
            Some(_) => {}
        },
        PointType::Bits => match pt.bits {
            None => p.push(Problem::new(format!("{pp}.type"), "type = \"bits\" needs `bits = [FIRST, LAST]` (0 = least significant, up to 15)")),
            Some([a, b]) if a > b || b > 15 => p.push(Problem::new(format!("{pp}.bits"), format!("[{a}, {b}] is not a bit range of a 16-bit register: first <= last <= 15"))),
            Some(_) => {}
        },
        PointType::Value(_) => {}
    }
    if pt.bit.is_some() && pt.point_type() != PointType::Bit {
        p.push(Problem::new(format!("{pp}.bit"), "`bit` needs type = \"bit\""));
    }
    if pt.bits.is_some() && pt.point_type() != PointType::Bits {
        p.push(Problem::new(format!("{pp}.bits"), "`bits` needs type = \"bits\""));
    }
    if pt.bit_range().is_some() && pt.order.is_some() {
        p.push(Problem::new(format!("{pp}.order"), "a bit field is taken from the register as read: bits count from the least significant; remove `order`"));
    }
}
