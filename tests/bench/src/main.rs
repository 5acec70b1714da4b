//! `citysense-bench SCENARIO [--quick]`: measures, and prints one JSON line of
//! figures per scenario. Run from a release build:
//! `cargo run --release -p citysense-bench -- replay`.
//!
//! Scenarios: `replay` (drain speed of an outbox backlog after an outage),
//! `ingest` (collector readings/s from many gateways, with 0 and 100 rules;
//! `ingest --sustained`: 10M readings with rules, live feed, SSE and the
//! InfluxDB sink on, alert latency probed all along, each gateway keeping
//! 4 batches unacknowledged at most as an agent does; `--inflight N|flood`),
//! `alert-latency` (a reading's publish to its alert on MQTT and SSE),
//! `sink` (points/s the InfluxDB sink sustains into VictoriaMetrics),
//! `store` (the embedded store: bytes per reading, a day's query time;
//! `--top-of-hour N`: rolling up and packing an hour of N series),
//! `agent` (the real agent binary on one core: readings/s, CPU, memory idle,
//! under load and with a backlog), `scaling` (how the figures change as
//! gateways, rules and points grow tenfold), `delivery` (the agent with its
//! shipped defaults, in its own process, through Mosquitto to a collector in
//! its own: read → stored latency, idle and backlog memory, backlog drain),
//! `sta` (the SensorThings API over HTTP: latest observation of every
//! Datastream, a day of one Datastream, `$count` of all Observations, at the
//! demo's size and at 10,000 Datastreams; `--data DIR` keeps the generated
//! store for later runs), `cluster` (the collector on a 3-node NATS cluster
//! with 1, 2 and 3 collectors against the single process: readings/s, CPU
//! per reading per collector, alert latency, the cost of the speaker's
//! death; needs nats-server 2.10+, `CITYSENSE_NATS_SERVER`).

// The sustained run's figures are one `json!` literal, past the default 128.
#![recursion_limit = "256"]

mod agent_pipeline;
mod alert_latency;
mod cluster;
mod common;
mod delivery;
mod ingest;
mod replay;
mod scaling;
mod sink;
mod sta;
mod store;
mod sustained;

/// The allocator the collector binary ships with, so the figures are its.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use agent_pipeline::{agent_pipeline, Phases, Settings};
use alert_latency::alert_latency;
use delivery::delivery;
use ingest::ingest;
use replay::replay;
use scaling::scaling;
use sink::sink;

use anyhow::{bail, Context as _, Result};

