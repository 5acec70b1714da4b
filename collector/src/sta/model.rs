//! The Sensing Core data model over what citysense holds. A `Model` holds
//! the structure: the visible catalogue entries (Things, and their
//! Locations, HistoricalLocations and FeaturesOfInterest), their series
//! (Datastreams: sensor × metric, from the catalogue's units, the store and
//! the live registry), device kinds (Sensors) and metrics
//! (ObservedProperties); it changes only with the catalogue or a new series,
//! so it is built once and shared by requests (`cache`). A `Graph` is a
//! request's view: the model plus what changes with every reading, read
//! from the registry for the entities a page shows (a Datastream's latest
//! sample, a Thing's gateway). Observations are the store's samples, read
//! when asked (`observations`). Entities are small handles into the model;
//! their JSON and their filter values are made from it on demand.

use std::collections::{BTreeSet, HashMap};
use std::ops::Deref;

use serde_json::{json, Map, Value as Json};
use shared::Sample;

use super::filter::eval::{Resolve, Value};
use super::filter::EvalError;
use super::ids::{self, Arity, Set};
use super::time;
use crate::catalogue::SensorEntry;
use crate::registry::Registry;
use crate::store::Store;

pub const OM_MEASUREMENT: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement";

pub struct Thing {
    pub entry: SensorEntry,
    pub datastreams: Vec<usize>,
    /// Index into `Graph::kinds`.
    pub kind: usize,
}

pub struct Datastream {
    pub thing: usize,
    pub metric: String,
    pub id: String,
    /// Index into `Graph::metrics`.
    pub property: usize,
    pub unit: Option<String>,
}

/// A handle on one entity of a `Graph`.
#[derive(Debug, Clone, PartialEq)]
pub enum Entity {
    Thing(usize),
    Location(usize),
    HistoricalLocation(usize),
    Datastream(usize),
    Sensor(usize),
    ObservedProperty(usize),
    FeatureOfInterest(usize),
    /// A stored sample of a Datastream.
    Observation(usize, Sample),
}

/// A collection: a whole entity set of the model (taken a page at a time),
/// entities in hand, or the observations of some Datastreams (read from the
/// store as needed, never all at once).
#[derive(Debug, Clone)]
pub enum Source {
    All(Set),
    List(Vec<Entity>),
    Observations(Vec<usize>),
}

/// Where a navigation property leads.
pub enum Nav {
    One(Option<Entity>),
    Many(Source),
}

/// The entities of the catalogue entries one audience sees, and how they
/// relate; nothing in it changes with a new reading of a known series.
pub struct Model {
    pub things: Vec<Thing>,
    pub datastreams: Vec<Datastream>,
    pub kinds: Vec<String>,
    pub metrics: Vec<String>,
    thing_ids: HashMap<String, usize>,
    ds_ids: HashMap<String, usize>,
    /// The Things with a location (those that have a Location), in id order.
    with_location: Vec<usize>,
    /// The Datastreams of each Sensor (device kind) and of each ObservedProperty (metric).
    by_kind: Vec<Vec<usize>>,
    by_metric: Vec<Vec<usize>>,
}

