//! Silences and maintenance windows: while one is active, alerts it matches
//! (by sensor pattern, gateway, district, kind) are recorded on it but open
//! no incident, so nothing is raised or escalated. One-off (`from`..`until`)
//! or weekly (days and a daily window at a UTC offset). Pure.

use serde::{Deserialize, Serialize};

use super::grouping::Facts;
use super::sla::{parse_hhmm, parse_offset, weekday, Day};
use crate::rules::rule::glob;

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// What a silence covers; every field given must match, at least one must be given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Sensor id pattern (`wl-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// When a silence holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// From `from_ms` until `until_ms` (epoch ms).
    Once { from_ms: i64, until_ms: i64 },
    /// Every `days` from `start` to `end` (`HH:MM`, local at `utc_offset`); `end` before `start` runs past midnight.
    Weekly {
        days: Vec<Day>,
        start: String,
        end: String,
        #[serde(default = "utc")]
        utc_offset: String,
    },
}

fn utc() -> String {
    "Z".into()
}

/// What a client sends to create a silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceSpec {
    #[serde(rename = "match")]
    pub matcher: Matcher,
    pub schedule: Schedule,
    /// Why (e.g. `pump station maintenance`).
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: u64,
    #[serde(flatten)]
    pub spec: SilenceSpec,
    /// Who created it (the token's name) and when: audited.
    pub created_by: String,
    pub created_ms: i64,
    /// Alerts it held back: recorded, not raised.
    #[serde(default)]
    pub held: Vec<u64>,
    /// Deleted then: kept, out of every list, so that a cluster's shared
    /// work read again does not make it anew (`super::work`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_ms: Option<i64>,
}

impl SilenceSpec {
    /// Every problem, naming the field; empty when usable.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let m = &self.matcher;
        if m.sensor.is_none() && m.gateway.is_none() && m.district.is_none() && m.kind.is_none() {
            p.push("match: give at least one of sensor, gateway, district, kind (a silence of everything hides every alert)".into());
        }
        if self.comment.trim().is_empty() {
            p.push("comment: say why (e.g. \"pump station maintenance\")".into());
        }
        match &self.schedule {
            Schedule::Once { from_ms, until_ms } if until_ms <= from_ms => p.push(format!("schedule.until_ms: {until_ms} is not after from_ms {from_ms}")),
            Schedule::Once { .. } => {}
            Schedule::Weekly { days, start, end, utc_offset } => {
                if days.is_empty() {
                    p.push("schedule.days: name at least one day (mon … sun)".into());
                }
                for (f, v) in [("start", start), ("end", end)] {
                    if parse_hhmm(v).is_none() {
                        p.push(format!("schedule.{f}: `{v}` is not HH:MM"));
                    }
                }
                if start == end {
                    p.push("schedule.end: equals start".into());
                }
                if parse_offset(utc_offset).is_none() {
                    p.push(format!("schedule.utc_offset: `{utc_offset}` is not an offset like +08:00 or Z"));
                }
            }
        }
        p
    }
}

impl Silence {
    pub fn active(&self, now: i64) -> bool {
        match &self.spec.schedule {
            Schedule::Once { from_ms, until_ms } => (*from_ms..*until_ms).contains(&now),
            Schedule::Weekly { days, start, end, utc_offset } => {
                let (Some(s), Some(e), Some(off)) = (parse_hhmm(start), parse_hhmm(end), parse_offset(utc_offset)) else { return false };
                let local = now + off * MINUTE_MS;
                let (day, minute) = (local.div_euclid(DAY_MS), local.rem_euclid(DAY_MS) / MINUTE_MS);
                let on = |d: i64| days.iter().any(|x| *x as i64 == weekday(d));
                if s < e {
                    on(day) && (s..e).contains(&minute)
                } else {
                    // Past midnight: the evening of a listed day, or the morning after it.
                    (on(day) && minute >= s) || (on(day - 1) && minute < e)
                }
            }
        }
    }

