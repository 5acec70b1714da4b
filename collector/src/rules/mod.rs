//! Early warning (预警): rules, the engine that evaluates them, and alerts.

pub mod alerting;
pub mod engine;
pub mod rule;
pub mod store;

pub use crate::alert::{Alert, Change, Severity, State};
pub use engine::{Engine, Scope, SensorInfo};
pub use rule::Rule;

/// Why an operator's request on an alert or rule was refused.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("no alert {0}")]
    NotFound(u64),
    #[error("alert {0} is already resolved")]
    AlreadyResolved(u64),
    #[error("alert {0} is not open")]
    NotOpen(u64),
    #[error("a rule `{0}` already exists; delete it first")]
    RuleExists(String),
    #[error("no rule `{0}`")]
    NoRule(String),
    #[error(transparent)]
    Store(#[from] store::AlertStoreError),
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use shared::{Quality, Reading};

    fn rule(json: &str) -> Rule {
        let r: Rule = serde_json::from_str(json).unwrap();
        assert!(r.validate().is_empty(), "{:?}", r.validate());
        r
    }

    fn reading(sensor: &str, metric: &str, ts: i64, value: f64) -> Reading {
        Reading { seq: shared::Seq(0), sensor: sensor.into(), metric: metric.into(), ts_ms: ts, value, quality: Quality::Good }
    }

    fn catalogue() -> HashMap<shared::SensorId, SensorInfo> {
        HashMap::from([
            ("wl-001".into(), SensorInfo { kind: Some("water_level".into()), district: Some("Xihu".into()), gateway: None }),
            ("wl-002".into(), SensorInfo { kind: Some("water_level".into()), district: Some("Binjiang".into()), gateway: None }),
        ])
    }

    fn kinds(c: &[(Change, Alert)]) -> Vec<Change> {
        c.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn threshold_waits_for_its_duration_and_hysteresis_stops_flapping() {
        let r =
            rule(r#"{"id":"river","kind":"threshold","metric":"water_level_m","op":">","value":3.0,"clear":2.8,"for":"10s","severity":"critical","select":{"district":"Xihu"}}"#);
        let mut e = Engine::new(vec![r], catalogue(), vec![], 0);
        assert!(e.on_readings("gw", &[reading("wl-001", "water_level_m", 0, 3.2)], 0).is_empty(), "not before `for`");
        assert!(e.on_readings("gw", &[reading("wl-002", "water_level_m", 0, 9.9)], 1_000).is_empty(), "other district");
        let fired = e.on_readings("gw", &[reading("wl-001", "water_level_m", 10_000, 3.1)], 10_000);
        assert_eq!(kinds(&fired), vec![Change::Fired]);
        assert_eq!((fired[0].1.value, fired[0].1.threshold), (Some(3.1), Some(3.0)));
        // Hovering between clear and the limit: no flapping, one open alert.
        for (t, v) in [(11_000, 2.95), (12_000, 3.05), (13_000, 2.9), (14_000, 3.01)] {
            assert!(e.on_readings("gw", &[reading("wl-001", "water_level_m", t, v)], t).is_empty(), "{v}");
        }
        assert_eq!(e.alerts().filter(|a| a.is_open()).count(), 1);
        let cleared = e.on_readings("gw", &[reading("wl-001", "water_level_m", 15_000, 2.7)], 15_000);
        assert_eq!(kinds(&cleared), vec![Change::Resolved]);
        assert_eq!(cleared[0].1.resolved_by, None, "resolved by the condition clearing");
    }

    #[test]
    fn a_dip_below_the_limit_restarts_the_for_duration() {
        let r = rule(r#"{"id":"pm","kind":"threshold","metric":"pm25","op":">","value":75,"for":"10s","severity":"warning"}"#);
        let mut e = Engine::new(vec![r], HashMap::new(), vec![], 0);
        e.on_readings("gw", &[reading("aq-1", "pm25", 0, 80.0)], 0);
        e.on_readings("gw", &[reading("aq-1", "pm25", 6_000, 70.0)], 6_000);
        assert!(e.on_readings("gw", &[reading("aq-1", "pm25", 12_000, 80.0)], 12_000).is_empty());
        assert_eq!(kinds(&e.on_readings("gw", &[reading("aq-1", "pm25", 22_000, 81.0)], 22_000)), vec![Change::Fired]);
    }

    #[test]
    fn rate_fires_on_change_per_minute() {
        let r = rule(r#"{"id":"surge","kind":"rate","metric":"water_level_m","value":0.5,"severity":"emergency"}"#);
        let mut e = Engine::new(vec![r], HashMap::new(), vec![], 0);
        assert!(e.on_readings("gw", &[reading("wl-1", "water_level_m", 0, 2.0)], 0).is_empty());
        assert!(e.on_readings("gw", &[reading("wl-1", "water_level_m", 60_000, 2.3)], 60_000).is_empty(), "0.3/min");
        let fired = e.on_readings("gw", &[reading("wl-1", "water_level_m", 90_000, 2.8)], 90_000);
        assert_eq!(kinds(&fired), vec![Change::Fired]);
        assert!((fired[0].1.value.unwrap() - 1.0).abs() < 1e-9, "0.5 in 30 s is 1.0 per minute");
        assert_eq!(kinds(&e.on_readings("gw", &[reading("wl-1", "water_level_m", 150_000, 2.9)], 150_000)), vec![Change::Resolved]);
    }

    #[test]
    fn stale_fires_on_the_clock_and_clears_on_data() {
        let r = rule(r#"{"id":"silent","kind":"stale","for":"30s","severity":"warning","select":{"kind":"water_level"}}"#);
        let mut e = Engine::new(vec![r], catalogue(), vec![], 0);
        e.on_readings("gw", &[reading("wl-001", "water_level_m", 0, 1.0)], 0);
        assert!(e.tick(29_000).is_empty());
        // wl-002 never reported; wl-001 has been silent for 30 s.
        let fired = e.tick(30_000);
        let mut sensors: Vec<String> = fired.iter().map(|(_, a)| a.sensor.clone()).collect();
        sensors.sort();
        assert_eq!(sensors, vec!["wl-001", "wl-002"]);
        assert!(e.tick(40_000).is_empty(), "one open alert per sensor");
        let back = e.on_readings("gw", &[reading("wl-001", "water_level_m", 41_000, 1.0)], 41_000);
        assert_eq!(kinds(&back), vec![Change::Resolved]);
    }

    #[test]
    fn gateway_offline_from_the_last_will_and_from_silence() {
        let r = rule(r#"{"id":"gw-down","kind":"gateway_offline","for":"60s","severity":"critical"}"#);
        let mut e = Engine::new(vec![r], HashMap::new(), vec![], 0);
        e.on_gateway_heard("gw-a", 0);
        e.on_gateway_heard("gw-b", 0);
        let will = e.on_gateway_state("gw-a", false, 5_000);
        assert_eq!((kinds(&will), will[0].1.sensor.as_str()), (vec![Change::Fired], "gw-a"));
        let silence = e.tick(60_000);
        assert_eq!((kinds(&silence), silence[0].1.sensor.as_str()), (vec![Change::Fired], "gw-b"));
        assert_eq!(kinds(&e.on_gateway_state("gw-a", true, 61_000)), vec![Change::Resolved]);
    }

    #[test]
    fn clock_skew_fires_per_gateway_beyond_its_limit_and_clears_within() {
        let own = rule(r#"{"id":"clk","kind":"clock_skew","value":30,"severity":"warning","select":{"gateway":"gw-*"}}"#);
        let policy = rule(r#"{"id":"clk-policy","kind":"clock_skew","severity":"info"}"#);
        let mut e = Engine::new(vec![own, policy], HashMap::new(), vec![], 0).with_max_offset(std::time::Duration::from_secs(120));
        assert!(e.on_gateway_clock("gw-a", -29_000, 1).is_empty(), "within both limits");
        let fired = e.on_gateway_clock("gw-a", -60_000, 2);
        assert_eq!(kinds(&fired), vec![Change::Fired], "beyond 30 s, within the policy's 120 s");
        assert_eq!((fired[0].1.sensor.as_str(), fired[0].1.metric.as_str(), fired[0].1.value, fired[0].1.threshold), ("gw-a", "", Some(-60.0), Some(30.0)));
        // 2100: both fire, the policy rule with the policy's limit; another gateway is apart.
        let y74 = -2_335_000_000_000;
        let both = e.on_gateway_clock("gw-a", y74, 3);
        assert_eq!((kinds(&both), both[0].1.rule.as_str(), both[0].1.threshold), (vec![Change::Fired], "clk-policy", Some(120.0)));
        assert_eq!(e.alert(fired[0].1.id).unwrap().value, Some(y74 as f64 / 1000.0), "the open alert follows the offset");
        assert_eq!(kinds(&e.on_gateway_clock("other", y74, 4)), vec![Change::Fired], "only the policy rule selects `other`");
        // Hearing from it does not end a clock alert; a sound offset does.
        assert!(e.on_gateway_heard("gw-a", 5).is_empty());
        assert_eq!(kinds(&e.on_gateway_clock("gw-a", 250, 6)), vec![Change::Resolved, Change::Resolved]);
    }

    #[test]
    fn lifecycle_ack_resolve_and_escalation() {
        let r = rule(r#"{"id":"pm","kind":"threshold","metric":"pm25","op":">","value":75,"severity":"warning","escalate_after":"15m"}"#);
        let mut e = Engine::new(vec![r], HashMap::new(), vec![], 0);
        let a = e.on_readings("gw", &[reading("aq-1", "pm25", 0, 90.0)], 0)[0].1.clone();
        assert_eq!(kinds(&e.tick(15 * 60_000)), vec![Change::Escalated]);
        assert!(e.tick(16 * 60_000).is_empty(), "escalated once");
        let (c, acked) = e.ack(a.id, "duty officer Li".into(), Some("crew sent".into()), 17 * 60_000).unwrap();
        assert_eq!((c, acked.state, acked.acked_by.as_deref()), (Change::Acknowledged, State::Acknowledged, Some("duty officer Li")));
        // Still above the limit: the acknowledged alert is updated, not reopened.
        assert!(e.on_readings("gw", &[reading("aq-1", "pm25", 1, 95.0)], 18 * 60_000).is_empty());
        assert_eq!(e.alert(a.id).unwrap().value, Some(95.0));
        let (c, done) = e.resolve(a.id, Some("Li".into()), None, 19 * 60_000).unwrap();
        assert_eq!((c, done.state), (Change::Resolved, State::Resolved));
        assert!(e.ack(a.id, "x".into(), None, 0).is_err());
    }

    #[test]
    fn restoring_open_alerts_prevents_a_second_firing() {
        let r = rule(r#"{"id":"pm","kind":"threshold","metric":"pm25","op":">","value":75,"severity":"warning"}"#);
        let mut e = Engine::new(vec![r.clone()], HashMap::new(), vec![], 0);
        let fired = e.on_readings("gw", &[reading("aq-1", "pm25", 0, 90.0)], 0);
        let saved: Vec<Alert> = e.alerts().cloned().collect();
        let mut again = Engine::new(vec![r], HashMap::new(), saved, 10);
        assert!(again.on_readings("gw", &[reading("aq-1", "pm25", 1, 91.0)], 20).is_empty());
        let next = again.on_readings("gw", &[reading("aq-2", "pm25", 1, 91.0)], 30);
        assert!(next[0].1.id > fired[0].1.id, "ids keep growing across restarts");
    }

    /// A collector that crashed after persisting an alert but before storing
    /// the readings behind it gets them again from the agent: the older ones,
    /// below the threshold, must not resolve it (and the crossing fire again).
    #[test]
    fn readings_resent_after_a_restart_neither_clear_nor_fire_again() {
        let r = rule(r#"{"id":"count","kind":"threshold","metric":"counter","op":">","value":35,"severity":"warning"}"#);
        let batch: Vec<Reading> = (33..=37).map(|v| reading("aq-1", "counter", v * 100, v as f64)).collect();
        let mut e = Engine::new(vec![r.clone()], HashMap::new(), vec![], 0);
        assert_eq!(kinds(&e.on_readings("gw", &batch, 10)), vec![Change::Fired]);
        let saved: Vec<Alert> = e.alerts().cloned().collect();
        assert_eq!(saved[0].reading_ts_ms, Some(3600));
        let mut again = Engine::new(vec![r], HashMap::new(), saved, 20);
        assert!(again.on_readings("gw", &batch, 30).is_empty(), "the resent batch changed nothing");
        assert_eq!(kinds(&again.on_readings("gw", &[reading("aq-1", "counter", 3800, 30.0)], 40)), vec![Change::Resolved], "a newer reading still clears");
    }

    /// What a collector of a partitioned cluster holds: gateways named `a-…`,
    /// `a-gw` since `.0`, the others since the start.
    struct HoldsA(i64);

    impl Scope for HoldsA {
        fn gateway(&self, id: &str) -> bool {
            id.starts_with("a-")
        }
        fn unplaced(&self) -> bool {
            false
        }
        fn given_ms(&self, gateway: Option<&str>) -> i64 {
            if gateway == Some("a-gw") {
                self.0
            } else {
                0
            }
        }
    }

    #[test]
    fn time_driven_rules_answer_only_for_the_partitions_held() {
        let silent = rule(r#"{"id":"silent","kind":"stale","for":"30s","severity":"warning"}"#);
        let down = rule(r#"{"id":"down","kind":"gateway_offline","severity":"critical"}"#);
        let at = |g: &str| SensorInfo { gateway: Some(g.into()), ..SensorInfo::default() };
        let sensors = HashMap::from([("a-wl".into(), at("a-gw")), ("a-old".into(), at("a-old-gw")), ("b-wl".into(), at("b-gw")), ("nowhere".into(), SensorInfo::default())]);
        let mut e = Engine::new(vec![silent, down], sensors, vec![], 0);
        // a-gw's partition given at 40 s: its sensor is silent here since then
        // only; a-old-gw's held all along.
        e.set_scope(std::sync::Arc::new(HoldsA(40_000)));
        let fired: Vec<String> = e.tick(60_000).into_iter().map(|(_, a)| a.sensor).collect();
        assert_eq!(fired, ["a-old"], "heard elsewhere until 40 s, a-wl has been silent for 20 s only");
        let fired: Vec<String> = e.tick(70_000).into_iter().map(|(_, a)| a.sensor).collect();
        assert_eq!(fired, ["a-wl"], "only the held sensors are stale here");
        assert!(e.on_gateway_state("b-gw", false, 61_000).is_empty(), "another collector's gateway");
        let down: Vec<String> = e.on_gateway_state("a-gw", false, 62_000).into_iter().map(|(_, a)| a.sensor).collect();
        assert_eq!(down, ["a-gw"]);
    }

    #[test]
    fn an_alert_taken_over_goes_on_and_one_closed_elsewhere_closes_here() {
        let r = rule(r#"{"id":"hot","kind":"threshold","metric":"level","op":">","value":100,"severity":"critical"}"#);
        let mut before = Engine::new(vec![r.clone()], HashMap::new(), vec![], 0);
        let fired = before.on_readings("a-gw", &[reading("a-wl", "level", 1_000, 150.0)], 1_000);
        assert_eq!(kinds(&fired), vec![Change::Fired]);
        let theirs: Vec<Alert> = before.alerts().cloned().collect();

        let mut after = Engine::new(vec![r], HashMap::new(), vec![], 0);
        // Its own alert of the partition, closed by the other collector meanwhile.
        after.on_readings("a-gw", &[reading("a-old", "level", 500, 120.0)], 500);
        let everything = |_: Option<&str>| true;
        let changed = after.take_over(theirs.clone(), &everything, 2_000);
        let states: Vec<(String, State)> = changed.iter().map(|a| (a.sensor.clone(), a.state)).collect();
        assert_eq!(states, [("a-old".to_string(), State::Resolved), ("a-wl".to_string(), State::Firing)]);
        assert_eq!(after.open_alert("hot", "a-wl", "level").map(|a| a.started_ts_ms), Some(theirs[0].started_ts_ms));
        // The reading that fired it, read again, and one still over: nothing new.
        assert!(after.on_readings("a-gw", &[reading("a-wl", "level", 1_000, 150.0), reading("a-wl", "level", 1_100, 160.0)], 2_100).is_empty());
        assert_eq!(kinds(&after.on_readings("a-gw", &[reading("a-wl", "level", 1_200, 50.0)], 2_200)), vec![Change::Resolved]);
        // Taken over twice: nothing changes.
        let mut twice = Engine::new(vec![rule(r#"{"id":"hot","kind":"threshold","metric":"level","op":">","value":100,"severity":"critical"}"#)], HashMap::new(), vec![], 0);
        assert_eq!(twice.take_over(theirs.clone(), &everything, 2_000).len(), 1);
        assert!(twice.take_over(theirs, &everything, 2_000).is_empty());
    }

    #[test]
    fn a_collector_numbers_alerts_in_its_range_and_an_alert_taken_over_keeps_its_id() {
        let r = rule(r#"{"id":"hot","kind":"threshold","metric":"level","op":">","value":100,"severity":"critical"}"#);
        let base = 3 * engine::ID_RANGE;
        let mut a = Engine::new(vec![r.clone()], HashMap::new(), vec![], 0).with_id_range(base);
        let fired = a.on_readings("gw", &[reading("s1", "level", 1_000, 150.0)], 1_000);
        assert_eq!(fired[0].1.id, base);
        // Restarted with its alerts and another collector's: on from the highest of its own range.
        let mut other = fired[0].1.clone();
        (other.id, other.sensor) = (7 * engine::ID_RANGE + 5, "s2".into());
        let again = Engine::new(vec![r.clone()], HashMap::new(), vec![fired[0].1.clone(), other.clone()], 0).with_id_range(base);
        let mut again = again;
        assert_eq!(again.on_readings("gw", &[reading("s3", "level", 1_000, 150.0)], 1_000)[0].1.id, base + 1);
        // Taken over: the same id.
        let mut b = Engine::new(vec![r], HashMap::new(), vec![], 0).with_id_range(5 * engine::ID_RANGE);
        b.take_over(vec![other.clone()], &|_| true, 2_000);
        assert_eq!(b.open_alert("hot", "s2", "level").map(|a| a.id), Some(other.id));
    }
}
