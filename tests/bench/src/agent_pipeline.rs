//! `agent`: the real agent binary on one core against a Modbus register bank:
//! readings/s, CPU and memory idle, under load and with a backlog.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::common::*;

/// A Modbus TCP device whose holding registers (any address) change on every read.
#[derive(Clone)]
pub(crate) struct RegisterBank(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl tokio_modbus::server::Service for RegisterBank {
    type Request = tokio_modbus::Request<'static>;
    type Response = tokio_modbus::Response;
    type Exception = tokio_modbus::ExceptionCode;
    type Future = std::future::Ready<Result<tokio_modbus::Response, tokio_modbus::ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(match req {
            tokio_modbus::Request::ReadHoldingRegisters(_, n) => {
                let c = self.0.fetch_add(1, Relaxed);
                Ok(tokio_modbus::Response::ReadHoldingRegisters((0..n).map(|i| (c + i as u64) as u16).collect()))
            }
            _ => Err(tokio_modbus::ExceptionCode::IllegalFunction),
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Phases {
    All,
    LoadOnly,
}

/// How the agent's uplink and outbox are set for a run.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Settings {
    /// What the agent ships with: nothing under `[uplink]` or `[buffer]` set
    /// but where to send and where to keep the outbox.
    Defaults,
    /// Tuned for throughput: `batch_max = 5000`, `max_inflight = 8`,
    /// `linger = "20ms"`, `buffer.flush = "100ms"`, `buffer.max_bytes = "2GiB"`.
    Tuned,
}

impl Settings {
    fn toml(self) -> (&'static str, &'static str) {
        match self {
            Settings::Defaults => ("", ""),
            Settings::Tuned => ("batch_max = 5000\nlinger = \"20ms\"\nmax_inflight = 8\n", "max_bytes = \"2GiB\"\nflush = \"100ms\"\n"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Settings::Defaults => "agent shipped defaults",
            Settings::Tuned => "agent tuned: uplink batch_max 5000, max_inflight 8, linger 20ms; buffer flush 100ms, max_bytes 2GiB",
        }
    }
}

/// The real `citysense-agent` binary (release, next to this one), pinned to
/// one core, reads `points` u16 registers per poll every `every` (default 20
/// ms) from a Modbus TCP device in this process and sends them through its
/// durable outbox to the release `citysense-collector` in its own process
/// (embedded broker, unpinned; `mqtt.gateway_rate` raised so one bench
/// gateway may send more than the per-gateway default of 50k/s). Readings/s
/// counts what the collector stored and acknowledged, so the agent has
/// deleted it. Idle: the same agent polling once an hour. Outage: the same
/// load with the collector unreachable, so every reading stays in the
/// outbox. Figures: readings/s, the agent's and the collector's CPU, CPU per
/// 1k readings/s, RSS idle, under load and holding the backlog.
pub(crate) async fn agent_pipeline(points: usize, every: &str, secs: u64, phases: Phases, settings: Settings) -> Result<serde_json::Value> {
    let bin = std::env::current_exe()?.with_file_name("citysense-agent");
    if !bin.exists() {
        bail!("{} is missing: cargo build --release -p citysense-agent", bin.display());
    }
    let cdir = tempfile::tempdir()?;
    let c = collector_process(cdir.path(), "agent", Broker::Embedded, "# One bench gateway may send more than a real one is allowed to.\ngateway_rate = 10000000")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let device = listener.local_addr()?;
    let bank = RegisterBank(Default::default());
    tokio::spawn(async move {
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let on_connected = |stream, addr| {
            let bank = bank.clone();
            async move { tokio_modbus::server::tcp::accept_tcp_connection(stream, addr, move |_| Ok(Some(bank.clone()))) }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    let dir = tempfile::tempdir()?;
    let point_toml: String = (0..points).map(|i| format!("  [[modbus.point]]\n  metric = \"p{i}\"\n  table = \"holding\"\n  address = {i}\n  type = \"u16\"\n")).collect();
    let status_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let run = |interval: &str, tag: &str| -> Result<std::process::Child> {
        let cfg = dir.path().join(format!("agent-{tag}.toml"));
        // The outage run sends to a port nobody listens on.
        let broker = if tag == "outage" { "mqtt://127.0.0.1:1".to_string() } else { c.mqtt_url.clone() };
        let (uplink, buffer) = settings.toml();
        std::fs::write(
            &cfg,
            format!(
                "gateway = \"gw-{tag}\"\n[uplink]\nbroker = \"{broker}\"\n{uplink}[buffer]\npath = \"{}\"\n{buffer}[status]\nlisten = \"127.0.0.1:{status_port}\"\n[[modbus]]\nsensor = \"bench-{tag}\"\naddress = \"tcp://{device}\"\nunit = 1\ninterval = \"{interval}\"\ntimeout = \"{}\"\nretries = 0\n{point_toml}",
                dir.path().join(format!("outbox-{tag}")).display(),
                // A timeout may not exceed the interval; loopback answers take well under 1 ms.
                if interval == "1h" { "1s" } else { interval }
            ),
        )?;
        let mut pinned = std::process::Command::new("taskset");
        pinned.args(["-c", "1"]).arg(&bin);
        Ok(run_quietly(pinned, &cfg)?)
    };
    // Idle: one poll at start, then nothing to do for an hour.
    let (mut rss_idle, mut idle_cpu) = (None, None);
    if phases == Phases::All {
        let mut idle = run("1h", "idle")?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu0, _, _) = proc_usage(idle.id())?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu1, rss, _) = proc_usage(idle.id())?;
        (rss_idle, idle_cpu) = (Some(rss), Some((cpu1 - cpu0) / 2.0));
        let _ = idle.kill();
        let _ = idle.wait();
    }
    // Under load: a poll every 20 ms.
    let stored = || scrape(c.http, "citysense_readings_stored_total");
    let collector_pid = c.proc.0.id();
    let mut busy = run(every, "load")?;
    tokio::time::sleep(Duration::from_secs(if secs < 5 { 1 } else { 3 })).await;
    let (n0, (c0, _, _), (k0, _, _), t0) = (stored().await?, proc_usage(busy.id())?, proc_usage(collector_pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (n1, (c1, rss_load, rss_peak), (k1, collector_rss, _), t1) = (stored().await?, proc_usage(busy.id())?, proc_usage(collector_pid)?, Instant::now());
    let _ = busy.kill();
    let _ = busy.wait();
    let rate = (n1 - n0) / (t1 - t0).as_secs_f64();
    let cpu = (c1 - c0) / (t1 - t0).as_secs_f64();
    let collector_cpu = (k1 - k0) / (t1 - t0).as_secs_f64();
    // Outage: the same polling with nowhere to send; the backlog grows.
    let mut outage = serde_json::Value::Null;
    if phases == Phases::All {
        let mut agent = run(every, "outage")?;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (_, rss, peak) = proc_usage(agent.id())?;
        let status = agent_status(status_port).await?;
        let _ = agent.kill();
        let _ = agent.wait();
        outage = json!({"backlog_readings": status["buffer_depth"], "rss_mb": r1(rss), "rss_peak_mb": r1(peak), "secs": secs});
    }
    Ok(json!({"scenario": "agent", "settings": settings.describe(), "points_per_poll": points, "readings_per_s": rate.round(), "agent_cpu_pct_of_one_core": r1(cpu * 100.0),
              "collector_cpu_pct_of_one_core": r1(collector_cpu * 100.0), "collector_rss_mb": r1(collector_rss),
              "path": "agent process (taskset -c 1) -> collector's embedded broker -> collector process -> store sync -> ack -> outbox deletion",
              "cpu_pct_per_1k_readings_per_s": if rate > 0.0 { (cpu * 100.0 / (rate / 1000.0) * 1000.0).round() / 1000.0 } else { 0.0 },
              "rss_idle_mb": rss_idle.map(r1), "idle_cpu_pct": idle_cpu.map(|c| r1(c * 100.0)), "rss_load_mb": r1(rss_load), "rss_peak_mb": r1(rss_peak),
              "poll_every": every, "outage": outage, "pinned": "agent: taskset -c 1; collector and the Modbus device (in the bench process): unpinned"}))
}
