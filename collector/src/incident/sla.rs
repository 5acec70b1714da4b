//! Deadlines (SLA): time to acknowledge and to resolve per severity and
//! department, counted on the clock or in working hours only; and which
//! timer is due at a given time. Pure functions of the time they are given.

use serde::{Deserialize, Serialize};
use shared::config::Problem;

use super::{Deadlines, Incident, Status};
use crate::alert::Severity;

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// One deadline pair; `severity` omitted applies to every severity not named.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlaEntry {
    pub severity: Option<Severity>,
    /// Time to acknowledge.
    pub acknowledge: Option<String>,
    /// Time to resolve.
    pub resolve: Option<String>,
}

fn parse_ms(s: &Option<String>) -> Option<i64> {
    s.as_deref().and_then(|s| humantime::parse_duration(s).ok()).map(|d| d.as_millis().min(i64::MAX as u128) as i64)
}

impl SlaEntry {
    pub fn acknowledge_ms(&self) -> Option<i64> {
        parse_ms(&self.acknowledge)
    }
    pub fn resolve_ms(&self) -> Option<i64> {
        parse_ms(&self.resolve)
    }

    /// The entry for `severity`, else the one without a severity.
    pub fn pick(entries: &[SlaEntry], severity: Severity) -> Option<&SlaEntry> {
        entries.iter().find(|e| e.severity == Some(severity)).or_else(|| entries.iter().find(|e| e.severity.is_none()))
    }

    pub fn validate_all(entries: &[SlaEntry], path: &str, p: &mut Vec<Problem>) {
        let mut seen = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            for (field, v) in [("acknowledge", &e.acknowledge), ("resolve", &e.resolve)] {
                if let Some(s) = v {
                    match humantime::parse_duration(s) {
                        Ok(d) if d.is_zero() => p.push(Problem::new(format!("{path}[{i}].{field}"), "must be more than 0s")),
                        Ok(_) => {}
                        Err(err) => p.push(Problem::new(format!("{path}[{i}].{field}"), format!("`{s}` is not a duration ({err}); write e.g. \"15m\", \"4h\""))),
                    }
                }
            }
            if e.acknowledge.is_none() && e.resolve.is_none() {
                p.push(Problem::new(format!("{path}[{i}]"), "give `acknowledge`, `resolve` or both"));
            }
            if seen.contains(&e.severity) {
                p.push(Problem::new(format!("{path}[{i}].severity"), "a second entry for the same severity"));
            }
            seen.push(e.severity);
        }
    }
}

/// Days of the week, as a calendar names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    /// Monday = 0.
    fn index(self) -> i64 {
        self as i64
    }
}

/// The weekday (Monday = 0) of a day counted from 1970-01-01, a Thursday.
pub fn weekday(day: i64) -> i64 {
    (day + 3).rem_euclid(7)
}

/// `HH:MM` → minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

/// `+08:00` / `-05:30` / `Z` → minutes east of UTC.
pub fn parse_offset(s: &str) -> Option<i64> {
    if s == "Z" || s == "+00:00" {
        return Some(0);
    }
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let m = parse_hhmm(&s[1..])?;
    (m <= 14 * 60).then_some(sign * m)
}

/// Working hours: the days and the daily window (local time at a fixed UTC offset).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    pub days: Vec<Day>,
    /// `09:00`
    pub start: String,
    /// `18:00`
    pub end: String,
    /// `+08:00`; `Z` by default.
    #[serde(default = "utc")]
    pub utc_offset: String,
}

fn utc() -> String {
    "Z".into()
}

