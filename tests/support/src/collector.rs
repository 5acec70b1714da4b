//! A collector on free loopback ports, and what tests read back from its API.

use std::net::SocketAddr;
use std::path::Path;

use collector::config::CollectorConfig;
use collector::Collector;

use crate::http::{get, get_json};

/// A collector with its embedded broker (or `external`) and HTTP on free ports.
pub async fn collector(dir: &Path, external: Option<&str>, catalogue: &str) -> Collector {
    let mqtt = match external {
        Some(url) => format!("external = \"{url}\""),
        None => "listen = \"127.0.0.1:0\"".to_string(),
    };
    let text = format!("[mqtt]\n{mqtt}\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n\n{catalogue}", dir.join("collector").display());
    let cfg: CollectorConfig = shared::config::parse("test collector", &text, dir).unwrap_or_else(|d| panic!("{d}"));
    Collector::start(cfg).await.expect("collector starts")
}

/// Batches rejected for `reason`, from `citysense_batches_rejected_total` in `/metrics`.
pub async fn rejected(addr: SocketAddr, reason: &str) -> f64 {
    let (_, body) = get(addr, "/metrics").await;
    let key = format!("citysense_batches_rejected_total{{reason=\"{reason}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// The latest value of a sensor's metric from `/api/v1/sensors`.
pub async fn latest(addr: SocketAddr, sensor: &str, metric: &str) -> Option<f64> {
    let sensors = get_json(addr, "/api/v1/sensors").await;
    sensors.as_array()?.iter().find(|s| s["id"] == sensor)?["metrics"].as_array()?.iter().find(|m| m["metric"] == metric)?["value"].as_f64()
}

/// Values of a series, raw, over all time.
pub async fn series_values(addr: SocketAddr, sensor: &str, metric: &str) -> Vec<f64> {
    let v = get_json(addr, &format!("/api/v1/series?sensor={sensor}&metric={metric}&from=0")).await;
    v["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect()
}
