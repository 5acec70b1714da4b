//! Performance per department and period (效能评估), read from incidents'
//! timelines, so a figure always says which department did what when:
//!
//! - `volume`: incidents the department was given (assigned or transferred
//!   to it) in the period, each counted once;
//! - time to acknowledge / resolve: from the department receiving it to its
//!   first acknowledgement / its resolution, for receipts in the period;
//!   median (mean of the middle two for an even count) and p90 (nearest rank);
//! - `breaches`: deadlines it missed in the period (acknowledge and resolve
//!   apart); `overdue_now`: its open incidents past a deadline at `now`;
//! - `escalations` and `transfers`: those away from it in the period;
//! - `reopen_rate`: its incidents reopened / its resolutions in the period;
//! - ratings of its handling, and bad ones it rectified.

use serde::Serialize;

use super::{EventKind, Incident};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Performance {
    pub department: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub volume: u64,
    pub acknowledged: u64,
    pub ack_median_ms: Option<i64>,
    pub ack_p90_ms: Option<i64>,
    pub resolved: u64,
    pub resolve_median_ms: Option<i64>,
    pub resolve_p90_ms: Option<i64>,
    pub ack_breaches: u64,
    pub resolve_breaches: u64,
    pub overdue_now: u64,
    pub escalations: u64,
    pub transfers: u64,
    pub reopened: u64,
    pub reopen_rate: Option<f64>,
    pub rated_good: u64,
    pub rated_bad: u64,
    pub bad_rectified: u64,
}

pub fn median(sorted: &[i64]) -> Option<i64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// Nearest rank: the smallest value with at least 90 % of values at or below it.
pub fn p90(sorted: &[i64]) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * 9).div_ceil(10);
    Some(sorted[rank.max(1) - 1])
}

/// The figures for `department` over [`from`, `to`), overdue counted at `now`.
pub fn compute<'a>(department: &str, incidents: impl Iterator<Item = &'a Incident>, from: i64, to: i64, now: i64) -> Performance {
    let within = |t: i64| (from..to).contains(&t);
    let mine = |d: &Option<String>| d.as_deref() == Some(department);
    let mut p = Performance {
        department: department.into(),
        from_ms: from,
        to_ms: to,
        volume: 0,
        acknowledged: 0,
        ack_median_ms: None,
        ack_p90_ms: None,
        resolved: 0,
        resolve_median_ms: None,
        resolve_p90_ms: None,
        ack_breaches: 0,
        resolve_breaches: 0,
        overdue_now: 0,
        escalations: 0,
        transfers: 0,
        reopened: 0,
        reopen_rate: None,
        rated_good: 0,
        rated_bad: 0,
        bad_rectified: 0,
    };
    let (mut acks, mut resolves) = (Vec::new(), Vec::new());
    for i in incidents {
        if mine(&i.department) && i.overdue(now).is_some() {
            p.overdue_now += 1;
        }
        let mut received_in_period = false;
        // When the department last received it, and whether it acknowledged since.
        let mut held: Option<(i64, bool)> = None;
        for e in &i.timeline {
            match e.event {
                EventKind::Assigned | EventKind::Transferred if mine(&e.department) => {
                    held = Some((e.ts_ms, false));
                    received_in_period |= within(e.ts_ms);
                }
                EventKind::Assigned | EventKind::Transferred => {
                    if e.event == EventKind::Transferred && mine(&e.from) && within(e.ts_ms) {
                        p.transfers += 1;
                    }
                    held = None;
                }
                EventKind::Acknowledged if mine(&e.department) => {
                    if let Some((since, false)) = held {
                        held = Some((since, true));
                        if within(since) {
                            acks.push(e.ts_ms - since);
                        }
                    }
                }
                EventKind::Resolved if mine(&e.department) => {
                    if let Some((since, _)) = held {
                        if within(since) {
                            resolves.push(e.ts_ms - since);
                        }
                    }
                    if within(e.ts_ms) {
                        p.resolved += 1;
                    }
                }
                EventKind::Reopened if mine(&e.department) => {
                    held = Some((e.ts_ms, false));
                    if within(e.ts_ms) {
                        p.reopened += 1;
                    }
                }
                EventKind::Overdue if mine(&e.department) && within(e.ts_ms) => match e.text.as_deref() {
                    Some("acknowledge") => p.ack_breaches += 1,
                    _ => p.resolve_breaches += 1,
                },
                EventKind::Escalated if mine(&e.from) && within(e.ts_ms) => p.escalations += 1,
                EventKind::Rated if mine(&e.department) && within(e.ts_ms) => {
                    if e.text.as_deref().is_some_and(|t| t.starts_with("good")) {
                        p.rated_good += 1
                    } else {
                        p.rated_bad += 1
                    }
                }
                EventKind::Rectified if mine(&e.department) && within(e.ts_ms) => p.bad_rectified += 1,
                _ => {}
            }
        }
        if received_in_period {
            p.volume += 1;
        }
    }
    // `resolved` above counts resolutions in the period; the times are per receipt in it.
    acks.sort_unstable();
    resolves.sort_unstable();
    p.acknowledged = acks.len() as u64;
    (p.ack_median_ms, p.ack_p90_ms) = (median(&acks), p90(&acks));
    (p.resolve_median_ms, p.resolve_p90_ms) = (median(&resolves), p90(&resolves));
    p.reopen_rate = (p.resolved > 0).then(|| p.reopened as f64 / p.resolved as f64);
    p
}

