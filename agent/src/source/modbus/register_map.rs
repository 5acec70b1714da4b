//! `RegisterMap`: a device's points planned into as few read requests as the
//! protocol allows, and the decoding of each request's answer back into values.

use serde::Deserialize;

use crate::config::PointConfig;
use shared::modbus::{decode_registers, DataType, WordOrder};

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
    pub data_type: DataType,
    pub order: WordOrder,
    pub scale: f64,
    pub offset: f64,
}

impl From<&PointConfig> for Point {
    fn from(c: &PointConfig) -> Point {
        Point { metric: c.metric.clone(), table: c.table, address: c.address, data_type: c.data_type, order: c.order, scale: c.scale, offset: c.offset }
    }
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
                let joinable =
                    r.table == p.table && (p.address as u32) >= r_end && (p.address as u32 - r_end) <= max_gap as u32 && end - r.start as u32 <= p.table.max_per_request() as u32;
                if joinable {
                    r.count = (end - r.start as u32) as u16;
                    r.points.push(i);
                    continue;
                }
            }
            requests.push(Request { table: p.table, start: p.address, count: width, points: vec![i] });
        }
        RegisterMap { points, requests }
    }

    /// Values of a request's points from its answer: registers for word tables,
    /// bits (as 0/1 words) for bit tables. Scale and offset applied.
    pub fn decode(&self, request: &Request, words: &[u16]) -> Vec<(usize, f64)> {
        request
            .points
            .iter()
            .filter_map(|&i| {
                let p = &self.points[i];
                let from = (p.address - request.start) as usize;
                let regs = words.get(from..from + p.data_type.registers() as usize)?;
                let raw = decode_registers(regs, p.data_type, p.order);
                Some((i, raw * p.scale + p.offset))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(metric: &str, table: Table, address: u16, t: DataType) -> Point {
        Point { metric: metric.into(), table, address, data_type: t, order: WordOrder::ABCD, scale: 1.0, offset: 0.0 }
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
        assert!((values[0].1 - 25.0).abs() < 1e-9);
        assert_eq!(values[1].1, 65538.0);
    }
}
