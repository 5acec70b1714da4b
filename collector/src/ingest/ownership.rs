//! Ownership: which gateway may speak for which sensor.
//!
//! Batch keys prove which gateway sent a batch; they say nothing about the
//! sensors in it. Without this check one compromised (or misconfigured)
//! gateway could store readings — and raise alerts — for any sensor in the
//! city. So a reading is kept only when its gateway owns its sensor:
//!
//! - a catalogued sensor is owned by the gateway(s) its `[[sensor]]` entry
//!   names (`gateway`, `gateways`);
//! - any other sensor is bound to the first gateway heard carrying it, and the
//!   binding is stored, so a restart does not reopen the race. An operator
//!   moves it (`PUT /api/v1/sensors/{id}/gateway`).
//!
//! Refused readings are acknowledged with the batch (they were received and
//! judged; resending them changes nothing) and never stored.
//!
//! When collectors share the batch log by partition, two gateways carrying
//! one sensor may be judged by two collectors: each binding made here goes
//! to the cluster (`Claim`, `crate::cluster::bindings`), which keeps the
//! first, and every binding the cluster keeps comes back (`adopt`).

use std::collections::{HashMap, HashSet};

use shared::{GatewayId, Reading, SensorId};

use crate::catalogue::SensorEntry;

/// Why an operator's move of a sensor was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MoveError {
    #[error("sensor `{0}` is catalogued: its gateway is set by [[sensor]] gateway/gateways in the collector's config")]
    Catalogued(SensorId),
    #[error("`{0}` is not a valid gateway id")]
    InvalidGateway(String),
}

/// A binding made here, for the cluster to keep.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The first gateway this collector heard carrying the sensor: kept
    /// unless the cluster binds the sensor already.
    First(SensorId, GatewayId),
    /// An operator's move: kept whatever the cluster had.
    Moved(SensorId, GatewayId),
}

/// A reading refused because its gateway does not own its sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub sensor: SensorId,
    /// The gateway(s) that do own it.
    pub owners: Vec<GatewayId>,
}

/// One batch's readings, judged.
#[derive(Debug, Default)]
pub struct Judged {
    pub kept: Vec<Reading>,
    pub refused: Vec<Refused>,
    /// Sensors this batch is the first to carry: bound to its gateway once stored.
    pub bound: Vec<SensorId>,
}

pub struct Ownership {
    /// Catalogued sensors that name their gateway(s).
    catalogued: HashMap<SensorId, Vec<GatewayId>>,
    /// Every catalogued sensor, with or without a gateway.
    in_catalogue: HashSet<SensorId>,
    /// Uncatalogued (or gateway-less) sensors, bound to the first gateway heard.
    bound: HashMap<SensorId, GatewayId>,
}

impl Ownership {
    pub fn new(catalogue: &[SensorEntry], bindings: Vec<(SensorId, GatewayId)>) -> Ownership {
        let catalogued: HashMap<SensorId, Vec<GatewayId>> = catalogue.iter().map(|e| (e.id.clone(), e.owners())).filter(|(_, o)| !o.is_empty()).collect();
        // A binding made before the sensor was catalogued with a gateway is
        // overruled by the catalogue.
        let bound = bindings.into_iter().filter(|(s, _)| !catalogued.contains_key(s)).collect();
        Ownership { catalogued, in_catalogue: catalogue.iter().map(|e| e.id.clone()).collect(), bound }
    }

    /// The owners of `sensor`, if it has any yet.
    pub fn owners(&self, sensor: &str) -> Vec<GatewayId> {
        match self.catalogued.get(sensor) {
            Some(o) => o.clone(),
            None => self.bound.get(sensor).cloned().into_iter().collect(),
        }
    }

    /// Keeps the readings `gateway` owns. `pending` holds the bindings made
    /// by earlier batches of the same, not yet stored, group.
    pub fn judge(&self, gateway: &str, readings: Vec<Reading>, pending: &mut HashMap<SensorId, GatewayId>) -> Judged {
        let mut out = Judged::default();
        // Per reading: nothing allocated unless a sensor is bound or refused.
        for r in readings {
            let owners: &[GatewayId] = match self.catalogued.get(&r.sensor) {
                Some(o) => o,
                None => match self.bound.get(&r.sensor).or_else(|| pending.get(&r.sensor)) {
                    Some(g) => std::slice::from_ref(g),
                    None => {
                        pending.insert(r.sensor.clone(), gateway.into());
                        out.bound.push(r.sensor.clone());
                        out.kept.push(r);
                        continue;
                    }
                },
            };
            if owners.iter().any(|o| o.as_str() == gateway) {
                out.kept.push(r);
            } else {
                let owners = owners.to_vec();
                out.refused.push(Refused { sensor: r.sensor.clone(), owners });
            }
        }
        out
    }

    /// Bindings made: by an admitted group (provisionally, until its commit
    /// lands) or by an operator.
    pub fn commit(&mut self, bound: impl IntoIterator<Item = (SensorId, GatewayId)>) {
        self.bound.extend(bound);
    }

