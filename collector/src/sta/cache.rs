//! The model (`model::Model`) is built once per change of what it is made
//! of, not per request: at 10,000 Datastreams a build takes tens of
//! milliseconds, and walking every Datastream by nextLink makes a hundred
//! requests. What it is made of: the catalogue (the `Arc` the collector
//! holds: a catalogue loaded anew is a new `Arc`, so keeping the one built
//! from holds its identity) and the set of series (the registry's
//! `series_generation`, bumped on a (sensor, metric) seen for the first
//! time; every reading the store keeps passes through the registry, and it
//! is seeded from the store at start-up). Values that change with every
//! reading (a Datastream's latest sample) are not in the model.

use std::sync::{Arc, Mutex};

use super::model::Model;
use super::policy::Audience;
use crate::catalogue::SensorEntry;
use crate::registry::Registry;
use crate::store::Store;

struct Built {
    catalogue: Arc<Vec<SensorEntry>>,
    generation: u64,
    model: Arc<Model>,
}

/// One model per audience (the public sees only open sensors).
#[derive(Default)]
pub struct ModelCache {
    public: Mutex<Option<Built>>,
    viewer: Mutex<Option<Built>>,
    builds: std::sync::atomic::AtomicU64,
}

impl ModelCache {
    /// The model for `audience`, built now if the catalogue or the set of series changed.
    pub fn get(&self, audience: Audience, catalogue: &Arc<Vec<SensorEntry>>, registry: &Registry, store: &dyn Store) -> Arc<Model> {
        let slot = match audience {
            Audience::Public => &self.public,
            Audience::Viewer => &self.viewer,
        };
        // Held while building: requests that arrive meanwhile wait for this build instead of each making their own.
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        // Read before the series: a series added during the build bumps it past what is kept, and the next request builds again.
        let generation = registry.series_generation();
        if let Some(b) = slot.as_ref().filter(|b| b.generation == generation && Arc::ptr_eq(&b.catalogue, catalogue)) {
            return b.model.clone();
        }
        let series = registry.series().into_iter().chain(store.series());
        let model = Arc::new(Model::build(catalogue, |e| audience.sees(e), series, crate::http::sensors::default_unit));
        self.builds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *slot = Some(Built { catalogue: catalogue.clone(), generation, model: model.clone() });
        model
    }

    /// Models built since start-up.
    pub fn builds(&self) -> u64 {
        self.builds.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{Quality, Sample};

    fn entry(id: &str) -> SensorEntry {
        toml::from_str(&format!("id = \"{id}\"\nkind = \"air_quality\"\nunits = {{ pm25 = \"ug/m3\" }}")).unwrap()
    }

    fn datastreams(m: &Model) -> Vec<&str> {
        m.datastreams.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn built_once_and_again_on_a_new_catalogue_or_a_new_series() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::RedbStore::open(dir.path()).unwrap();
        let registry = Registry::new(shared::clock::ManualClock::at(1_000_000));
        let cache = ModelCache::default();
        let catalogue = Arc::new(vec![entry("aq-1")]);
        let sample = |ts_ms| Sample { ts_ms, value: 1.0, quality: Quality::Good };
        registry.seed(&"aq-1".into(), &"pm25".into(), sample(5));
        let first = cache.get(Audience::Viewer, &catalogue, &registry, &store);
        assert_eq!(datastreams(&first), ["aq-1~pm25"]);
        let again = cache.get(Audience::Viewer, &catalogue, &registry, &store);
        assert!(Arc::ptr_eq(&first, &again), "nothing changed: the same model");

        // A newer reading of a known series is not a change of the model.
        registry.seed(&"aq-1".into(), &"pm25".into(), sample(6));
        assert!(Arc::ptr_eq(&first, &cache.get(Audience::Viewer, &catalogue, &registry, &store)));

        // A metric heard for the first time is a new Datastream.
        registry.seed(&"aq-1".into(), &"no2".into(), sample(6));
        let seen = cache.get(Audience::Viewer, &catalogue, &registry, &store);
        assert_eq!(datastreams(&seen), ["aq-1~no2", "aq-1~pm25"]);

        // A catalogue loaded anew (a new Arc) with one more sensor.
        let reloaded = Arc::new(vec![entry("aq-1"), entry("aq-2")]);
        let m = cache.get(Audience::Viewer, &reloaded, &registry, &store);
        assert_eq!(m.things.iter().map(|t| t.entry.id.as_str()).collect::<Vec<_>>(), ["aq-1", "aq-2"]);
        assert_eq!(datastreams(&m), ["aq-1~no2", "aq-1~pm25", "aq-2~pm25"]);

        // Each audience its own model: the public one has no closed sensor.
        assert!(cache.get(Audience::Public, &reloaded, &registry, &store).things.is_empty());
        assert_eq!(cache.builds(), 4);
    }
}