impl Model {
    /// The model of the catalogue entries `visible` lets through, with the
    /// series the registry and the store know of.
    pub fn build(
        catalogue: &[SensorEntry],
        visible: impl Fn(&SensorEntry) -> bool,
        series: impl IntoIterator<Item = (shared::SensorId, shared::Metric)>,
        units: impl Fn(&str) -> Option<&'static str>,
    ) -> Model {
        let mut entries: Vec<&SensorEntry> = catalogue.iter().filter(|e| visible(e)).collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        let kinds: Vec<String> = entries.iter().map(|e| e.kind.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let mut known: HashMap<shared::SensorId, BTreeSet<String>> = HashMap::new();
        for (s, m) in series {
            known.entry(s).or_default().insert(m.to_string());
        }
        let mut things = Vec::with_capacity(entries.len());
        let mut pending: Vec<(usize, String, Option<String>)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let mut metrics: BTreeSet<String> = e.units.keys().cloned().collect();
            metrics.extend(known.remove(e.id.as_str()).into_iter().flatten());
            for m in metrics {
                let unit = e.units.get(&m).cloned().or_else(|| units(&m).map(str::to_string));
                pending.push((i, m, unit));
            }
            let kind = kinds.binary_search(&e.kind).unwrap_or(0);
            things.push(Thing { entry: (*e).clone(), datastreams: Vec::new(), kind });
        }
        let metrics: Vec<String> = pending.iter().map(|p| p.1.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let mut datastreams: Vec<Datastream> = pending
            .into_iter()
            .map(|(thing, metric, unit)| Datastream {
                id: ids::datastream_id(&entries[thing].id, &metric),
                property: metrics.binary_search(&metric).unwrap_or(0),
                thing,
                metric,
                unit,
            })
            .collect();
        datastreams.sort_by(|a, b| a.id.cmp(&b.id));
        let (mut by_kind, mut by_metric) = (vec![Vec::new(); kinds.len()], vec![Vec::new(); metrics.len()]);
        for (d, ds) in datastreams.iter().enumerate() {
            things[ds.thing].datastreams.push(d);
            by_kind[things[ds.thing].kind].push(d);
            by_metric[ds.property].push(d);
        }
        let thing_ids = things.iter().enumerate().map(|(i, t)| (t.entry.id.to_string(), i)).collect();
        let ds_ids = datastreams.iter().enumerate().map(|(i, d)| (d.id.clone(), i)).collect();
        let with_location = (0..things.len()).filter(|t| things[*t].entry.lat.is_some() && things[*t].entry.lon.is_some()).collect();
        Model { things, datastreams, kinds, metrics, thing_ids, ds_ids, with_location, by_kind, by_metric }
    }

    fn located(&self, t: usize) -> Option<(f64, f64)> {
        let e = &self.things[t].entry;
        Some((e.lon?, e.lat?))
    }

    /// How many entities a set has.
    pub fn len(&self, set: Set) -> usize {
        match set {
            Set::Things | Set::FeaturesOfInterest => self.things.len(),
            Set::Locations | Set::HistoricalLocations => self.with_location.len(),
            Set::Datastreams => self.datastreams.len(),
            Set::Sensors => self.kinds.len(),
            Set::ObservedProperties => self.metrics.len(),
            Set::Observations => 0,
        }
    }

    /// The `i`th entity of a set, in the order of `all` (`i < len(set)`;
    /// not for Observations).
    pub fn nth(&self, set: Set, i: usize) -> Entity {
        match set {
            Set::Things => Entity::Thing(i),
            Set::FeaturesOfInterest => Entity::FeatureOfInterest(i),
            Set::Locations => Entity::Location(self.with_location[i]),
            Set::HistoricalLocations => Entity::HistoricalLocation(self.with_location[i]),
            Set::Datastreams => Entity::Datastream(i),
            Set::Sensors => Entity::Sensor(i),
            Set::ObservedProperties => Entity::ObservedProperty(i),
            Set::Observations => unreachable!("Observations are read from the store, not taken from the model"),
        }
    }
}

/// A request's view of the model: with the store, and the registry for what
/// changes with every reading.
pub struct Graph<'a> {
    pub model: &'a Model,
    pub store: &'a dyn Store,
    pub registry: &'a Registry,
}

impl Deref for Graph<'_> {
    type Target = Model;

    fn deref(&self) -> &Model {
        self.model
    }
}

impl<'a> Graph<'a> {
    /// The newest sample of a Datastream, from the live registry.
    pub fn latest(&self, d: usize) -> Option<Sample> {
        let ds = &self.datastreams[d];
        self.registry.latest(&self.things[ds.thing].entry.id, &ds.metric)
    }

    pub fn set_of(e: &Entity) -> Set {
        match e {
            Entity::Thing(_) => Set::Things,
            Entity::Location(_) => Set::Locations,
            Entity::HistoricalLocation(_) => Set::HistoricalLocations,
            Entity::Datastream(_) => Set::Datastreams,
            Entity::Sensor(_) => Set::Sensors,
            Entity::ObservedProperty(_) => Set::ObservedProperties,
            Entity::FeatureOfInterest(_) => Set::FeaturesOfInterest,
            Entity::Observation(..) => Set::Observations,
        }
    }

    pub fn id(&self, e: &Entity) -> String {
        match e {
            Entity::Thing(t) | Entity::Location(t) | Entity::HistoricalLocation(t) | Entity::FeatureOfInterest(t) => self.things[*t].entry.id.to_string(),
            Entity::Datastream(d) => self.datastreams[*d].id.clone(),
            Entity::Sensor(k) => self.kinds[*k].clone(),
            Entity::ObservedProperty(m) => self.metrics[*m].clone(),
            Entity::Observation(d, s) => {
                let ds = &self.datastreams[*d];
                ids::observation_id(&self.things[ds.thing].entry.id, &ds.metric, s.ts_ms)
            }
        }
    }

