//! `GET /api/v1/series` parameters as users (or attackers) type them: parsing
//! must never panic (debug builds check overflow), and whatever it accepts
//! must bucket without overflow or unbounded allocation.
#![no_main]

use collector::http::series::{Plan, SeriesQuery};
use collector::store::{aggregate, Agg, Sample};
use libfuzzer_sys::fuzz_target;
use shared::Quality;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1f}').map(|s| Some(s.to_string()));
    let q = SeriesQuery { sensor: Some("s".into()), metric: Some("m".into()), from: parts.next().flatten(), to: parts.next().flatten(), step: parts.next().flatten(), agg: parts.next().flatten() };
    for now in [0i64, 1_700_000_000_000, i64::MAX, i64::MIN] {
        let Ok(plan) = Plan::parse(SeriesQuery { ..clone(&q) }, now) else { continue };
        assert!(plan.from <= plan.to);
        if let Some(step) = plan.step_ms {
            // Samples at both ends of the window and one in between.
            let samples: Vec<Sample> = [plan.from, plan.from + (plan.to - plan.from) / 2, plan.to].iter().map(|&ts_ms| Sample { ts_ms, value: 1.0, quality: Quality::Good }).collect();
            let buckets = aggregate(&samples, step, plan.agg.unwrap_or(Agg::Mean));
            assert!(!buckets.is_empty() && buckets.len() <= samples.len());
        }
    }
});

fn clone(q: &SeriesQuery) -> SeriesQuery {
    SeriesQuery { sensor: q.sensor.clone(), metric: q.metric.clone(), from: q.from.clone(), to: q.to.clone(), step: q.step.clone(), agg: q.agg.clone() }
}
