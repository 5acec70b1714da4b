//! The entity sets, their relations, and the ids citysense gives entities.
//! Ids are strings made of catalogue names, so they are stable across
//! restarts and never reused: a Thing, its Location, HistoricalLocation and
//! FeatureOfInterest are the sensor id (`aq-001`); a Datastream is sensor and
//! metric (`aq-001~pm25`); an Observation adds its time in epoch ms
//! (`aq-001~pm25~1700000000123`, one point per series and millisecond); a
//! Sensor is the device kind (`air_quality`); an ObservedProperty the metric.
//! `~` cannot occur in a sensor id or a metric (`shared::topics::valid_id`).

/// The eight entity sets of the Sensing Core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Set {
    Things,
    Locations,
    HistoricalLocations,
    Datastreams,
    Sensors,
    ObservedProperties,
    Observations,
    FeaturesOfInterest,
}

/// Where a navigation property leads: one entity or a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    One,
    Many,
}

impl Set {
    pub const ALL: [Set; 8] =
        [Set::Things, Set::Locations, Set::HistoricalLocations, Set::Datastreams, Set::Sensors, Set::ObservedProperties, Set::Observations, Set::FeaturesOfInterest];

    pub fn name(self) -> &'static str {
        match self {
            Set::Things => "Things",
            Set::Locations => "Locations",
            Set::HistoricalLocations => "HistoricalLocations",
            Set::Datastreams => "Datastreams",
            Set::Sensors => "Sensors",
            Set::ObservedProperties => "ObservedProperties",
            Set::Observations => "Observations",
            Set::FeaturesOfInterest => "FeaturesOfInterest",
        }
    }

    /// The name of a to-one navigation property leading to this set.
    pub fn singular(self) -> &'static str {
        match self {
            Set::Things => "Thing",
            Set::Locations => "Location",
            Set::HistoricalLocations => "HistoricalLocation",
            Set::Datastreams => "Datastream",
            Set::Sensors => "Sensor",
            Set::ObservedProperties => "ObservedProperty",
            Set::Observations => "Observation",
            Set::FeaturesOfInterest => "FeatureOfInterest",
        }
    }

    pub fn from_name(s: &str) -> Option<Set> {
        Set::ALL.into_iter().find(|set| set.name() == s)
    }

    /// The navigation properties of this set's entities, in the order the
    /// data model lists them: (name, target, arity).
    pub fn relations(self) -> &'static [(&'static str, Set, Arity)] {
        use Arity::*;
        match self {
            Set::Things => &[("Locations", Set::Locations, Many), ("HistoricalLocations", Set::HistoricalLocations, Many), ("Datastreams", Set::Datastreams, Many)],
            Set::Locations => &[("Things", Set::Things, Many), ("HistoricalLocations", Set::HistoricalLocations, Many)],
            Set::HistoricalLocations => &[("Thing", Set::Things, One), ("Locations", Set::Locations, Many)],
            Set::Datastreams => {
                &[("Thing", Set::Things, One), ("Sensor", Set::Sensors, One), ("ObservedProperty", Set::ObservedProperties, One), ("Observations", Set::Observations, Many)]
            }
            Set::Sensors => &[("Datastreams", Set::Datastreams, Many)],
            Set::ObservedProperties => &[("Datastreams", Set::Datastreams, Many)],
            Set::Observations => &[("Datastream", Set::Datastreams, One), ("FeatureOfInterest", Set::FeaturesOfInterest, One)],
            Set::FeaturesOfInterest => &[("Observations", Set::Observations, Many)],
        }
    }

    pub fn relation(self, name: &str) -> Option<(Set, Arity)> {
        self.relations().iter().find(|(n, _, _)| *n == name).map(|(_, s, a)| (*s, *a))
    }

    /// The entity's own (non-navigation) properties, as `$select` knows them.
    pub fn properties(self) -> &'static [&'static str] {
        match self {
            Set::Things => &["id", "name", "description", "properties"],
            Set::Locations => &["id", "name", "description", "encodingType", "location", "properties"],
            Set::HistoricalLocations => &["id", "time"],
            Set::Datastreams => &["id", "name", "description", "observationType", "unitOfMeasurement", "observedArea", "phenomenonTime", "resultTime", "properties"],
            Set::Sensors => &["id", "name", "description", "encodingType", "metadata", "properties"],
            Set::ObservedProperties => &["id", "name", "definition", "description", "properties"],
            Set::Observations => &["id", "phenomenonTime", "resultTime", "result", "resultQuality", "validTime", "parameters"],
            Set::FeaturesOfInterest => &["id", "name", "description", "encodingType", "feature", "properties"],
        }
    }
}

/// The separator inside composite ids.
pub const SEP: char = '~';

pub fn datastream_id(sensor: &str, metric: &str) -> String {
    format!("{sensor}{SEP}{metric}")
}

pub fn observation_id(sensor: &str, metric: &str, ts_ms: i64) -> String {
    format!("{sensor}{SEP}{metric}{SEP}{ts_ms}")
}

/// (sensor, metric) of a Datastream id.
pub fn parse_datastream(id: &str) -> Option<(&str, &str)> {
    let (s, m) = id.split_once(SEP)?;
    (!s.is_empty() && !m.is_empty() && !m.contains(SEP)).then_some((s, m))
}

/// (sensor, metric, time) of an Observation id.
pub fn parse_observation(id: &str) -> Option<(&str, &str, i64)> {
    let (ds, ts) = id.rsplit_once(SEP)?;
    let (s, m) = parse_datastream(ds)?;
    Some((s, m, ts.parse().ok()?))
}

/// `Set('id')`, the path of one entity under the service root.
pub fn entity_path(set: Set, id: &str) -> String {
    format!("{}('{}')", set.name(), id.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_ids_read_back() {
        assert_eq!(parse_datastream(&datastream_id("aq-001", "pm25")), Some(("aq-001", "pm25")));
        assert_eq!(parse_observation(&observation_id("aq-001", "pm25", 1_700_000_000_123)), Some(("aq-001", "pm25", 1_700_000_000_123)));
        assert_eq!(parse_datastream("aq-001"), None);
        assert_eq!(parse_observation("aq-001~pm25~x"), None);
        assert_eq!(entity_path(Set::Datastreams, "a~b"), "Datastreams('a~b')");
        for set in Set::ALL {
            assert_eq!(Set::from_name(set.name()), Some(set));
            for (_, target, arity) in set.relations() {
                // Every relation is navigable both ways.
                let back = target.relations().iter().any(|(_, s, _)| *s == set);
                assert!(back, "{} -> {} has no way back", set.name(), target.name());
                let _ = arity;
            }
        }
    }
}