impl Calendar {
    pub fn validate(&self, path: &str, p: &mut Vec<Problem>) {
        if self.days.is_empty() {
            p.push(Problem::new(format!("{path}.days"), "name at least one day (mon … sun)"));
        }
        let (s, e) = (parse_hhmm(&self.start), parse_hhmm(&self.end));
        if s.is_none() {
            p.push(Problem::new(format!("{path}.start"), format!("`{}` is not HH:MM", self.start)));
        }
        if e.is_none() {
            p.push(Problem::new(format!("{path}.end"), format!("`{}` is not HH:MM", self.end)));
        }
        if let (Some(s), Some(e)) = (s, e) {
            if e <= s {
                p.push(Problem::new(format!("{path}.end"), format!("{} is not after start {}", self.end, self.start)));
            }
        }
        if parse_offset(&self.utc_offset).is_none() {
            p.push(Problem::new(format!("{path}.utc_offset"), format!("`{}` is not an offset like +08:00 or Z", self.utc_offset)));
        }
    }

    fn window(&self) -> (i64, i64, i64) {
        let start = parse_hhmm(&self.start).unwrap_or(0) * MINUTE_MS;
        let end = parse_hhmm(&self.end).unwrap_or(24 * 60) * MINUTE_MS;
        (start, end, parse_offset(&self.utc_offset).unwrap_or(0) * MINUTE_MS)
    }

    /// The instant `work_ms` of working time after `from`.
    pub fn add(&self, from: i64, work_ms: i64) -> i64 {
        let (start, end, offset) = self.window();
        let days: Vec<i64> = self.days.iter().map(|d| d.index()).collect();
        if days.is_empty() || end <= start {
            return from.saturating_add(work_ms);
        }
        let mut t = from + offset;
        let mut left = work_ms;
        // At most ~27 years of days: a deadline beyond that is no deadline.
        for _ in 0..10_000 {
            let day = t.div_euclid(DAY_MS);
            if days.contains(&weekday(day)) {
                let (ws, we) = (day * DAY_MS + start, day * DAY_MS + end);
                t = t.max(ws);
                if t < we {
                    if left <= we - t {
                        return t + left - offset;
                    }
                    left -= we - t;
                }
            }
            t = (day + 1) * DAY_MS;
        }
        i64::MAX
    }
}

/// The deadlines of an assignment made at `from`.
pub fn deadlines(entry: Option<&SlaEntry>, from: i64, calendar: Option<&Calendar>) -> Deadlines {
    let at = |ms: Option<i64>| ms.map(|d| calendar.map_or(from.saturating_add(d), |c| c.add(from, d)));
    Deadlines { ack_due_ms: at(entry.and_then(|e| e.acknowledge_ms())), resolve_due_ms: at(entry.and_then(|e| e.resolve_ms())) }
}

fn awaiting_ack(s: Status) -> bool {
    matches!(s, Status::New | Status::Assigned)
}

/// Which deadline an incident is past at `now`: `acknowledge` first, then `resolve`.
pub fn overdue(i: &Incident, now: i64) -> Option<&'static str> {
    if !i.status.is_open() {
        return None;
    }
    if awaiting_ack(i.status) && i.deadlines.ack_due_ms.is_some_and(|d| now >= d) {
        return Some("acknowledge");
    }
    i.deadlines.resolve_due_ms.is_some_and(|d| now >= d).then_some("resolve")
}

/// A timer that has come due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Remind the owner: not acknowledged in time.
    AckOverdue,
    /// Remind the owner: not resolved in time.
    ResolveOverdue,
    /// Tell the chain's level `n` (1 = the first above the owner).
    Escalate(u32),
}

