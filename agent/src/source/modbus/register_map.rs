//! `RegisterMap`: a device's points planned into as few read requests as the
//! protocol allows, and the decoding of each request's answer back into values.

use serde::Deserialize;

use super::value::{raw_value, scaled};
use crate::config::PointConfig;
use shared::modbus::{DataType, WordOrder};
use shared::Quality;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Coil,
    Discrete,
    Input,
    Holding,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }

    pub fn parse(s: &str) -> Result<Table, UnknownTable> {
        [Table::Coil, Table::Discrete, Table::Input, Table::Holding].into_iter().find(|t| t.name() == s).ok_or_else(|| UnknownTable(s.to_string()))
    }

    /// The protocol's limit on one request (function codes 1-4).
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown table `{0}`; one of holding input coil discrete")]
pub struct UnknownTable(pub String);

/// One point as the poller needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub metric: String,
    pub table: Table,
    pub address: u16,
    /// The registers read (`U16` for a bit field).
    pub data_type: DataType,
    pub order: WordOrder,
    /// Bits first..=last of the register, for bit-field points.
    pub bits: Option<(u8, u8)>,
    pub scale: f64,
    pub offset: f64,
    /// Plausible (min, max): a value outside is sent as `uncertain`.
    pub range: Option<(f64, f64)>,
    pub unit: Option<String>,
}

impl Point {
    pub fn new(metric: &str, table: Table, address: u16, data_type: DataType) -> Point {
        Point { metric: metric.into(), table, address, data_type, order: WordOrder::ABCD, bits: None, scale: 1.0, offset: 0.0, range: None, unit: None }
    }
}

/// Built from a config that passed `check`, which refuses every point whose
/// location does not resolve.
impl From<&PointConfig> for Point {
    fn from(c: &PointConfig) -> Point {
        let (table, address) = c.location().expect("point locations are checked when the config is loaded");
        Point {
            metric: c.metric.clone(),
            table,
            address,
            data_type: c.point_type().registers_type(),
            order: c.word_order(),
            bits: c.bit_range(),
            scale: c.scale,
            offset: c.offset,
            range: c.range.map(|[a, b]| (a, b)),
            unit: c.unit.clone(),
        }
    }
}

/// One point's value from one answer, with the registers it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub point: usize,
    pub value: f64,
    pub quality: Quality,
    pub raw: Vec<u16>,
}

/// One read request and the points whose values it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indices into `RegisterMap::points`.
    pub points: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegisterMap {
    pub points: Vec<Point>,
    pub requests: Vec<Request>,
}

impl RegisterMap {
    /// Plans requests: per table, points sorted by address are joined while the
    /// hole between them is at most `max_gap` and the request stays within the
    /// protocol's size limit. Points must not overlap (config validation ensures it).
    pub fn plan(points: Vec<Point>, max_gap: u16) -> RegisterMap {
        let mut order: Vec<usize> = (0..points.len()).collect();
        order.sort_by_key(|&i| (points[i].table, points[i].address));
        let mut requests: Vec<Request> = Vec::new();
        for i in order {
            let p = &points[i];
            let width = p.data_type.registers();
            let end = p.address as u32 + width as u32; // exclusive
            if let Some(r) = requests.last_mut() {
                let r_end = r.start as u32 + r.count as u32;
                // Bit fields of one register share it, so a point may also
                // start inside the request so far.
                let joinable = r.table == p.table && (p.address as u32) <= r_end + max_gap as u32 && end.max(r_end) - r.start as u32 <= p.table.max_per_request() as u32;
                if joinable {
                    r.count = (end.max(r_end) - r.start as u32) as u16;
                    r.points.push(i);
                    continue;
                }
            }
            requests.push(Request { table: p.table, start: p.address, count: width, points: vec![i] });
        }
        RegisterMap { points, requests }
    }

