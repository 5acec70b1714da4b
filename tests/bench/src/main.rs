//! `citysense-bench SCENARIO [--quick]`: measures, and prints one JSON line of
//! figures per scenario. Run from a release build:
//! `cargo run --release -p citysense-bench -- replay`.
//!
//! Scenarios: `replay` (drain speed of an outbox backlog after an outage),
//! `ingest` (collector readings/s from many gateways, with 0 and 100 rules),
//! `alert-latency` (a reading's publish to its alert on MQTT and SSE),
//! `sink` (points/s the InfluxDB sink sustains into VictoriaMetrics),
//! `store` (the embedded store: bytes per reading, a day's query time),
//! `agent` (the real agent binary on one core: readings/s, CPU, memory idle,
//! under load and with a backlog), `scaling` (how the figures change as
//! gateways, rules and points grow tenfold).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use agent::config::{AgentConfig, WhenFull};
use agent::outbox::{Outbox, SledOutbox};
use agent::source::NewReading;
use anyhow::{bail, Result};
use collector::config::CollectorConfig;
use serde_json::json;
use shared::Quality;

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
        bail!("usage: citysense-bench SCENARIO [--quick]; scenarios: agent replay ingest alert-latency sink store scaling");
    };
    match scenario.as_str() {
        "replay" => println!("{}", replay(if quick { 100_000 } else { 1_000_000 }).await?),
        "ingest" => {
            let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
            let default_gateways = "10";
            match (opt("--rules"), opt("--gateways"), opt("--broker")) {
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
                println!("{}", agent_pipeline(n.parse()?, &every, secs, phases).await?)
            }
            None => {
                for n in ["1", "100", "1000"] {
                    in_fresh_process(&["agent", "--points", n], quick)?;
                }
            }
        },
        "store" => println!("{}", tokio::task::spawn_blocking(move || if quick { store(20, 1) } else { store(40, 3) }).await??),
        "scaling" => println!("{}", scaling(quick)?),
        other => bail!("unknown scenario `{other}`; scenarios: agent replay ingest alert-latency sink store scaling"),
    }
    Ok(())
}

/// A backlog of `n` readings sits in the agent's outbox (as after an outage);
/// the agent starts with the collector reachable. Measures the time until the
/// collector has stored every reading and the agent has deleted them on ack.
async fn replay(n: u64) -> Result<serde_json::Value> {
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
                .map(|k| NewReading {
                    sensor: format!("aq-{:03}", k % 100).into(),
                    metric: "pm25".into(),
                    ts_ms: t0 + k as i64,
                    value: (k % 500) as f64 / 10.0,
                    quality: Quality::Good,
                })
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

async fn collector_with(rules: &str) -> Result<(tempfile::TempDir, collector::Collector)> {
    collector_on("listen = \"127.0.0.1:0\"", rules).await
}

/// `mqtt`: the `[mqtt]` line saying which broker (`listen = …` or `external = …`).
async fn collector_on(mqtt: &str, rules: &str) -> Result<(tempfile::TempDir, collector::Collector)> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let text = format!(
        "[mqtt]\n{mqtt}\nmax_packet = \"16MiB\"\n# One bench gateway may send more than a real one is allowed to.\ngateway_rate = 10000000\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n{rules}",
        d.join("store").display()
    );
    let cfg: CollectorConfig = shared::config::parse("bench collector", &text, d).map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = collector::Collector::start(cfg).await?;
    Ok((dir, c))
}

/// `n` threshold rules, none of which the benchmark's values trip.
fn quiet_rules(n: usize) -> String {
    (0..n).map(|i| format!("[[rule]]\nid = \"r{i}\"\nkind = \"threshold\"\nmetric = \"m{}\"\nop = \">\"\nvalue = 1e9\nseverity = \"info\"\n", i % 10)).collect()
}

