//! What the simulated city contains: sensors, their kinds, where they stand,
//! their register maps, and how their values move over a day.

use serde::Serialize;
use shared::modbus::{DataType, WordOrder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    AirQuality,
    Traffic,
    WaterLevel,
    Noise,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::AirQuality => "air_quality",
            Kind::Traffic => "traffic",
            Kind::WaterLevel => "water_level",
            Kind::Noise => "noise",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Kind::AirQuality => "aq",
            Kind::Traffic => "tr",
            Kind::WaterLevel => "wl",
            Kind::Noise => "ns",
        }
    }
    pub fn owner(self) -> &'static str {
        match self {
            Kind::AirQuality | Kind::Noise => "Environment Bureau",
            Kind::Traffic => "Traffic Police Bureau",
            Kind::WaterLevel => "Water Resources Bureau",
        }
    }
}

/// One point of a device's register map.
#[derive(Debug, Clone, Serialize)]
pub struct PointSpec {
    pub metric: &'static str,
    pub table: &'static str,
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: &'static str,
    pub order: &'static str,
    pub scale: f64,
    pub unit: &'static str,
}

impl PointSpec {
    pub fn data_type(&self) -> DataType {
        DataType::parse(self.data_type).expect("sim types are valid")
    }
    pub fn order(&self) -> WordOrder {
        WordOrder::parse(self.order).expect("sim orders are valid")
    }
}

const fn p(metric: &'static str, table: &'static str, address: u16, data_type: &'static str, order: &'static str, scale: f64, unit: &'static str) -> PointSpec {
    PointSpec { metric, table, address, data_type, order, scale, unit }
}

/// Address of the read counter in each device's main register table.
pub const COUNTER_ADDRESS: u16 = 100;

