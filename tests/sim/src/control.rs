//! Anomalies forced on the simulated city: a value held above a limit, a
//! silent sensor, a device dropped off the network.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Control {
    forced: Mutex<HashMap<(String, String), f64>>,
    silent: Mutex<HashMap<String, bool>>,
}

impl Control {
    /// Holds `sensor`'s `metric` at `value` until `clear`.
    pub fn force(&self, sensor: &str, metric: &str, value: f64) {
        self.forced.lock().unwrap().insert((sensor.into(), metric.into()), value);
    }

    pub fn clear(&self, sensor: &str, metric: &str) {
        self.forced.lock().unwrap().remove(&(sensor.into(), metric.into()));
    }

    pub fn forced(&self, sensor: &str, metric: &str) -> Option<f64> {
        self.forced.lock().unwrap().get(&(sensor.to_string(), metric.to_string())).copied()
    }

    /// A silent sensor stays connected but never answers (Modbus) or publishes (MQTT).
    pub fn set_silent(&self, sensor: &str, silent: bool) {
        self.silent.lock().unwrap().insert(sensor.into(), silent);
    }

    pub fn is_silent(&self, sensor: &str) -> bool {
        self.silent.lock().unwrap().get(sensor).copied().unwrap_or(false)
    }

    /// Parses `SENSOR:METRIC=VALUE`, as given to `citysense-sim --force`.
    pub fn parse_force(s: &str) -> Result<(String, String, f64), String> {
        let (target, value) = s.split_once('=').ok_or_else(|| format!("`{s}`: write SENSOR:METRIC=VALUE"))?;
        let (sensor, metric) = target.split_once(':').ok_or_else(|| format!("`{s}`: write SENSOR:METRIC=VALUE"))?;
        let v: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
        Ok((sensor.into(), metric.into(), v))
    }
}
