//! The JSON citysense parses from outside: control-topic messages (`ack`,
//! `state`, `health`), sensor payloads on the agent's MQTT sources, and alert
//! rules posted to the collector's API. None of it may panic.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use agent::source::mqtt::{MessageMap, SensorFrom, TimestampFrom};
use collector::rules::rule::{glob, Rule};
use libfuzzer_sys::fuzz_target;
use shared::wire::{Ack, Health, State};

/// A few `[[mqtt]]` mappings like the ones in configs/agent.toml: sensor from a
/// topic level, from a JSON path or literal; timestamp from JSON or arrival;
/// fields by nested path, array index and `$` (bare number).
fn maps() -> &'static [(&'static str, MessageMap)] {
    static MAPS: OnceLock<Vec<(&'static str, MessageMap)>> = OnceLock::new();
    MAPS.get_or_init(|| {
        let fields = |pairs: &[(&str, &str)]| pairs.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect::<BTreeMap<_, _>>();
        vec![
            (
                "sensors/noise/ns-07",
                MessageMap {
                    sensor: SensorFrom::TopicLevel(2),
                    timestamp: Some(TimestampFrom::Json("ts".into())),
                    zoneless: Default::default(),
                    fields: fields(&[("noise_laeq", "laeq"), ("noise_lmax", "stats.max"), ("first", "samples.0")]),
                },
            ),
            (
                "weather/w",
                MessageMap {
                    sensor: SensorFrom::Json("id".into()),
                    timestamp: Some(TimestampFrom::Json("meta.t".into())),
                    zoneless: Default::default(),
                    fields: fields(&[("temperature_c", "v"), ("wind", "wind.speed")]),
                },
            ),
            ("lamps/3/lux", MessageMap { sensor: SensorFrom::Literal("lamp-3".into()), timestamp: None, zoneless: Default::default(), fields: fields(&[("lux", "$")]) }),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ack) = serde_json::from_slice::<Ack>(data) {
        let back: Ack = serde_json::from_str(&serde_json::to_string(&ack).unwrap()).unwrap();
        assert_eq!(back, ack);
        if let Some(mac) = &ack.mac {
            let _ = shared::auth::verify_ack(b"citysense-fuzz-key", "gw-1", ack.epoch, ack.seq, mac);
        }
    }
    if let Ok(state) = serde_json::from_slice::<State>(data) {
        let back: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
    }
    if let Ok(health) = serde_json::from_slice::<Health>(data) {
        // Floats need not survive text exactly; re-serializing must still work.
        let _ = serde_json::to_string(&health).unwrap();
    }
    for (topic, map) in maps() {
        if let Ok(readings) = map.map(topic, data, 1_700_000_000_000) {
            assert!(!readings.is_empty());
            assert!(readings.iter().all(|r| r.value.is_finite() && shared::topics::valid_id(&r.sensor)));
        }
    }
    if let Ok(rule) = serde_json::from_slice::<Rule>(data) {
        let problems = rule.validate();
        let _ = (rule.for_duration(), rule.escalate_duration());
        if let Some(pattern) = &rule.select.sensor {
            let _ = glob(pattern, &rule.id);
            let _ = glob(pattern, pattern);
        }
        if problems.is_empty() {
            let back: Rule = serde_json::from_str(&serde_json::to_string(&rule).unwrap()).unwrap();
            assert!(back.validate().is_empty(), "a valid rule re-read from its JSON is invalid: {rule:?}");
        }
    }
});