/// Timers due at `now` that have not fired yet, in order. Escalation runs
/// while the incident waits for an acknowledgement: level n at the
/// acknowledge deadline + n × `escalate_every`, up to `levels`.
pub fn due(i: &Incident, now: i64, escalate_every_ms: i64, levels: u32) -> Vec<Due> {
    let mut out = Vec::new();
    if !i.status.is_open() {
        return out;
    }
    if let Some(ack) = i.deadlines.ack_due_ms.filter(|_| awaiting_ack(i.status)) {
        if now >= ack && !i.reminded_ack {
            out.push(Due::AckOverdue);
        }
        let mut level = i.escalation_level;
        while level < levels && now >= ack.saturating_add(escalate_every_ms.saturating_mul(level as i64 + 1)) {
            level += 1;
            out.push(Due::Escalate(level));
        }
    }
    if i.deadlines.resolve_due_ms.is_some_and(|d| now >= d) && !i.reminded_resolve {
        out.push(Due::ResolveOverdue);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const M: i64 = 60_000;

    fn cal() -> Calendar {
        Calendar { days: vec![Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri], start: "09:00".into(), end: "18:00".into(), utc_offset: "+08:00".into() }
    }

    /// 2026-11-27 is a Friday; the epoch ms of local (+08:00) `hh:mm` that day plus `days`.
    fn fri(days: i64, hh: i64, mm: i64) -> i64 {
        let fri_utc_midnight = 1_795_737_600_000; // 2026-11-27T00:00:00Z
        fri_utc_midnight + days * DAY_MS + hh * H + mm * M - 8 * H
    }

    #[test]
    fn weekdays_count_from_a_thursday() {
        assert_eq!(weekday(0), 3);
        assert_eq!(weekday(1_795_737_600_000 / DAY_MS), 4, "2026-11-27 is a Friday");
    }

    #[test]
    fn working_hours_skip_nights_and_weekends() {
        let c = cal();
        assert_eq!(c.add(fri(0, 10, 0), 2 * H), fri(0, 12, 0), "within the day");
        assert_eq!(c.add(fri(0, 17, 0), 2 * H), fri(3, 10, 0), "one hour on Friday, one on Monday");
        assert_eq!(c.add(fri(0, 20, 0), 30 * M), fri(3, 9, 30), "after hours starts Monday morning");
        assert_eq!(c.add(fri(1, 12, 0), 9 * H), fri(3, 18, 0), "a whole working day from Saturday");
        assert_eq!(c.add(fri(0, 7, 0), 0), fri(0, 9, 0), "no time before opening");
        let plain = deadlines(Some(&SlaEntry { severity: None, acknowledge: Some("15m".into()), resolve: Some("4h".into()) }), fri(0, 17, 0), None);
        assert_eq!((plain.ack_due_ms, plain.resolve_due_ms), (Some(fri(0, 17, 15)), Some(fri(0, 21, 0))));
        let worked = deadlines(Some(&SlaEntry { severity: None, acknowledge: Some("15m".into()), resolve: Some("4h".into()) }), fri(0, 17, 0), Some(&c));
        assert_eq!((worked.ack_due_ms, worked.resolve_due_ms), (Some(fri(0, 17, 15)), Some(fri(3, 12, 0))));
    }

    #[test]
    fn calendar_and_entries_are_checked_naming_the_field() {
        let mut p = Vec::new();
        Calendar { days: vec![], start: "9am".into(), end: "08:00".into(), utc_offset: "CST".into() }.validate("incidents.working_hours", &mut p);
        let fields: Vec<&str> = p.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(fields, ["incidents.working_hours.days", "incidents.working_hours.start", "incidents.working_hours.utc_offset"]);
        let mut p = Vec::new();
        let e = |s: Option<Severity>, a: Option<&str>| SlaEntry { severity: s, acknowledge: a.map(|x| x.into()), resolve: None };
        SlaEntry::validate_all(&[e(Some(Severity::Critical), Some("soon")), e(Some(Severity::Critical), Some("5m")), e(None, None)], "department[0].sla", &mut p);
        let fields: Vec<&str> = p.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(fields, ["department[0].sla[0].acknowledge", "department[0].sla[1].severity", "department[0].sla[2]"]);
        let entries = [e(None, Some("1h")), e(Some(Severity::Critical), Some("10m"))];
        assert_eq!(SlaEntry::pick(&entries, Severity::Critical).unwrap().acknowledge_ms(), Some(10 * M));
        assert_eq!(SlaEntry::pick(&entries, Severity::Info).unwrap().acknowledge_ms(), Some(H));
    }
}