/// Runs this binary again with `args` (and `--quick` when set) and returns
/// its JSON lines: each variant gets a fresh process, because a collector's
/// embedded broker cannot be stopped and would share the machine with the next.
fn fresh_process(args: &[&str], quick: bool) -> Result<Vec<serde_json::Value>> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(args);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// `fresh_process`, passing its lines on.
fn in_fresh_process(args: &[&str], quick: bool) -> Result<()> {
    for line in fresh_process(args, quick)? {
        println!("{line}");
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let Some(scenario) = args.iter().find(|a| !a.starts_with("--")) else {
        bail!("usage: citysense-bench SCENARIO [--quick]; scenarios: agent delivery replay ingest alert-latency sink store scaling sta cluster [--data DIR]");
    };
    match scenario.as_str() {
        "delivery" => println!("{}", delivery(quick).await?),
        "replay" => println!("{}", replay(if quick { 100_000 } else { 1_000_000 }).await?),
        "ingest" => {
            let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
            let default_gateways = "10";
            let sustained = args.iter().any(|a| a == "--sustained");
            match (opt("--rules"), opt("--gateways"), opt("--broker")) {
                (None, None, None) if sustained => {
                    // Capacity (as fast as it takes them), then the city's rate with alerts timed.
                    for (gateways, broker) in [("10", "embedded"), ("1000", "embedded"), ("10", "mosquitto")] {
                        in_fresh_process(&["ingest", "--sustained", "--rules", "100", "--gateways", gateways, "--broker", broker], quick)?;
                        in_fresh_process(&["ingest", "--sustained", "--rules", "100", "--gateways", gateways, "--broker", broker, "--rate", "500000"], quick)?;
                    }
                }
                (rules, gateways, broker) if sustained => {
                    let rules = rules.as_deref().unwrap_or("100").parse()?;
                    let gateways = gateways.as_deref().unwrap_or(default_gateways).parse()?;
                    let total = opt("--readings").map(|n| n.parse()).transpose()?.unwrap_or(if quick { 1_000_000 } else { 10_000_000 });
                    let rate = opt("--rate").map(|n| n.parse()).transpose()?;
                    let off: Vec<String> = opt("--off").map(|o| o.split(',').map(String::from).collect()).unwrap_or_default();
                    // Batches a gateway keeps unacknowledged: the agent's shipped `max_inflight`, or `flood`.
                    let window = match opt("--inflight").as_deref() {
                        None => Some(4),
                        Some("flood") => None,
                        Some(n) => match n.parse::<u64>() {
                            Ok(n) if n > 0 => Some(n),
                            _ => anyhow::bail!("--inflight {n}: a number of batches (1 or more) or `flood`"),
                        },
                    };
                    println!("{}", sustained::sustained(gateways, total, rules, broker.as_deref().unwrap_or("embedded"), rate, window, &off).await?);
                }
                (None, None, None) => {
                    let variants = [("0", "10", "embedded"), ("100", "10", "embedded"), ("0", "100", "embedded"), ("0", "1000", "embedded"), ("0", "10", "mosquitto")];
                    for (rules, gateways, broker) in variants {
                        in_fresh_process(&["ingest", "--rules", rules, "--gateways", gateways, "--broker", broker], quick)?;
                    }
                }
                (rules, gateways, broker) => {
                    let rules = rules.as_deref().unwrap_or("0").parse()?;
                    let gateways = gateways.as_deref().unwrap_or(default_gateways).parse()?;
                    let total = opt("--readings").map(|n| n.parse()).transpose()?.unwrap_or(if quick { 300_000 } else { 2_000_000 });
                    let batch = opt("--batch").map(|n| n.parse()).transpose()?;
                    println!("{}", ingest(gateways, total, batch, rules, broker.as_deref().unwrap_or("embedded")).await?);
                }
            }
        }
        "alert-latency" => {
            let load: Option<u64> = args.iter().position(|a| a == "--load").and_then(|i| args.get(i + 1)).map(|l| l.parse()).transpose()?;
            match load {
                Some(l) => println!("{}", alert_latency(if quick { 200 } else { 1000 }, l).await?),
                // Idle, then at 10k and 100k readings/s.
                None => {
                    for l in ["0", "10000", "100000"] {
                        in_fresh_process(&["alert-latency", "--load", l], quick)?;
                    }
                }
            }
        }
        "sink" => println!("{}", sink(if quick { 200_000 } else { 1_000_000 }).await?),
        "agent" => match args.iter().position(|a| a == "--points").and_then(|i| args.get(i + 1)) {
            Some(n) => {
                let secs = args.iter().position(|a| a == "--secs").and_then(|i| args.get(i + 1)).map(|s| s.parse()).transpose()?.unwrap_or(if quick { 8 } else { 30 });
                let phases = if args.iter().any(|a| a == "--load-only") { Phases::LoadOnly } else { Phases::All };
                let every = args.iter().position(|a| a == "--interval").and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| "20ms".into());
                let settings = if args.iter().any(|a| a == "--defaults") { Settings::Defaults } else { Settings::Tuned };
                println!("{}", agent_pipeline(n.parse()?, &every, secs, phases, settings).await?)
            }
            None => {
                for n in ["1", "100", "1000"] {
                    in_fresh_process(&["agent", "--points", n], quick)?;
                    in_fresh_process(&["agent", "--points", n, "--defaults"], quick)?;
                }
            }
        },
        "store" => {
            let realistic = args.iter().any(|a| a == "--realistic");
            let top_of_hour =
                args.iter().position(|a| a == "--top-of-hour").map(|i| args.get(i + 1).and_then(|n| n.parse::<u64>().ok()).context("--top-of-hour takes a number of series"));
            match top_of_hour.transpose()? {
                Some(n) => println!("{}", tokio::task::spawn_blocking(move || store::top_of_hour(n)).await??),
                None => println!("{}", tokio::task::spawn_blocking(move || store::scenario(quick, realistic)).await??),
            }
        }
        "scaling" => println!("{}", scaling(quick)?),
        "cluster" => {
            for line in cluster::cluster(quick).await? {
                println!("{line}");
            }
        }
        "sta" => {
            let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
            let data = opt("--data");
            match opt("--catalogue") {
                Some(catalogue) => {
                    let sensors = opt("--sensors").map(|n| n.parse()).transpose()?.unwrap_or(10_000);
                    let hours = opt("--hours").map(|n| n.parse()).transpose()?.unwrap_or(24);
                    println!("{}", sta::sta(sta::Size { catalogue, sensors, hours }, data.map(Into::into), quick).await?);
                }
                // The demo's catalogue, then 10,000 Datastreams (quick: an hour or two of each, 1,000 Datastreams).
                None => {
                    let grid_sensors = opt("--sensors").unwrap_or_else(|| if quick { "1000" } else { "10000" }.into());
                    let grid_hours = opt("--hours").unwrap_or_else(|| if quick { "1" } else { "24" }.into());
                    let demo_hours = if quick { "2" } else { "24" };
                    let data_args: Vec<&str> = data.as_deref().map(|d| vec!["--data", d]).unwrap_or_default();
                    for variant in [vec!["--catalogue", "demo", "--hours", demo_hours], vec!["--catalogue", "grid", "--sensors", &grid_sensors, "--hours", &grid_hours]] {
                        let args: Vec<&str> = ["sta"].into_iter().chain(variant).chain(data_args.iter().copied()).collect();
                        in_fresh_process(&args, quick)?;
                    }
                }
            }
        }
        other => bail!("unknown scenario `{other}`; scenarios: agent delivery replay ingest alert-latency sink store scaling sta cluster"),
    }
    Ok(())
}