    /// Values of a request's points from its answer: registers for word tables,
    /// bits (as 0/1 words) for bit tables. Scale and offset applied at the
    /// precision read, and `uncertain` outside the point's plausible range.
    pub fn decode(&self, request: &Request, words: &[u16]) -> Vec<Decoded> {
        request
            .points
            .iter()
            .filter_map(|&i| {
                let p = &self.points[i];
                let from = (p.address - request.start) as usize;
                let regs = words.get(from..from + p.data_type.registers() as usize)?;
                let value = scaled(raw_value(regs, p.data_type, p.order, p.bits), p.scale, p.offset);
                let quality = match p.range {
                    Some((lo, hi)) if !(lo..=hi).contains(&value) => Quality::Uncertain,
                    _ => Quality::Good,
                };
                Some(Decoded { point: i, value, quality, raw: regs.to_vec() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(metric: &str, table: Table, address: u16, t: DataType) -> Point {
        Point::new(metric, table, address, t)
    }

    #[test]
    fn contiguous_points_share_one_request_per_table() {
        let map = RegisterMap::plan(
            vec![
                pt("b", Table::Holding, 2, DataType::F32),
                pt("a", Table::Holding, 0, DataType::F32),
                pt("c", Table::Holding, 4, DataType::U16),
                pt("d", Table::Input, 4, DataType::U16),
                pt("e", Table::Coil, 0, DataType::Bool),
                pt("f", Table::Coil, 1, DataType::Bool),
            ],
            0,
        );
        let shape: Vec<(Table, u16, u16, usize)> = map.requests.iter().map(|r| (r.table, r.start, r.count, r.points.len())).collect();
        assert_eq!(shape, vec![(Table::Coil, 0, 2, 2), (Table::Input, 4, 1, 1), (Table::Holding, 0, 5, 3)]);
    }

    #[test]
    fn a_hole_splits_requests_unless_max_gap_allows_it() {
        let points = vec![pt("a", Table::Holding, 0, DataType::U16), pt("b", Table::Holding, 10, DataType::U16)];
        assert_eq!(RegisterMap::plan(points.clone(), 0).requests.len(), 2);
        let joined = RegisterMap::plan(points, 9);
        assert_eq!(joined.requests.len(), 1);
        assert_eq!(joined.requests[0].count, 11);
    }

    #[test]
    fn requests_never_exceed_125_registers() {
        let points: Vec<Point> = (0..100).map(|i| pt(&format!("m{i}"), Table::Holding, i * 2, DataType::F32)).collect();
        let map = RegisterMap::plan(points, 0);
        assert!(map.requests.iter().all(|r| r.count <= 125));
        assert_eq!(map.requests.len(), 2);
        assert_eq!(map.requests.iter().map(|r| r.points.len()).sum::<usize>(), 100);
    }

    #[test]
    fn decode_applies_scale_and_offset_per_point() {
        let mut a = pt("temp", Table::Holding, 0, DataType::I16);
        a.scale = 0.1;
        a.offset = -40.0;
        let b = pt("count", Table::Holding, 1, DataType::U32);
        let map = RegisterMap::plan(vec![a, b], 0);
        let values = map.decode(&map.requests[0], &[650, 0x0001, 0x0002]);
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].value, 25.0);
        assert_eq!(values[1].value, 65538.0);
        assert_eq!(values[1].raw, vec![0x0001, 0x0002]);
    }

    #[test]
    fn bit_fields_share_their_register_and_a_range_marks_implausible_values() {
        let mut alarm = pt("alarm", Table::Holding, 5, DataType::U16);
        alarm.bits = Some((0, 0));
        let mut mode = pt("mode", Table::Holding, 5, DataType::U16);
        mode.bits = Some((4, 7));
        let mut temp = pt("temp", Table::Holding, 6, DataType::I16);
        temp.scale = 0.1;
        temp.range = Some((-40.0, 50.0));
        let map = RegisterMap::plan(vec![alarm, mode, temp], 0);
        assert_eq!(map.requests.len(), 1, "{:?}", map.requests);
        assert_eq!((map.requests[0].start, map.requests[0].count), (5, 2));
        let v = map.decode(&map.requests[0], &[0x0031, 550]);
        let got: Vec<(f64, Quality)> = v.iter().map(|d| (d.value, d.quality)).collect();
        assert_eq!(got, vec![(1.0, Quality::Good), (3.0, Quality::Good), (55.0, Quality::Uncertain)]);
        let v = map.decode(&map.requests[0], &[0x0000, 215]);
        assert_eq!((v[2].value, v[2].quality), (21.5, Quality::Good));
    }
}
