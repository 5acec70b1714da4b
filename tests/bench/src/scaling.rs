//! `scaling`: how the figures change as points, gateways and rules grow tenfold.

use anyhow::Result;
use serde_json::json;

use crate::*;

/// Each dimension grown tenfold at a time, everything else held: gateways
/// (fixed total and batch size), rules (10 gateways), points per agent poll.
/// Each run is a fresh process; `per_tenfold` is the ratio of throughput
/// from one step to the next (1.0: the step costs nothing; 10.0 for points:
/// throughput grows with the work offered, so the agent is not yet saturated).
pub(crate) fn scaling(quick: bool) -> Result<serde_json::Value> {
    let total = if quick { "200000" } else { "1000000" };
    let figure = |args: &[&str], key: &str| -> Result<f64> {
        let lines = fresh_process(args, false)?;
        lines.last().and_then(|l| l[key].as_f64()).ok_or_else(|| anyhow::anyhow!("{} gave no {key}", args.join(" ")))
    };
    let ratios = |v: &[(u64, f64)]| v.windows(2).map(|w| (w[1].1 / w[0].1 * 100.0).round() / 100.0).collect::<Vec<_>>();
    let mut gateways = Vec::new();
    for g in ["10", "100", "1000"] {
        gateways.push((g.parse()?, figure(&["ingest", "--gateways", g, "--rules", "0", "--readings", total, "--batch", "100"], "readings_per_s")?));
    }
    let mut rules = Vec::new();
    for r in ["1", "10", "100", "1000"] {
        rules.push((r.parse()?, figure(&["ingest", "--gateways", "10", "--rules", r, "--readings", total], "readings_per_s")?));
    }
    let secs = if quick { "2" } else { "10" };
    let mut points = Vec::new();
    let mut cpu_per_1k = Vec::new();
    for p in ["1", "10", "100", "1000"] {
        let line = fresh_process(&["agent", "--points", p, "--secs", secs, "--load-only"], false)?.pop().ok_or_else(|| anyhow::anyhow!("agent gave nothing"))?;
        points.push((p.parse()?, line["readings_per_s"].as_f64().unwrap_or(0.0)));
        cpu_per_1k.push(json!({"points": p.parse::<u64>()?, "cpu_pct_per_1k_readings_per_s": line["cpu_pct_per_1k_readings_per_s"], "rss_load_mb": line["rss_load_mb"]}));
    }
    let table = |name: &str, v: &[(u64, f64)]| v.iter().map(|(x, r)| json!({name: x, "readings_per_s": r})).collect::<Vec<_>>();
    Ok(json!({"scenario": "scaling",
              "gateways": {"runs": table("gateways", &gateways), "per_tenfold": ratios(&gateways), "held": format!("{total} readings in batches of 100, 0 rules")},
              "rules": {"runs": table("rules", &rules), "per_tenfold": ratios(&rules), "held": format!("{total} readings, 10 gateways, batches of 1,000")},
              "points": {"runs": table("points_per_poll", &points), "per_tenfold": ratios(&points), "agent": cpu_per_1k, "held": "one agent on one core, a poll every 20 ms"}}))
}
