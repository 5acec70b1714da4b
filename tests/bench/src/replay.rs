//! `replay`: drain speed of an outbox backlog after an outage.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use agent::config::{AgentConfig, WhenFull};
use agent::outbox::{Outbox, SledOutbox};
use agent::source::NewReading;
use anyhow::{bail, Result};
use collector::config::CollectorConfig;
use serde_json::json;
use shared::Quality;

/// A backlog of `n` readings sits in the agent's outbox (as after an outage);
/// the agent starts with the collector reachable. Measures the time until the
/// collector has stored every reading and the agent has deleted them on ack.
pub(crate) async fn replay(n: u64) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let text = format!("[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n", d.join("store").display());
    let cfg: CollectorConfig = shared::config::parse("bench collector", &text, d).map_err(|e| anyhow::anyhow!("{e}"))?;
    let collector = collector::Collector::start(cfg).await?;

    let outbox_path = d.join("outbox");
    let fill = Instant::now();
    {
        let ob = SledOutbox::open(&outbox_path, 16 << 30, WhenFull::DropOldest)?;
        let t0 = shared::now_ms() - n as i64;
        let mut i = 0u64;
        while i < n {
            let chunk: Vec<NewReading> = (i..(i + 10_000).min(n))
                .map(|k| NewReading { sensor: format!("aq-{:03}", k % 100), metric: "pm25".into(), ts_ms: t0 + k as i64, value: (k % 500) as f64 / 10.0, quality: Quality::Good })
                .collect();
            i += chunk.len() as u64;
            ob.append(chunk)?;
        }
        ob.flush()?;
    }
    let fill_s = fill.elapsed().as_secs_f64();

    let agent_text = format!(
        "gateway = \"gw-bench\"\n[uplink]\nbroker = \"{}\"\nbatch_max = 5000\nlinger = \"20ms\"\nmax_inflight = 8\n[buffer]\npath = \"{}\"\nmax_bytes = \"16GiB\"\n[status]\nlisten = \"127.0.0.1:0\"\n\
         [[mqtt]]\nbroker = \"{}\"\ntopic = \"bench/none/+\"\nsensor = \"topic:2\"\n  [mqtt.fields]\n  v = \"$\"\n",
        collector.mqtt_url,
        outbox_path.display(),
        collector.mqtt_url
    );
    let cfg: AgentConfig = shared::config::parse("bench agent", &agent_text, d).map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = Instant::now();
    let agent = agent::Agent::start(cfg).await?;
    let counters = &collector.counters;
    let deadline = start + Duration::from_secs(600);
    while counters.stored.load(Relaxed) < n || agent.outbox.stats().depth > 0 {
        if Instant::now() > deadline {
            bail!("replay did not finish within 600 s: stored {}", counters.stored.load(Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let duplicates = counters.duplicate.load(Relaxed);
    agent.shutdown().await;
    collector.shutdown().await;
    Ok(json!({
        "scenario": "replay",
        "readings": n,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "readings_per_s": (n as f64 / secs).round(),
        "duplicates": duplicates,
        "batch_max": 5000,
        "outbox_fill_s": (fill_s * 1000.0).round() / 1000.0,
    }))
}