    /// A binding the cluster keeps; returns the owner it replaces when it
    /// changes this collector's (a catalogue that names the sensor's
    /// gateways overrules it).
    pub fn adopt(&mut self, sensor: SensorId, gateway: GatewayId) -> Option<Option<GatewayId>> {
        if self.catalogued.contains_key(&sensor) || self.bound.get(&sensor) == Some(&gateway) {
            return None;
        }
        Some(self.bound.insert(sensor, gateway))
    }

    /// Takes back a provisional binding whose commit failed.
    pub fn unbind(&mut self, sensor: &str) {
        self.bound.remove(sensor);
    }

    /// Checks an operator's move of `sensor` to `gateway`; the binding to store.
    pub fn check_move(&self, sensor: &str, gateway: &str) -> Result<(SensorId, GatewayId), MoveError> {
        if self.catalogued.contains_key(sensor) {
            return Err(MoveError::Catalogued(sensor.into()));
        }
        if !shared::topics::valid_id(gateway) {
            return Err(MoveError::InvalidGateway(gateway.chars().take(64).collect()));
        }
        Ok((sensor.into(), gateway.into()))
    }

    pub fn is_catalogued(&self, sensor: &str) -> bool {
        self.in_catalogue.contains(sensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{Quality, Seq};

    fn r(seq: u64, sensor: &str) -> Reading {
        Reading { seq: Seq(seq), sensor: sensor.into(), metric: "m".into(), ts_ms: 0, value: 1.0, quality: Quality::Good }
    }

    fn entry(id: &str, gateway: Option<&str>, gateways: &[&str]) -> SensorEntry {
        let mut e: SensorEntry = toml::from_str(&format!("id = \"{id}\"\nkind = \"k\"")).unwrap();
        e.gateway = gateway.map(Into::into);
        e.gateways = gateways.iter().map(|g| (*g).into()).collect();
        e
    }

    #[test]
    fn only_the_catalogued_gateways_speak_for_a_sensor() {
        let o = Ownership::new(&[entry("wl-1", Some("gw-b"), &[]), entry("bus-1", None, &["gw-a", "gw-b"])], vec![("wl-1".into(), "gw-a".into())]);
        let mut pending = HashMap::new();
        let j = o.judge("gw-a", vec![r(1, "wl-1"), r(2, "bus-1"), r(3, "wl-1")], &mut pending);
        assert_eq!(j.kept.iter().map(|r| r.seq.get()).collect::<Vec<_>>(), [2]);
        assert_eq!(j.refused.len(), 2, "one per reading");
        assert_eq!(j.refused[0].owners, ["gw-b"], "a stale binding does not overrule the catalogue");
        assert!(j.bound.is_empty());
        assert_eq!(o.judge("gw-b", vec![r(4, "wl-1"), r(5, "bus-1")], &mut pending).kept.len(), 2);
    }

    #[test]
    fn an_uncatalogued_sensor_belongs_to_the_first_gateway_heard_until_moved() {
        let mut o = Ownership::new(&[entry("aq-1", None, &[])], vec![]);
        let mut pending = HashMap::new();
        let j = o.judge("gw-a", vec![r(1, "x-1"), r(2, "aq-1")], &mut pending);
        assert_eq!((j.kept.len(), j.bound.len()), (2, 2));
        // Another batch of the same group, from another gateway.
        let j = o.judge("gw-b", vec![r(1, "x-1")], &mut pending);
        assert_eq!((j.kept.len(), j.refused[0].owners.clone()), (0, vec![GatewayId::from("gw-a")]));
        o.commit(pending.drain());
        assert_eq!(o.owners("x-1"), ["gw-a"]);
        assert!(o.check_move("aq-1", "gw-b").is_ok(), "catalogued without a gateway: movable");
        let (s, g) = o.check_move("x-1", "gw-b").unwrap();
        o.commit([(s, g)]);
        assert_eq!(o.judge("gw-b", vec![r(2, "x-1")], &mut pending).kept.len(), 1);
        // The cluster's binding, where it differs.
        assert_eq!(o.adopt("x-1".into(), "gw-b".into()), None, "the same: nothing to change");
        assert_eq!(o.adopt("x-1".into(), "gw-c".into()), Some(Some("gw-b".into())));
        assert_eq!(o.owners("x-1"), ["gw-c"]);
        assert_eq!(o.adopt("y-1".into(), "gw-c".into()), Some(None), "one never heard here");
        let mut o = Ownership::new(&[entry("wl-1", Some("gw-b"), &[])], vec![]);
        assert_eq!(o.adopt("wl-1".into(), "gw-a".into()), None, "the catalogue overrules the cluster");
        assert_eq!(o.check_move("wl-1", "gw-a"), Err(MoveError::Catalogued("wl-1".into())));
        assert!(matches!(o.check_move("x", "bad id"), Err(MoveError::InvalidGateway(_))));
    }
}