    /// Every entity of a set.
    pub fn all(&self, set: Set) -> Source {
        match set {
            Set::Observations => Source::Observations((0..self.datastreams.len()).collect()),
            _ => Source::All(set),
        }
    }

    pub fn datastream(&self, id: &str) -> Option<usize> {
        self.ds_ids.get(id).copied()
    }

    /// The entity of `set` with this id, if it exists and is visible.
    pub fn find(&self, set: Set, id: &str) -> Result<Option<Entity>, crate::store::StoreError> {
        let thing = self.thing_ids.get(id).copied();
        Ok(match set {
            Set::Things => thing.map(Entity::Thing),
            Set::FeaturesOfInterest => thing.map(Entity::FeatureOfInterest),
            Set::Locations => thing.filter(|t| self.located(*t).is_some()).map(Entity::Location),
            Set::HistoricalLocations => thing.filter(|t| self.located(*t).is_some()).map(Entity::HistoricalLocation),
            Set::Datastreams => self.datastream(id).map(Entity::Datastream),
            Set::Sensors => self.kinds.binary_search_by(|k| k.as_str().cmp(id)).ok().map(Entity::Sensor),
            Set::ObservedProperties => self.metrics.binary_search_by(|m| m.as_str().cmp(id)).ok().map(Entity::ObservedProperty),
            Set::Observations => {
                let Some((s, m, ts)) = ids::parse_observation(id) else { return Ok(None) };
                let Some(d) = self.datastream(&ids::datastream_id(s, m)) else { return Ok(None) };
                self.store.query(s, m, ts, ts, 1)?.into_iter().next().map(|sample| Entity::Observation(d, sample))
            }
        })
    }

    /// Where relation `name` of `e` leads, or None when `e` has no such relation.
    pub fn navigate(&self, e: &Entity, name: &str) -> Option<Nav> {
        let (target, _) = Graph::set_of(e).relation(name)?;
        let list = |v: Vec<Entity>| Some(Nav::Many(Source::List(v)));
        match (e, target) {
            (Entity::Thing(t), Set::Locations) | (Entity::HistoricalLocation(t), Set::Locations) => list(self.located(*t).map(|_| Entity::Location(*t)).into_iter().collect()),
            (Entity::Thing(t), Set::HistoricalLocations) | (Entity::Location(t), Set::HistoricalLocations) => {
                list(self.located(*t).map(|_| Entity::HistoricalLocation(*t)).into_iter().collect())
            }
            (Entity::Thing(t), Set::Datastreams) => list(self.things[*t].datastreams.iter().map(|d| Entity::Datastream(*d)).collect()),
            (Entity::Location(t), Set::Things) => list(vec![Entity::Thing(*t)]),
            (Entity::HistoricalLocation(t), Set::Things) => Some(Nav::One(Some(Entity::Thing(*t)))),
            (Entity::Datastream(d), Set::Things) => Some(Nav::One(Some(Entity::Thing(self.datastreams[*d].thing)))),
            (Entity::Datastream(d), Set::Sensors) => Some(Nav::One(Some(Entity::Sensor(self.things[self.datastreams[*d].thing].kind)))),
            (Entity::Datastream(d), Set::ObservedProperties) => Some(Nav::One(Some(Entity::ObservedProperty(self.datastreams[*d].property)))),
            (Entity::Datastream(d), Set::Observations) => Some(Nav::Many(Source::Observations(vec![*d]))),
            (Entity::Sensor(k), Set::Datastreams) => list(self.by_kind[*k].iter().map(|d| Entity::Datastream(*d)).collect()),
            (Entity::ObservedProperty(m), Set::Datastreams) => list(self.by_metric[*m].iter().map(|d| Entity::Datastream(*d)).collect()),
            (Entity::Observation(d, _), Set::Datastreams) => Some(Nav::One(Some(Entity::Datastream(*d)))),
            (Entity::Observation(d, _), Set::FeaturesOfInterest) => Some(Nav::One(Some(Entity::FeatureOfInterest(self.datastreams[*d].thing)))),
            (Entity::FeatureOfInterest(t), Set::Observations) => Some(Nav::Many(Source::Observations(self.things[*t].datastreams.clone()))),
            _ => None,
        }
    }

