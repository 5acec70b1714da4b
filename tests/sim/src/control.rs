//! Anomalies forced on the simulated city: a value held above a limit, a
//! silent sensor, a device dropped off the network.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Control {
    forced: Mutex<HashMap<(String, String), f64>>,
    silent: Mutex<HashMap<String, bool>>,
    dropped: Mutex<HashMap<String, bool>>,
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

    /// Clears every forced metric of a sensor.
    pub fn clear_all(&self, sensor: &str) {
        self.forced.lock().unwrap().retain(|(s, _), _| s != sensor);
    }

    /// A dropped device is off the network: new connections are refused and
    /// open ones get no answer.
    pub fn set_dropped(&self, sensor: &str, dropped: bool) {
        self.dropped.lock().unwrap().insert(sensor.into(), dropped);
    }

    pub fn is_dropped(&self, sensor: &str) -> bool {
        self.dropped.lock().unwrap().get(sensor).copied().unwrap_or(false)
    }

    /// What is forced right now, for the control endpoint.
    pub fn snapshot(&self) -> serde_json::Value {
        let forced: Vec<serde_json::Value> = self.forced.lock().unwrap().iter().map(|((s, m), v)| serde_json::json!({"sensor": s, "metric": m, "value": v})).collect();
        let on = |m: &Mutex<HashMap<String, bool>>| m.lock().unwrap().iter().filter(|(_, v)| **v).map(|(k, _)| k.clone()).collect::<Vec<_>>();
        serde_json::json!({"forced": forced, "silent": on(&self.silent), "dropped": on(&self.dropped)})
    }

    /// Parses `SENSOR:METRIC=VALUE`, as given to `citysense-sim --force`.
    pub fn parse_force(s: &str) -> Result<(String, String, f64), String> {
        let (target, value) = s.split_once('=').ok_or_else(|| format!("`{s}`: write SENSOR:METRIC=VALUE"))?;
        let (sensor, metric) = target.split_once(':').ok_or_else(|| format!("`{s}`: write SENSOR:METRIC=VALUE"))?;
        let v: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
        Ok((sensor.into(), metric.into(), v))
    }
}