/// The register maps, one per kind. Word orders differ on purpose: real
/// cabinets mix vendors, and each order must decode right end to end.
pub fn register_map(kind: Kind) -> Vec<PointSpec> {
    match kind {
        Kind::AirQuality => vec![
            p("pm25", "holding", 0, "f32", "ABCD", 1.0, "ug/m3"),
            p("pm10", "holding", 2, "f32", "CDAB", 1.0, "ug/m3"),
            p("no2", "holding", 4, "f32", "BADC", 1.0, "ug/m3"),
            p("temperature_c", "holding", 6, "i16", "ABCD", 0.1, "degC"),
            p("humidity_pct", "holding", 7, "u16", "ABCD", 0.1, "%"),
            p("counter", "holding", COUNTER_ADDRESS, "u32", "ABCD", 1.0, "count"),
        ],
        Kind::Traffic => vec![
            p("vehicle_count", "input", 0, "u32", "CDAB", 1.0, "vehicles"),
            p("occupancy", "input", 2, "u16", "ABCD", 0.1, "%"),
            p("speed_kmh", "input", 3, "f32", "DCBA", 1.0, "km/h"),
            p("counter", "input", COUNTER_ADDRESS, "u32", "ABCD", 1.0, "count"),
            p("detector_ok", "coil", 0, "bool", "ABCD", 1.0, "bool"),
        ],
        Kind::WaterLevel => vec![
            p("water_level_m", "holding", 0, "f64", "ABCD", 1.0, "m"),
            p("flow_m3s", "holding", 4, "f32", "CDAB", 1.0, "m3/s"),
            p("counter", "holding", COUNTER_ADDRESS, "u32", "ABCD", 1.0, "count"),
            p("pump_running", "discrete", 0, "bool", "ABCD", 1.0, "bool"),
        ],
        Kind::Noise => vec![],
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SensorSpec {
    pub id: String,
    pub kind: Kind,
    pub district: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// Index within its kind; spreads values so sensors differ.
    pub index: usize,
}

impl SensorSpec {
    pub fn owner(&self) -> &'static str {
        self.kind.owner()
    }
    pub fn metrics(&self) -> Vec<(&'static str, &'static str)> {
        match self.kind {
            Kind::Noise => vec![("noise_laeq", "dB(A)")],
            k => register_map(k).iter().map(|p| (p.metric, p.unit)).collect(),
        }
    }
}

const DISTRICTS: [(&str, f64, f64); 4] = [("Xihu", 30.259, 120.130), ("Shangcheng", 30.242, 120.171), ("Gongshu", 30.319, 120.142), ("Binjiang", 30.208, 120.211)];

/// How many sensors of each kind.
#[derive(Debug, Clone, Copy)]
pub struct City {
    pub air: usize,
    pub traffic: usize,
    pub water: usize,
    pub noise: usize,
}

impl Default for City {
    /// 24 sensors across four districts: the demo's city.
    fn default() -> Self {
        City { air: 8, traffic: 6, water: 4, noise: 6 }
    }
}

impl City {
    pub fn sensors(&self) -> Vec<SensorSpec> {
        let mut out = Vec::new();
        for (kind, n) in [(Kind::AirQuality, self.air), (Kind::Traffic, self.traffic), (Kind::WaterLevel, self.water), (Kind::Noise, self.noise)] {
            for i in 0..n {
                let (district, lat, lon) = DISTRICTS[(i + kind as usize) % DISTRICTS.len()];
                // A deterministic scatter of ~2 km around the district centre.
                let a = (i as f64 * 2.399963) + kind as usize as f64;
                let r = 0.004 + 0.012 * ((i * 7 + 3) % 10) as f64 / 10.0;
                out.push(SensorSpec { id: format!("{}-{:03}", kind.prefix(), i + 1), kind, district, lat: lat + r * a.sin(), lon: lon + r * a.cos(), index: i });
            }
        }
        out
    }
}

/// A small deterministic jitter in [-1, 1] from a time slot and a seed.
fn jitter(slot: i64, seed: usize) -> f64 {
    let mut x = (slot as u64).wrapping_mul(6364136223846793005).wrapping_add((seed as u64).wrapping_mul(1442695040888963407).wrapping_add(1));
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    (x % 2001) as f64 / 1000.0 - 1.0
}

/// The value a sensor's metric shows at `ts_ms` when nothing is forced. A
/// "day" lasts ten minutes so that a demo shows movement on its charts.
pub fn natural_value(sensor: &SensorSpec, metric: &str, ts_ms: i64) -> f64 {
    let day = 600_000.0;
    let phase = (ts_ms as f64 / day + sensor.index as f64 * 0.13) * std::f64::consts::TAU;
    let wave = phase.sin();
    let j = jitter(ts_ms / 1000, sensor.index * 31 + metric.len());
    let i = sensor.index as f64;
    match metric {
        "pm25" => (35.0 + 18.0 * wave + 3.0 * j + i).max(1.0),
        "pm10" => (60.0 + 25.0 * wave + 5.0 * j + i).max(2.0),
        "no2" => (28.0 + 12.0 * wave + 2.0 * j).max(1.0),
        "temperature_c" => 18.0 + 6.0 * wave + 0.3 * j,
        "humidity_pct" => (62.0 - 15.0 * wave + j).clamp(5.0, 100.0),
        "vehicle_count" => ((ts_ms / 1000) % 1_000_000) as f64 * (1.0 + 0.1 * i) + 1000.0 * i,
        "occupancy" => (22.0 + 15.0 * wave + 2.0 * j).clamp(0.0, 100.0),
        "speed_kmh" => (48.0 - 18.0 * wave + 3.0 * j).max(3.0),
        "detector_ok" | "pump_running" => {
            if metric == "pump_running" {
                f64::from(u8::from(wave > 0.6))
            } else {
                1.0
            }
        }
        "water_level_m" => 2.4 + 0.8 * wave + 0.02 * j + 0.1 * i,
        "flow_m3s" => (35.0 + 12.0 * wave + j).max(0.0),
        "noise_laeq" => 52.0 + 9.0 * wave + 2.5 * j + i,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_city_has_twenty_four_sensors_with_unique_ids() {
        let s = City::default().sensors();
        assert_eq!(s.len(), 24);
        let mut ids: Vec<&str> = s.iter().map(|x| x.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 24);
    }

    #[test]
    fn values_are_plausible_and_move() {
        let s = &City::default().sensors()[0];
        let a = natural_value(s, "pm25", 0);
        let b = natural_value(s, "pm25", 150_000);
        assert!((1.0..100.0).contains(&a) && (1.0..100.0).contains(&b));
        assert_ne!(a, b);
    }
}