/// The CSV export: a header and one row per department.
pub fn csv(rows: &[Performance]) -> String {
    let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    let mut out = String::from(
        "department,from_ms,to_ms,volume,acknowledged,ack_median_ms,ack_p90_ms,resolved,resolve_median_ms,resolve_p90_ms,ack_breaches,resolve_breaches,overdue_now,escalations,transfers,reopened,reopen_rate,rated_good,rated_bad,bad_rectified\n",
    );
    for p in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            p.department,
            p.from_ms,
            p.to_ms,
            p.volume,
            p.acknowledged,
            opt(p.ack_median_ms),
            opt(p.ack_p90_ms),
            p.resolved,
            opt(p.resolve_median_ms),
            opt(p.resolve_p90_ms),
            p.ack_breaches,
            p.resolve_breaches,
            p.overdue_now,
            p.escalations,
            p.transfers,
            p.reopened,
            p.reopen_rate.map(|r| format!("{r:.3}")).unwrap_or_default(),
            p.rated_good,
            p.rated_bad,
            p.bad_rectified
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::evaluation::{rate, rectify};
    use crate::incident::state::{apply, tests::*, Action};
    use crate::incident::{Entry, EventKind};

    #[test]
    fn percentiles_by_their_definitions() {
        assert_eq!((median(&[]), p90(&[])), (None, None));
        assert_eq!((median(&[5]), p90(&[5])), (Some(5), Some(5)));
        assert_eq!(median(&[1, 3]), Some(2));
        let ten: Vec<i64> = (1..=10).collect();
        assert_eq!((median(&ten), p90(&ten)), (Some(5), Some(9)));
        let eleven: Vec<i64> = (1..=11).collect();
        assert_eq!((median(&eleven), p90(&eleven)), (Some(6), Some(10)));
    }

    #[test]
    fn figures_follow_the_timeline_per_department() {
        let m = 60_000;
        let mut a = incident(1, &facts());
        let go = |i: &mut crate::incident::Incident, act: Action, t: i64| {
            apply(i, &act, "x", t).unwrap();
        };
        go(&mut a, Action::Assign { department: "water".into() }, 0);
        a.timeline.push(Entry::new(10 * m, EventKind::Overdue).department("water").text("acknowledge"));
        a.timeline.push(Entry::new(15 * m, EventKind::Escalated).from("water").department("cmd"));
        go(&mut a, Action::Transfer { department: "roads".into(), reason: "theirs".into() }, 20 * m);
        go(&mut a, Action::Acknowledge { note: None }, 23 * m);
        go(&mut a, Action::Resolve { action: "fixed".into() }, 50 * m);
        rate(&mut a, false, Some("slow".into()), "cmd", 51 * m).unwrap();
        rectify(&mut a, "drills".into(), "r", 60 * m).unwrap();
        let mut b = incident(2, &facts());
        go(&mut b, Action::Assign { department: "water".into() }, 0);
        go(&mut b, Action::Acknowledge { note: None }, 4 * m);
        go(&mut b, Action::Resolve { action: "fixed".into() }, 30 * m);
        go(&mut b, Action::Reopen { reason: "again".into() }, 40 * m);
        let water = compute("water", [&a, &b].into_iter(), 0, 100 * m, 100 * m);
        assert_eq!((water.volume, water.acknowledged, water.ack_median_ms, water.resolved), (2, 1, Some(4 * m), 1));
        assert_eq!((water.ack_breaches, water.escalations, water.transfers, water.reopened, water.reopen_rate), (1, 1, 1, 1, Some(1.0)));
        assert_eq!((water.rated_bad, water.overdue_now), (0, 0));
        let roads = compute("roads", [&a, &b].into_iter(), 0, 100 * m, 100 * m);
        assert_eq!((roads.volume, roads.ack_median_ms, roads.resolve_median_ms, roads.transfers), (1, Some(3 * m), Some(30 * m), 0));
        assert_eq!((roads.rated_good, roads.rated_bad, roads.bad_rectified), (0, 1, 1));
        let later = compute("water", [&a, &b].into_iter(), 30 * m, 100 * m, 100 * m);
        assert_eq!((later.volume, later.resolved, later.reopened, later.transfers), (0, 1, 1, 0));
        assert!(csv(&[water]).lines().nth(1).unwrap().starts_with("water,0,6000000,2,1,240000,240000,1,"));
    }
}
