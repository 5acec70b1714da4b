//! A series' (sensor, metric) borrowed from a reading, to look up the maps
//! keyed by the owned pair without allocating per reading: hashed as the
//! tuple of owned ids is, field by field, so a `hashbrown` map finds it.

use hashbrown::Equivalent;
use shared::{Metric, SensorId};

#[derive(Hash)]
pub struct SeriesRef<'a>(pub &'a str, pub &'a str);

impl Equivalent<(SensorId, Metric)> for SeriesRef<'_> {
    fn equivalent(&self, k: &(SensorId, Metric)) -> bool {
        self.0 == k.0.as_str() && self.1 == k.1.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_series_finds_the_owned_one() {
        let mut m: hashbrown::HashMap<(SensorId, Metric), u32> = hashbrown::HashMap::new();
        m.insert(("aq-1".into(), "pm25".into()), 7);
        assert_eq!(m.get(&SeriesRef("aq-1", "pm25")), Some(&7));
        assert_eq!(m.get(&SeriesRef("aq-1", "pm10")), None);
        // Not the same pair when the boundary between the ids moves.
        assert_eq!(m.get(&SeriesRef("aq-1p", "m25")), None);
    }
}