fn mqtt_client(url: &str, id: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let b = shared::url::BrokerUrl::parse(url).unwrap();
    let mut o = rumqttc::MqttOptions::new(id, b.host, b.port);
    o.set_max_packet_size(16 << 20, 16 << 20);
    o.set_inflight(100);
    let (c, mut el) = rumqttc::AsyncClient::new(o, 256);
    el.network_options.set_tcp_nodelay(true);
    (c, el)
}

/// `gateways` connections each publish batches of 1,000 readings (10 metrics ×
/// 100 sensors) until `total` readings are stored; readings/s is stored/elapsed.
async fn ingest(gateways: usize, total: u64, batch: Option<u64>, rules: usize, broker: &str) -> Result<serde_json::Value> {
    // Debian's Mosquitto on a free loopback port, as the tests start it.
    let broker_dir = tempfile::tempdir()?;
    let mut mosquitto = None;
    let mqtt = match broker {
        "embedded" => "listen = \"127.0.0.1:0\"".to_string(),
        "mosquitto" => format!("external = \"{}\"", mosquitto.insert(support::Mosquitto::open(broker_dir.path())?).url()),
        other => bail!("broker `{other}` is not embedded or mosquitto"),
    };
    let (_dir, c) = collector_on(&mqtt, &quiet_rules(rules)).await?;
    let start = Instant::now();
    let want = load(&c, gateways, total, batch).await?;
    let secs = start.elapsed().as_secs_f64();
    let lagged = c.counters.rules_lagged.load(Relaxed);
    c.shutdown().await;
    drop(mosquitto);
    Ok(
        json!({"scenario": "ingest", "gateways": gateways, "rules": rules, "readings": want, "batch": batch.unwrap_or((total / gateways as u64).clamp(1, 1000)), "seconds": (secs * 1000.0).round() / 1000.0,
              "readings_per_s": (want as f64 / secs).round(), "rules_lagged_batches": lagged, "broker": broker}),
    )
}

