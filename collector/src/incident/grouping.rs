//! Alerts → incidents: an alert joins the open incident that shares its
//! grouping key (rule, district, kind, … as configured) if that incident
//! heard its last alert within the window; an alert on a sensor and metric
//! the incident already has, within `merge_within` of it, is a duplicate
//! (two rules, or a flapping sensor, firing near-simultaneously) and is
//! merged without being announced. Pure: the caller gives the time.

use serde::{Deserialize, Serialize};

use super::Incident;
use crate::alert::Severity;

/// What alerts of one incident share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKey {
    Rule,
    District,
    Kind,
    Sensor,
    Severity,
    Department,
}

impl GroupKey {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKey::Rule => "rule",
            GroupKey::District => "district",
            GroupKey::Kind => "kind",
            GroupKey::Sensor => "sensor",
            GroupKey::Severity => "severity",
            GroupKey::Department => "department",
        }
    }
}

/// What is known about a fired alert when it is grouped: the alert and
/// what the catalogue and rules say about its sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub alert: u64,
    pub rule: String,
    pub sensor: String,
    pub metric: String,
    pub severity: Severity,
    pub ts_ms: i64,
    /// The reading that fired it, where one did: what names the alert on
    /// every collector of a cluster (`ts_ms` is this collector's clock).
    pub reading_ts_ms: Option<i64>,
    pub district: Option<String>,
    pub kind: Option<String>,
    pub gateway: Option<String>,
    /// The department that owns it (rule override, else the sensor's owner).
    pub department: Option<String>,
}

/// One alert of an incident, as the incident links it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertLink {
    pub id: u64,
    pub rule: String,
    pub sensor: String,
    pub metric: String,
    pub ts_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading_ts_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_ms: Option<i64>,
}

impl Facts {
    pub fn link(&self) -> AlertLink {
        AlertLink {
            id: self.alert,
            rule: self.rule.clone(),
            sensor: self.sensor.clone(),
            metric: self.metric.clone(),
            ts_ms: self.ts_ms,
            reading_ts_ms: self.reading_ts_ms,
            cleared_ms: None,
        }
    }
}

/// The grouping key's text, e.g. `district=Xihu kind=water_level`.
pub fn key(keys: &[GroupKey], f: &Facts) -> String {
    keys.iter()
        .map(|k| {
            let v = match k {
                GroupKey::Rule => Some(f.rule.as_str()),
                GroupKey::District => f.district.as_deref(),
                GroupKey::Kind => f.kind.as_deref(),
                GroupKey::Sensor => Some(f.sensor.as_str()),
                GroupKey::Severity => Some(f.severity.as_str()),
                GroupKey::Department => f.department.as_deref(),
            };
            format!("{}={}", k.as_str(), v.unwrap_or("-"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where a fired alert goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A duplicate of an alert already in this incident.
    Merge(u64),
    /// Joins this open incident.
    Join(u64),
    /// Opens a new incident.
    Open,
}

/// Where an alert with `facts` and grouping key `key` goes, among `incidents`.
pub fn decide<'a>(incidents: impl Iterator<Item = &'a Incident>, key: &str, f: &Facts, window_ms: i64, merge_ms: i64) -> Decision {
    let mut best: Option<&Incident> = None;
    for i in incidents.filter(|i| i.status.is_open() && i.group == key && f.ts_ms - i.last_alert_ms <= window_ms) {
        if best.is_none_or(|b| i.last_alert_ms > b.last_alert_ms) {
            best = Some(i);
        }
    }
    match best {
        None => Decision::Open,
        Some(i) if i.alerts.iter().any(|a| a.sensor == f.sensor && a.metric == f.metric && (f.ts_ms - a.ts_ms).abs() <= merge_ms) => Decision::Merge(i.id),
        Some(i) => Decision::Join(i.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::state::tests::incident;

    fn facts(alert: u64, sensor: &str, metric: &str, ts: i64, district: &str) -> Facts {
        Facts {
            alert,
            rule: "river-high".into(),
            sensor: sensor.into(),
            metric: metric.into(),
            severity: Severity::Critical,
            ts_ms: ts,
            reading_ts_ms: None,
            district: Some(district.into()),
            kind: Some("water_level".into()),
            gateway: None,
            department: Some("water".into()),
        }
    }

    #[test]
    fn a_river_rise_across_a_district_is_one_incident_and_another_district_is_another() {
        let keys = [GroupKey::District, GroupKey::Kind];
        let first = facts(1, "wl-001", "water_level_m", 0, "Xihu");
        let k = key(&keys, &first);
        assert_eq!(k, "district=Xihu kind=water_level");
        assert_eq!(decide([].iter(), &k, &first, 600_000, 5_000), Decision::Open);
        let mut open = incident(7, &first);
        open.group = k.clone();
        let second = facts(2, "wl-002", "water_level_m", 60_000, "Xihu");
        assert_eq!(decide([&open].into_iter(), &k, &second, 600_000, 5_000), Decision::Join(7));
        let elsewhere = facts(3, "wl-009", "water_level_m", 60_000, "Binjiang");
        assert_eq!(decide([&open].into_iter(), &key(&keys, &elsewhere), &elsewhere, 600_000, 5_000), Decision::Open);
        let late = facts(4, "wl-003", "water_level_m", 600_001, "Xihu");
        assert_eq!(decide([&open].into_iter(), &k, &late, 600_000, 5_000), Decision::Open, "past the window");
        open.status = crate::incident::Status::Resolved;
        assert_eq!(decide([&open].into_iter(), &k, &second, 600_000, 5_000), Decision::Open, "a resolved incident takes no alerts");
    }

    #[test]
    fn near_simultaneous_duplicates_are_merged() {
        let keys = [GroupKey::Rule];
        let first = facts(1, "wl-001", "water_level_m", 10_000, "Xihu");
        let mut open = incident(7, &first);
        open.group = key(&keys, &first);
        let mut twin = facts(2, "wl-001", "water_level_m", 12_000, "Xihu");
        twin.rule = "river-high".into();
        assert_eq!(decide([&open].into_iter(), &open.group.clone(), &twin, 600_000, 5_000), Decision::Merge(7));
        twin.ts_ms = 16_000;
        assert_eq!(decide([&open].into_iter(), &open.group.clone(), &twin, 600_000, 5_000), Decision::Join(7), "not near-simultaneous: a new alert of the incident");
        let other_metric = facts(3, "wl-001", "flow", 10_500, "Xihu");
        assert_eq!(decide([&open].into_iter(), &open.group.clone(), &other_metric, 600_000, 5_000), Decision::Join(7));
    }
}
