use super::*;
use crate::alert::State;
use shared::{Quality, Reading, Seq};

const NOW: i64 = 1_800_000_000_000;

fn entry(id: &str, kind: &str, district: &str) -> Arc<SensorEntry> {
    let text = format!("id = \"{id}\"\nkind = \"{kind}\"\ndistrict = \"{district}\"\nlat = 30.2\nlon = 120.1\ngateway = \"gw-{district}\"");
    Arc::new(toml::from_str(&text).unwrap())
}

fn reading(sensor: &str, metric: &str, value: f64) -> Reading {
    Reading { seq: Seq(1), sensor: sensor.into(), metric: metric.into(), ts_ms: NOW, value, quality: Quality::Good }
}

fn alert(id: u64, sensor: &str, severity: Severity) -> Alert {
    Alert {
        id,
        rule: "r".into(),
        sensor: sensor.into(),
        metric: "m".into(),
        severity,
        state: State::Firing,
        value: None,
        threshold: None,
        started_ts_ms: NOW - id as i64,
        updated_ts_ms: NOW,
        acked_by: None,
        note: None,
        escalated: false,
        resolved_ts_ms: None,
        resolved_by: None,
        reading_ts_ms: None,
    }
}

fn rule(text: &str) -> Rule {
    toml::from_str(text).unwrap()
}

#[test]
fn districts_count_states_show_their_worst_alert_and_rank_worst_first() {
    let registry = Registry::new(shared::clock::ManualClock::at(NOW));
    let catalogue = [
        entry("aq-1", "air_quality", "North"),
        entry("aq-2", "air_quality", "North"),
        entry("wl-1", "water_level", "South"),
        entry("wl-2", "water_level", "South"),
        entry("ns-1", "noise", "East"),
    ];
    registry.stored(
        "gw-North",
        1,
        &std::sync::Arc::new(vec![reading("aq-1", "pm25", 80.0), reading("aq-1", "pm10", 160.0), reading("aq-2", "pm25", 80.0), reading("aq-2", "pm10", 160.0)]),
        4,
        0,
        Seq(4),
    );
    registry.stored("gw-South", 1, &std::sync::Arc::new(vec![reading("wl-1", "water_level_m", 4.3), reading("wl-2", "water_level_m", 2.0)]), 2, 0, Seq(2));
    // ns-1 never heard: stale. gw-East is offline, but ns-1 has no reading anyway.
    let open = [alert(7, "wl-1", Severity::Emergency), alert(8, "aq-2", Severity::Warning)];
    let rules = [rule("id = \"flood\"\nkind = \"threshold\"\nmetric = \"water_level_m\"\nop = \">\"\nvalue = 4.0\nseverity = \"emergency\"\nselect = { kind = \"water_level\" }")];
    let snap = build(NOW, &catalogue, &registry, &open, &rules, ["gw-East".to_string()].into());

    let by: HashMap<&str, &DistrictView> = snap.districts.iter().map(|d| (d.name.as_str(), d)).collect();
    let league: Vec<&str> = snap.districts.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(league, ["South", "North", "East"], "emergency first, then warning, then none");
    assert_eq!((by["South"].ok, by["South"].alerting, by["South"].rank), (1, 1, 1));
    assert_eq!(by["South"].worst.as_ref().map(|w| (w.id, w.severity)), Some((7, Severity::Emergency)));
    assert_eq!((by["East"].offline, by["East"].stale), (1, 0), "an offline gateway wins over never heard");
    assert_eq!((snap.city.sensors, snap.city.ok, snap.city.alerting, snap.city.offline, snap.city.open_alerts), (5, 2, 2, 1, 2));

    // PM2.5 80 -> IAQI 107 and PM10 160 -> 105: AQI 107 with PM2.5 primary (worked in `aqi`).
    let air = by["North"].indicators.aqi.clone().unwrap();
    assert_eq!((air.aqi, air.primary), (107, vec![aqi::Pollutant::Pm25]));
    // The river: 4.3 m against its 4.0 m line, one of two over it.
    let water = by["South"].indicators.water.clone().unwrap();
    assert_eq!((water.reporting, water.above, water.limit, water.max_sensor.as_deref()), (2, 1, Some(4.0), Some("wl-1")));
    assert!((water.margin.unwrap() - 0.3).abs() < 1e-9);
    assert!(by["North"].indicators.water.is_none());
}

#[test]
fn a_stale_sensor_adds_nothing_to_its_districts_figures() {
    let clock = shared::clock::ManualClock::at(NOW);
    let registry = Registry::new(clock.clone());
    let catalogue = [entry("aq-1", "air_quality", "North")];
    registry.stored("gw-North", 1, &std::sync::Arc::new(vec![reading("aq-1", "pm25", 300.0)]), 1, 0, Seq(1));
    let fresh = build(NOW, &catalogue, &registry, &[], &[], Default::default());
    assert_eq!(fresh.districts[0].indicators.aqi.as_ref().map(|a| a.aqi), Some(350));
    let later = build(NOW + crate::registry::STALE_MAX_MS + 1, &catalogue, &registry, &[], &[], Default::default());
    assert_eq!((later.districts[0].stale, later.districts[0].indicators.aqi.is_none()), (1, true));
}