    fn point(&self, t: usize) -> Json {
        match self.located(t) {
            Some((lon, lat)) => json!({"type": "Point", "coordinates": [lon, lat]}),
            None => Json::Null,
        }
    }

    fn thing_name(&self, t: usize) -> String {
        let e = &self.things[t].entry;
        e.name.clone().unwrap_or_else(|| e.id.to_string())
    }

    /// A Datastream's time span: its first stored sample to its newest.
    fn span(&self, d: usize) -> Option<(i64, i64)> {
        let ds = &self.datastreams[d];
        let sensor = &self.things[ds.thing].entry.id;
        // Kept by the store in memory: a page shows this for each of its Datastreams.
        let first = self.store.first_ts(sensor, &ds.metric).ok()??;
        let last = self.latest(d).map_or(first, |l| l.ts_ms);
        Some((first, last.max(first)))
    }

    /// The entity's own properties as JSON (no id, no links).
    pub fn properties(&self, e: &Entity) -> Map<String, Json> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Json| {
            m.insert(k.to_string(), v);
        };
        match e {
            Entity::Thing(t) => {
                let e = &self.things[*t].entry;
                put("name", json!(self.thing_name(*t)));
                put("description", json!(format!("{} sensor {}{}", e.kind, e.id, e.district.as_deref().map(|d| format!(" in {d}")).unwrap_or_default())));
                let mut p = Map::new();
                p.insert("kind".into(), json!(e.kind));
                for (k, v) in [("owner", &e.owner), ("district", &e.district), ("installed", &e.installed), ("licence", &e.licence)] {
                    if let Some(v) = v {
                        p.insert(k.into(), json!(v));
                    }
                }
                if let Some(g) = self.registry.gateway(&e.id).or_else(|| e.gateway.clone()) {
                    p.insert("gateway".into(), json!(g));
                }
                p.insert("open".into(), json!(e.open));
                put("properties", Json::Object(p));
            }
            Entity::Location(t) => {
                put("name", json!(format!("{} location", self.thing_name(*t))));
                put("description", json!(format!("where sensor {} stands", self.things[*t].entry.id)));
                put("encodingType", json!("application/geo+json"));
                put("location", self.point(*t));
            }
            Entity::HistoricalLocation(t) => put("time", json!(time::format(self.installed_ms(*t)))),
            Entity::Datastream(d) => {
                let ds = &self.datastreams[*d];
                let thing = &self.things[ds.thing];
                put("name", json!(format!("{} {}", self.thing_name(ds.thing), ds.metric)));
                put("description", json!(format!("{} measured by {} sensor {}", ds.metric, thing.entry.kind, thing.entry.id)));
                put("observationType", json!(OM_MEASUREMENT));
                let unit = ds.unit.as_deref();
                put("unitOfMeasurement", json!({"name": unit, "symbol": unit, "definition": unit.map(|u| format!("urn:citysense:unit:{u}"))}));
                put("observedArea", self.point(ds.thing));
                let span = self.span(*d).map(|(a, b)| json!(time::format_interval(a, b))).unwrap_or(Json::Null);
                put("phenomenonTime", span.clone());
                put("resultTime", span);
                put("properties", json!({"sensor": thing.entry.id, "metric": ds.metric}));
            }
            Entity::Sensor(k) => {
                let kind = &self.kinds[*k];
                put("name", json!(kind));
                put("description", json!(format!("citysense {kind} devices")));
                put("encodingType", json!("text/plain"));
                put("metadata", json!(format!("device kind {kind} in the citysense catalogue")));
                put("properties", json!({}));
            }
            Entity::ObservedProperty(m) => {
                let metric = &self.metrics[*m];
                put("name", json!(metric));
                put("definition", json!(format!("urn:citysense:metric:{metric}")));
                put("description", json!(format!("the citysense metric {metric}")));
                put("properties", json!({}));
            }
            Entity::FeatureOfInterest(t) => {
                put("name", json!(format!("{} site", self.thing_name(*t))));
                put("description", json!(format!("the place sensor {} observes", self.things[*t].entry.id)));
                put("encodingType", json!("application/geo+json"));
                put("feature", self.point(*t));
                put("properties", json!({}));
            }
            Entity::Observation(_, s) => return observation_properties(s),
        }
        m
    }

    /// When a Thing came to its Location: its install date, else the epoch.
    fn installed_ms(&self, t: usize) -> i64 {
        self.things[t].entry.installed.as_deref().and_then(time::parse).map_or(0, |(ms, _)| ms)
    }

    /// The filter value of one property of `e` (typed: times and geometry are not strings).
    fn property_value(&self, e: &Entity, name: &str, rest: &[String]) -> Result<Value, EvalError> {
        let unknown =
            || EvalError::UnknownProperty { path: std::iter::once(name.to_string()).chain(rest.iter().cloned()).collect::<Vec<_>>().join("/"), set: Graph::set_of(e).name() };
        if name == "id" && rest.is_empty() {
            return Ok(Value::Str(self.id(e)));
        }
        if let Entity::Observation(_, s) = e {
            return match (name, rest.is_empty()) {
                ("phenomenonTime" | "resultTime", true) => Ok(Value::Time(s.ts_ms, 0)),
                ("result", true) => Ok(Value::Num(s.value)),
                ("resultQuality", true) => Ok(Value::Str(s.quality.as_str().into())),
                ("validTime" | "parameters", _) => Ok(Value::Null),
                _ => Err(unknown()),
            };
        }
        if let (Entity::Datastream(d), "phenomenonTime" | "resultTime", true) = (e, name, rest.is_empty()) {
            return Ok(self.span(*d).map_or(Value::Null, |(a, b)| Value::Interval(a, b)));
        }
        if let (Entity::HistoricalLocation(t), "time", true) = (e, name, rest.is_empty()) {
            return Ok(Value::Time(self.installed_ms(*t), 0));
        }
        if !Graph::set_of(e).properties().contains(&name) {
            return Err(unknown());
        }
        let props = self.properties(e);
        let mut v = props.get(name).unwrap_or(&Json::Null);
        for seg in rest {
            v = v.get(seg.as_str()).unwrap_or(&Json::Null);
        }
        Ok(Value::from_json(v))
    }

    /// The filter value at a path from `e`, following relations.
    pub fn resolve(&self, e: &Entity, path: &[String]) -> Result<Value, EvalError> {
        let (first, rest) = path.split_first().ok_or_else(|| EvalError::UnknownProperty { path: String::new(), set: Graph::set_of(e).name() })?;
        let set = Graph::set_of(e);
        match set.relation(first) {
            Some((_, arity)) => {
                if rest.is_empty() {
                    return Err(EvalError::UnknownProperty { path: path.join("/"), set: set.name() });
                }
                match self.navigate(e, first) {
                    Some(Nav::One(Some(next))) => self.resolve(&next, rest),
                    Some(Nav::One(None)) => Ok(Value::Null),
                    Some(Nav::Many(Source::List(items))) if arity == Arity::Many => Ok(Value::Many(items.iter().map(|i| self.resolve(i, rest)).collect::<Result<_, _>>()?)),
                    _ => Err(EvalError::NotNavigable { path: path.join("/"), set: set.name(), name: first.clone() }),
                }
            }
            None => self.property_value(e, first, rest),
        }
    }
}

/// An Observation's own properties: the sample's time (as both times: a
/// reading's result is produced when it is measured), value and quality.
pub fn observation_properties(s: &Sample) -> Map<String, Json> {
    let t = time::format(s.ts_ms);
    let mut m = Map::new();
    m.insert("phenomenonTime".into(), json!(t));
    m.insert("resultTime".into(), json!(t));
    m.insert("result".into(), json!(s.value));
    m.insert("resultQuality".into(), json!(s.quality.as_str()));
    m
}

/// An entity of a graph, as the filter evaluator sees it.
pub struct Bound<'g, 'a> {
    pub graph: &'g Graph<'a>,
    pub entity: &'g Entity,
}

impl Resolve for Bound<'_, '_> {
    fn resolve(&self, path: &[String]) -> Result<Value, EvalError> {
        self.graph.resolve(self.entity, path)
    }
}

#[cfg(test)]
mod tests {
    use super::super::filter::geo::Geometry;
    use super::*;

    #[test]
    fn geometry_of_a_location_reads_back_for_filters() {
        let v = Value::from_json(&json!({"type": "Point", "coordinates": [120.13, 30.26]}));
        assert_eq!(v, Value::Geo(Geometry::Point(120.13, 30.26)));
    }
}