/// Publishes about `total` readings from `gateways` connections in batches of
/// `batch` (default: 1,000, fewer when there are many gateways) and waits
/// until the collector has stored them all; returns how many.
async fn load(c: &collector::Collector, gateways: usize, total: u64, batch: Option<u64>) -> Result<u64> {
    let size = batch.unwrap_or((total / gateways as u64).clamp(1, 1000));
    let per_gateway = total / gateways as u64 / size;
    let mut tasks = Vec::new();
    for g in 0..gateways {
        let (client, mut el) = mqtt_client(&c.mqtt_url, &format!("bench-gw-{g}"));
        tokio::spawn(async move { while el.poll().await.is_ok() {} });
        tasks.push(tokio::spawn(async move {
            let gw = format!("gw-{g}");
            let t0 = shared::now_ms();
            for b in 0..per_gateway {
                let readings = (0..size)
                    .map(|k| {
                        let seq = b * size + k + 1;
                        shared::Reading {
                            seq: shared::Seq(seq),
                            sensor: format!("s{g}-{}", k % 100).into(),
                            metric: format!("m{}", k / 100).into(),
                            ts_ms: t0 + seq as i64,
                            value: (k % 97) as f64,
                            quality: Quality::Good,
                        }
                    })
                    .collect();
                let bytes = shared::Batch::new(gw.clone(), 1, readings).encode();
                client.publish(shared::topics::up(&gw), rumqttc::QoS::AtLeastOnce, false, bytes).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let want = per_gateway * size * gateways as u64;
    let counters = &c.counters;
    let deadline = Instant::now() + Duration::from_secs(600);
    while counters.stored.load(Relaxed) < want {
        if Instant::now() > deadline {
            bail!("ingest stalled at {} of {want}", counters.stored.load(Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(want)
}

/// The embedded store on its own: `series` series of one day at 1 s
/// resolution written as ingest writes them (batches of 1,000, one sync
/// each), rolled up and packed hour by hour as the lifecycle task does.
/// Bytes per reading are given over all `days` (which includes the file
/// space for an hour of unpacked samples, reused every hour after) and, past
/// the first day, as the file's growth per reading: the steady state. Figures: write rate, bytes on disk per reading, and
/// the time to read one series' day raw, with a 1-minute step from the
/// rollups, and with a 1-minute step computed from the raw samples.
fn store(series: usize, days: i64) -> Result<serde_json::Value> {
    use collector::store::{aggregate, aggregate_rollups, Agg, Level, RedbStore, Store, Write};
    let dir = tempfile::tempdir()?;
    let st = RedbStore::open(dir.path())?;
    let day = 86_400i64;
    // Midnight UTC: the days below start on day boundaries.
    let t0 = 1_700_006_400_000i64;
    let start = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    let mut n = 0u64;
    let mut pack_secs = 0.0;
    let mut after_day_1 = (0u64, 0u64);
    for sec in 0..day * days {
        // As the lifecycle task does: each hour packed once it has closed.
        if sec > 0 && sec % 3600 == 0 {
            let t = Instant::now();
            st.roll_up()?;
            st.pack(t0 + sec * 1000 + collector::store::PACK_AFTER_MS)?;
            pack_secs += t.elapsed().as_secs_f64();
            if sec == day {
                after_day_1 = (st.size_on_disk(), n);
            }
        }
        for s in 0..series {
            n += 1;
            // A slowly varying value with sensor noise, as a real gauge gives.
            let v = 20.0 + ((sec as f64) / 600.0).sin() * 5.0 + ((sec * 7 + s as i64) % 13) as f64 * 0.01;
            batch.push(shared::Reading {
                seq: shared::Seq(n),
                sensor: format!("aq-{s:03}").into(),
                metric: "pm25".into(),
                ts_ms: t0 + sec * 1000,
                value: (v * 100.0).round() / 100.0,
                quality: Quality::Good,
            });
            if batch.len() == 1000 {
                st.write(&Write { batches: vec![("gw-bench".into(), std::sync::Arc::new(std::mem::take(&mut batch)))], progress: vec![] })?;
                st.sync()?;
            }
        }
    }
    st.write(&Write { batches: vec![("gw-bench".into(), std::sync::Arc::new(batch))], progress: vec![] })?;
    st.sync()?;
    let write_secs = start.elapsed().as_secs_f64();
    let t = Instant::now();
    st.roll_up()?;
    st.pack(t0 + days * day * 1000 + collector::store::PACK_AFTER_MS)?;
    let rollup_secs = t.elapsed().as_secs_f64() + pack_secs;
    let bytes = st.size_on_disk();
    let t = Instant::now();
    let raw = st.query("aq-007", "pm25", t0, t0 + day * 1000 - 1, usize::MAX)?;
    let raw_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let minutes = aggregate_rollups(&st.rollups("aq-007", "pm25", Level::Minute, t0, t0 + day * 1000 - 1)?, 60_000, Agg::Mean);
    let rollup_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let from_raw = aggregate(&st.query("aq-007", "pm25", t0, t0 + day * 1000 - 1, usize::MAX)?, 60_000, Agg::Mean);
    let from_raw_ms = t.elapsed().as_secs_f64() * 1000.0;
    if raw.len() as i64 != day || minutes.len() != 1440 || from_raw.len() != 1440 {
        bail!("store bench read back {} samples, {} and {} minutes", raw.len(), minutes.len(), from_raw.len());
    }
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({"scenario": "store", "engine": "redb", "series": series, "readings": n, "write_readings_per_s": (n as f64 / write_secs).round(),
              "rollup_and_pack_s": r2(rollup_secs), "bytes_on_disk": bytes, "bytes_per_reading": r2(bytes as f64 / n as f64),
              "days": days, "bytes_per_reading_after_day_1": if days > 1 { json!(r2((bytes - after_day_1.0) as f64 / (n - after_day_1.1) as f64)) } else { json!(null) },
              "day_raw_query_ms": r2(raw_ms), "day_1m_step_from_rollups_ms": r2(rollup_ms), "day_1m_step_from_raw_ms": r2(from_raw_ms)}))
}

/// A Modbus TCP device whose holding registers (any address) change on every read.
#[derive(Clone)]
struct RegisterBank(std::sync::Arc<std::sync::atomic::AtomicU64>);

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

/// (CPU seconds used, resident and peak resident MB) of a process, from /proc.
fn proc_usage(pid: u32) -> Result<(f64, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, in clock ticks (100 per second on Linux).
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((ticks / 100.0, kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0))
}

#[derive(Clone, Copy, PartialEq)]
enum Phases {
    All,
    LoadOnly,
}

/// The real `citysense-agent` binary (release, next to this one), pinned to
/// one core, reads `points` u16 registers per poll every `every` (default 20 ms) from a Modbus
/// TCP device and sends them through its durable outbox (flushed every
/// 100 ms) to a collector in this process. Idle: the same agent polling once
/// an hour. Outage: the same load with the collector unreachable, so every
/// reading stays in the outbox. Figures: readings/s acknowledged, its CPU, CPU
/// per 1k readings/s, RSS idle, under load and holding the backlog.
async fn agent_pipeline(points: usize, every: &str, secs: u64, phases: Phases) -> Result<serde_json::Value> {
    let bin = std::env::current_exe()?.with_file_name("citysense-agent");
    if !bin.exists() {
        bail!("{} is missing: cargo build --release -p citysense-agent", bin.display());
    }
    let (_cdir, c) = collector_with("").await?;
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
        std::fs::write(
            &cfg,
            format!(
                "gateway = \"gw-{tag}\"\n[uplink]\nbroker = \"{broker}\"\nbatch_max = 5000\nlinger = \"20ms\"\nmax_inflight = 8\n[buffer]\npath = \"{}\"\nmax_bytes = \"2GiB\"\nflush = \"100ms\"\n[status]\nlisten = \"127.0.0.1:{status_port}\"\n[[modbus]]\nsensor = \"bench-{tag}\"\naddress = \"tcp://{device}\"\nunit = 1\ninterval = \"{interval}\"\ntimeout = \"{}\"\nretries = 0\n{point_toml}",
                dir.path().join(format!("outbox-{tag}")).display(),
                // A timeout may not exceed the interval; loopback answers take well under 1 ms.
                if interval == "1h" { "1s" } else { interval }
            ),
        )?;
        Ok(std::process::Command::new("taskset")
            .args(["-c", "1"])
            .arg(&bin)
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?)
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
    let stored = &c.counters.stored;
    let mut busy = run(every, "load")?;
    tokio::time::sleep(Duration::from_secs(if secs < 5 { 1 } else { 3 })).await;
    let (n0, (c0, _, _), t0) = (stored.load(Relaxed), proc_usage(busy.id())?, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (n1, (c1, rss_load, rss_peak), t1) = (stored.load(Relaxed), proc_usage(busy.id())?, Instant::now());
    let _ = busy.kill();
    let _ = busy.wait();
    let rate = (n1 - n0) as f64 / (t1 - t0).as_secs_f64();
    let cpu = (c1 - c0) / (t1 - t0).as_secs_f64();
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
    Ok(json!({"scenario": "agent", "points_per_poll": points, "readings_per_s": rate.round(), "agent_cpu_pct_of_one_core": r1(cpu * 100.0),
              "cpu_pct_per_1k_readings_per_s": if rate > 0.0 { (cpu * 100.0 / (rate / 1000.0) * 1000.0).round() / 1000.0 } else { 0.0 },
              "rss_idle_mb": rss_idle.map(r1), "idle_cpu_pct": idle_cpu.map(|c| r1(c * 100.0)), "rss_load_mb": r1(rss_load), "rss_peak_mb": r1(rss_peak),
              "poll_every": every, "outage": outage, "outbox_flush": "100ms", "pinned": "taskset -c 1"}))
}

/// Each dimension grown tenfold at a time, everything else held: gateways
/// (fixed total and batch size), rules (10 gateways), points per agent poll.
/// Each run is a fresh process; `per_tenfold` is the ratio of throughput
/// from one step to the next (1.0: the step costs nothing; 10.0 for points:
/// throughput grows with the work offered, so the agent is not yet saturated).
fn scaling(quick: bool) -> Result<serde_json::Value> {
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

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The agent's `/status` report.
async fn agent_status(port: u16) -> Result<serde_json::Value> {
    let (_, body) = support::try_get(([127, 0, 0, 1], port).into(), "/status").await?;
    Ok(serde_json::from_str(&body)?)
}

/// A counter or gauge from the collector's `/metrics`.
async fn scrape(http: std::net::SocketAddr, name: &str) -> Result<f64> {
    let (_, body) = support::try_get(http, "/metrics").await?;
    support::metric_in(&body, name).ok_or_else(|| anyhow::anyhow!("{name} not in /metrics"))
}

/// The InfluxDB sink into VictoriaMetrics (Debian's `victoria-metrics`, on
/// loopback): `total` readings arrive from 10 gateways; figures are the
/// collector's ingest rate with the sink on, and the points/s the sink
/// sustains into the server until every point is confirmed.
async fn sink(total: u64) -> Result<serde_json::Value> {
    let vm_dir = tempfile::tempdir()?;
    let port = support::free_port();
    let vm = support::Victoria::start(vm_dir.path(), port)?;
    let (_dir, c) = collector_with(&format!("[influxdb]\nurl = \"http://127.0.0.1:{port}\"\norg = \"city\"\nbucket = \"bench\"\n")).await?;
    let start = Instant::now();
    let want = load(&c, 10, total, None).await?;
    let ingest_secs = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    while scrape(c.http_addr, "citysense_influx_points_written_total").await? < want as f64 {
        if Instant::now() > deadline {
            bail!("sink stalled");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sink_secs = start.elapsed().as_secs_f64();
    let errors = scrape(c.http_addr, "citysense_influx_write_errors_total").await?;
    c.shutdown().await;
    drop(vm);
    Ok(json!({"scenario": "sink", "target": "victoria-metrics /api/v2/write", "readings": want,
              "ingest_readings_per_s": (want as f64 / ingest_secs).round(), "sink_points_per_s": (want as f64 / sink_secs).round(),
              "sink_seconds": (sink_secs * 1000.0).round() / 1000.0, "write_errors": errors, "batch_points": 5000}))
}

/// With 100 rules loaded, one gateway alternates a pm25 value above and
/// below a threshold; the time from publishing the reading to the alert
/// change arriving on MQTT (`alerts/#`) and on the SSE stream is recorded.
///
/// With `load` > 0, ten other gateways publish that many readings per second
/// (batches of 1,000 metrics no rule looks at) all along.
async fn alert_latency(samples: usize, load: u64) -> Result<serde_json::Value> {
    let rules = format!("{}[[rule]]\nid = \"pm\"\nkind = \"threshold\"\nmetric = \"pm25\"\nop = \">\"\nvalue = 75\nseverity = \"warning\"\n", quiet_rules(99));
    let (_dir, c) = collector_with(&rules).await?;
    let (sub, mut sub_el) = mqtt_client(&c.mqtt_url, "bench-command");
    let (mqtt_tx, mut mqtt_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    sub.subscribe("citysense/v1/alerts/#", rumqttc::QoS::AtLeastOnce).await?;
    tokio::spawn(async move {
        while let Ok(ev) = sub_el.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = ev {
                let _ = mqtt_tx.send(Instant::now());
            }
        }
    });
    let (sse_tx, mut sse_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let http = c.http_addr;
    tokio::spawn(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        s.write_all(b"GET /api/v1/stream?types=alert HTTP/1.0\r\n\r\n").await.unwrap();
        let mut lines = tokio::io::BufReader::new(s).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("data:") {
                let _ = sse_tx.send(Instant::now());
            }
        }
    });
    let (pubc, mut pub_el) = mqtt_client(&c.mqtt_url, "bench-gw");
    tokio::spawn(async move { while pub_el.poll().await.is_ok() {} });
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if load > 0 {
        for g in 0..10u64 {
            let (client, mut el) = mqtt_client(&c.mqtt_url, &format!("bench-load-{g}"));
            tokio::spawn(async move { while el.poll().await.is_ok() {} });
            let stop = stop_load.clone();
            // Each of the ten sends 1,000-reading batches at load/10 readings/s.
            let every = Duration::from_secs_f64(1000.0 * 10.0 / load as f64);
            tokio::spawn(async move {
                let gw = format!("gw-load-{g}");
                let mut tick = tokio::time::interval(every);
                let mut seq = 0u64;
                while !stop.load(Relaxed) {
                    tick.tick().await;
                    let t = shared::now_ms();
                    let readings = (0..1000u64)
                        .map(|k| {
                            seq += 1;
                            shared::Reading {
                                seq: shared::Seq(seq),
                                sensor: format!("load{g}-{}", k % 100).into(),
                                metric: "flow".into(),
                                ts_ms: t + k as i64,
                                value: k as f64,
                                quality: Quality::Good,
                            }
                        })
                        .collect();
                    if client.publish(shared::topics::up(&gw), rumqttc::QoS::AtLeastOnce, false, shared::Batch::new(gw.clone(), 1, readings).encode()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored_before = c.counters.stored.load(Relaxed);
    let measuring = Instant::now();
    let (mut to_mqtt, mut to_sse) = (Vec::new(), Vec::new());
    for i in 0..samples as u64 {
        // Odd samples fire, even ones resolve: each is one alert change.
        let value = if i % 2 == 0 { 100.0 } else { 10.0 };
        let r = shared::Reading { seq: shared::Seq(i + 1), sensor: "aq-1".into(), metric: "pm25".into(), ts_ms: shared::now_ms(), value, quality: Quality::Good };
        let sent = Instant::now();
        pubc.publish(shared::topics::up("gw-lat"), rumqttc::QoS::AtLeastOnce, false, shared::Batch::new("gw-lat", 1, vec![r]).encode()).await?;
        let m = tokio::time::timeout(Duration::from_secs(5), mqtt_rx.recv()).await?.unwrap();
        let s = tokio::time::timeout(Duration::from_secs(5), sse_rx.recv()).await?.unwrap();
        to_mqtt.push(m.duration_since(sent).as_secs_f64() * 1000.0);
        to_sse.push(s.duration_since(sent).as_secs_f64() * 1000.0);
    }
    let achieved = (c.counters.stored.load(Relaxed) - stored_before) as f64 / measuring.elapsed().as_secs_f64();
    stop_load.store(true, Relaxed);
    c.shutdown().await;
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        (v[i] * 100.0).round() / 100.0
    };
    Ok(json!({"scenario": "alert-latency", "rules": 100, "alert_changes": samples,
              "mqtt_ms_p50": pct(&mut to_mqtt, 0.5), "mqtt_ms_p99": pct(&mut to_mqtt, 0.99), "mqtt_ms_max": pct(&mut to_mqtt, 1.0),
              "sse_ms_p50": pct(&mut to_sse, 0.5), "sse_ms_p99": pct(&mut to_sse, 0.99), "sse_ms_max": pct(&mut to_sse, 1.0),
              "background_readings_per_s_asked": load, "background_readings_per_s_stored": achieved.round(),
              "measured": "from publish by the gateway to the alert change received, so it includes the broker hops and the store sync"}))
}