    /// Whether it ever ends: a one-off silence past its end is over for good.
    pub fn expired(&self, now: i64) -> bool {
        matches!(self.spec.schedule, Schedule::Once { until_ms, .. } if now >= until_ms)
    }

    pub fn matches(&self, f: &Facts) -> bool {
        let m = &self.spec.matcher;
        let eq = |want: &Option<String>, have: &Option<String>| want.as_ref().is_none_or(|w| have.as_ref() == Some(w));
        m.sensor.as_deref().is_none_or(|p| glob(p, &f.sensor)) && eq(&m.gateway, &f.gateway) && eq(&m.district, &f.district) && eq(&m.kind, &f.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::state::tests::facts;

    fn silence(matcher: Matcher, schedule: Schedule) -> Silence {
        Silence { id: 1, spec: SilenceSpec { matcher, schedule, comment: "maintenance".into() }, created_by: "li".into(), created_ms: 0, held: vec![], deleted_ms: None }
    }

    #[test]
    fn a_one_off_window_holds_between_its_times_for_what_it_matches() {
        let s = silence(Matcher { district: Some("Xihu".into()), ..Default::default() }, Schedule::Once { from_ms: 1_000, until_ms: 5_000 });
        assert!(!s.active(999) && s.active(1_000) && s.active(4_999) && !s.active(5_000));
        assert!(s.matches(&facts()));
        let mut other = facts();
        other.district = Some("Binjiang".into());
        assert!(!s.matches(&other));
        let by_sensor = silence(Matcher { sensor: Some("wl-*".into()), kind: Some("water_level".into()), ..Default::default() }, Schedule::Once { from_ms: 0, until_ms: 1 });
        assert!(by_sensor.matches(&facts()));
        let by_gateway = silence(Matcher { gateway: Some("gw-water".into()), ..Default::default() }, Schedule::Once { from_ms: 0, until_ms: 1 });
        assert!(!by_gateway.matches(&facts()));
        let mut carried = facts();
        carried.gateway = Some("gw-water".into());
        assert!(by_gateway.matches(&carried));
        assert!(s.expired(5_000) && !s.expired(4_999));
    }

    #[test]
    fn a_weekly_window_recurs_in_local_time_and_may_run_past_midnight() {
        // Fridays 22:00 to 02:00 at +08:00. 2026-11-27 is a Friday.
        let fri = 1_795_737_600_000 - 8 * 3_600_000; // local midnight
        let at = |days: i64, h: i64, m: i64| fri + days * DAY_MS + h * 3_600_000 + m * MINUTE_MS;
        let s = silence(
            Matcher { kind: Some("water_level".into()), ..Default::default() },
            Schedule::Weekly { days: vec![Day::Fri], start: "22:00".into(), end: "02:00".into(), utc_offset: "+08:00".into() },
        );
        assert!(!s.active(at(0, 21, 59)) && s.active(at(0, 22, 0)) && s.active(at(1, 1, 59)) && !s.active(at(1, 2, 0)));
        assert!(s.active(at(7, 23, 0)), "next Friday again");
        assert!(!s.active(at(1, 23, 0)), "not on Saturday evening");
        assert!(!s.expired(at(100, 0, 0)));
        let day = silence(
            Matcher { kind: Some("x".into()), ..Default::default() },
            Schedule::Weekly { days: vec![Day::Mon], start: "09:00".into(), end: "10:00".into(), utc_offset: "Z".into() },
        );
        let mon_utc = 1_795_737_600_000 + 3 * DAY_MS;
        assert!(day.active(mon_utc + 9 * 3_600_000) && !day.active(mon_utc + 10 * 3_600_000));
    }

    #[test]
    fn a_silence_of_everything_or_without_a_reason_is_refused() {
        let bad = SilenceSpec { matcher: Matcher::default(), schedule: Schedule::Once { from_ms: 5, until_ms: 5 }, comment: " ".into() };
        let p = bad.validate();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("match") && p[1].starts_with("comment") && p[2].starts_with("schedule.until_ms"));
    }
}
