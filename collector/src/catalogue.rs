//! The catalogue of data resources (资源目录): each sensor's kind, owner,
//! district, location, gateway, install date and units, from `[[sensor]]`.
//! Everything downstream (rules, sink tags, export, the dashboard) reads it.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use shared::config::Problem;
use shared::topics::valid_id;
use shared::{GatewayId, SensorId};

/// One entry of the data-resource catalogue (资源目录).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SensorEntry {
    pub id: SensorId,
    pub kind: String,
    pub name: Option<String>,
    pub district: Option<String>,
    pub owner: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// The gateway that carries this sensor: only its readings of it are
    /// accepted (`ingest::ownership`).
    pub gateway: Option<GatewayId>,
    /// For a sensor that moves between gateways: every gateway that may
    /// carry it (together with `gateway`, if given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayId>,
    /// Install date, `YYYY-MM-DD`.
    pub installed: Option<String>,
    /// Unit per metric, e.g. `{ pm25 = "ug/m3" }`.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// Published as open data: served without a token by the SensorThings
    /// endpoint (`crate::sta`), under `licence`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// The licence its data is published under, e.g. `CC-BY-4.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
}

impl SensorEntry {
    /// The gateways whose readings of this sensor are accepted; empty when the
    /// catalogue names none (the sensor is then bound to the first gateway heard).
    pub fn owners(&self) -> Vec<GatewayId> {
        let mut out: Vec<GatewayId> = self.gateway.iter().chain(&self.gateways).cloned().collect();
        out.sort();
        out.dedup();
        out
    }

    /// Each entry, and no sensor catalogued twice.
    pub fn validate_all(sensors: &[SensorEntry], p: &mut Vec<Problem>) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, s) in sensors.iter().enumerate() {
            let path = format!("sensor[{i}]");
            if !valid_id(&s.id) {
                p.push(Problem::new(format!("{path}.id"), format!("`{}` is not a valid sensor id", s.id)));
            }
            if let Some(first) = seen.insert(&s.id, i) {
                p.push(Problem::new(format!("{path}.id"), format!("`{}` is already catalogued as sensor[{first}]", s.id)));
            }
            if s.kind.is_empty() {
                p.push(Problem::new(format!("{path}.kind"), "must not be empty"));
            }
            if s.lat.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
                p.push(Problem::new(format!("{path}.lat"), "must be between -90 and 90"));
            }
            if s.lon.is_some_and(|v| !(-180.0..=180.0).contains(&v)) {
                p.push(Problem::new(format!("{path}.lon"), "must be between -180 and 180"));
            }
            for g in s.gateway.iter().chain(&s.gateways) {
                if !valid_id(g) {
                    p.push(Problem::new(format!("{path}.gateway"), format!("`{g}` is not a valid gateway id")));
                }
            }
            if s.open && s.licence.as_deref().is_none_or(|l| l.trim().is_empty()) {
                p.push(Problem::new(format!("{path}.licence"), "an open sensor needs the licence its data is published under (e.g. licence = \"CC-BY-4.0\")"));
            }
            if s.lat.is_some() != s.lon.is_some() {
                p.push(Problem::new(path.clone(), "give both `lat` and `lon`, or neither"));
            }
        }
    }
}
