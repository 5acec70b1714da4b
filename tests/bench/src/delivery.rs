//! `delivery`: the agent with its shipped defaults, in its own process, sending
//! through Debian's Mosquitto to a collector in its own process.
//!
//! - **Latency, read → stored**: Modbus devices served by this process answer
//!   every request with one counter value in all registers and note when they
//!   served it. The bench subscribes to the agent's batches (`up/`, to learn
//!   which seq carries which counter value) and to the collector's acks
//!   (`ack/`, sent only after the store's sync). A reading's latency is from
//!   the moment its request was served to the first ack covering its seq, as
//!   this process receives both: it includes the ack's hop through Mosquitto
//!   back to a subscriber (tens of microseconds on loopback), not the agent's
//!   own delete. 180 readings/s (10 devices × 18 registers every second) and
//!   10,000 readings/s (100 × 100). Split in two: read → sent (until the
//!   batch carrying the reading reaches this process through Mosquitto: the
//!   agent's part, its fsync included) and sent → stored (the collector's
//!   part, its store's sync included, and the ack's way back).
//! - **Kill -9 after a poll**: an agent polling 10 devices × 18 registers
//!   every second, sending through Mosquitto to the collector, is killed
//!   with SIGKILL as soon as `/status` shows a poll made durable (its fsync
//!   returned; the kill lands within 20 ms of that answer), N times on one
//!   outbox. A last agent then delivers what is left. Lost: seqs durable at
//!   a kill that the next agent's outbox did not hold on opening (it would
//!   hand them out again to new readings), plus seqs durable at a kill that
//!   never reached Mosquitto in a batch.
//! - **Idle RSS** of an agent with 200 points configured (10 devices × 20,
//!   polled once at start, then hourly). Of the shipped binary: build the
//!   agent alone (`cargo build --release -p citysense-agent`, as `deploy/`
//!   does), last; built in one command with the collector, cargo unifies
//!   their features (aws-lc-rs comes back) and its start-up order list no
//!   longer names that binary's functions.
//! - **Backlog**: the agent's broker is down (Mosquitto not started yet on its
//!   port) while one device of 4,000 registers is polled every 20 ms, until a
//!   million readings are buffered; then the device stops answering and the
//!   agent's RSS is read. **Drain**: Mosquitto and the collector start; the
//!   rate is 1M over the time from the first ack to an empty outbox (the
//!   time the agent's reconnect backoff took is reported apart).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rumqttc::{Event, Packet, QoS};
use serde_json::json;

use crate::common::*;
use support::{free_port, Child};

/// Modbus devices (any unit, any address) answering every request with one
/// counter value in all registers, noting when each counter value was served.
#[derive(Clone)]
struct StampedBank {
    next: Arc<AtomicU64>,
    /// Nanoseconds since `epoch` at which counter value `i` was served (0: never).
    served: Arc<Vec<AtomicU64>>,
    epoch: Instant,
    offline: Arc<AtomicBool>,
}

impl tokio_modbus::server::Service for StampedBank {
    type Request = tokio_modbus::Request<'static>;
    type Response = tokio_modbus::Response;
    type Exception = tokio_modbus::ExceptionCode;
    type Future = std::future::Ready<Result<tokio_modbus::Response, tokio_modbus::ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(match req {
            _ if self.offline.load(Relaxed) => Err(tokio_modbus::ExceptionCode::ServerDeviceFailure),
            tokio_modbus::Request::ReadHoldingRegisters(_, n) => {
                let c = self.next.fetch_add(1, Relaxed);
                if let Some(slot) = self.served.get(c as usize) {
                    slot.store(self.epoch.elapsed().as_nanos() as u64, Relaxed);
                }
                Ok(tokio_modbus::Response::ReadHoldingRegisters(vec![c as u16; n as usize]))
            }
            _ => Err(tokio_modbus::ExceptionCode::IllegalFunction),
        })
    }
}

impl StampedBank {
    async fn serve() -> Result<(StampedBank, std::net::SocketAddr)> {
        let bank = StampedBank {
            next: Arc::new(AtomicU64::new(1)),
            served: Arc::new((0..1 << 16).map(|_| AtomicU64::new(0)).collect()),
            epoch: Instant::now(),
            offline: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let b = bank.clone();
        tokio::spawn(async move {
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let on_connected = |stream, addr| {
                let bank = b.clone();
                async move { tokio_modbus::server::tcp::accept_tcp_connection(stream, addr, move |_| Ok(Some(bank.clone()))) }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        });
        Ok((bank, addr))
    }
}

struct Bins {
    agent: PathBuf,
    collector: PathBuf,
}

/// The agent with the shipped defaults: only where it sends, where it keeps
/// its outbox, its status port and its devices are set.
/// What an agent polls: `devices` devices at `device`, each with `points` registers, every `every`.
struct Polling<'a> {
    device: std::net::SocketAddr,
    devices: usize,
    points: usize,
    every: &'a str,
}

/// The agent's defaults as this build has them (the config parsed with only
/// the required keys), so the JSON cannot name stale ones.
fn shipped_defaults() -> String {
    let dir = std::env::temp_dir();
    let text = "gateway = \"gw\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n[buffer]\npath = \"/nonexistent\"\n\
                [[modbus]]\nsensor = \"d\"\naddress = \"tcp://127.0.0.1:502\"\n  [[modbus.point]]\n  metric = \"m\"\n  table = \"holding\"\n  address = 0\n";
    match shared::config::parse::<agent::config::AgentConfig>("defaults", text, &dir) {
        Ok(c) => format!(
            "shipped defaults (batch_max {}, max_inflight {}, linger {:?} behind a full window only, buffer.flush {:?} as an upper bound: group commit on arrival)",
            c.uplink.batch_max, c.uplink.max_inflight, c.uplink.linger.0, c.buffer.flush.0
        ),
        Err(e) => format!("shipped defaults (not read back: {e})"),
    }
}

/// Extra `[uplink]` lines for trying settings other than the shipped ones
/// (`CITYSENSE_BENCH_UPLINK="batch_max = 2000"`): the JSON says which.
fn uplink_extra() -> String {
    std::env::var("CITYSENSE_BENCH_UPLINK").unwrap_or_default().replace(';', "\n")
}

fn agent(bins: &Bins, dir: &Path, tag: &str, broker: &str, status: u16, polling: Polling) -> Result<Child> {
    let Polling { device, devices, points, every } = polling;
    let points_toml: String = (0..points).map(|i| format!("  [[modbus.point]]\n  metric = \"p{i}\"\n  table = \"holding\"\n  address = {i}\n  type = \"u16\"\n")).collect();
    // A device's timeout may not exceed its interval (the default is 1 s); loopback answers take well under 1 ms.
    let timeout = if every == "20ms" { "timeout = \"20ms\"\n" } else { "" };
    let devices_toml: String =
        (0..devices).map(|d| format!("[[modbus]]\nsensor = \"dev-{d:03}\"\naddress = \"tcp://{device}\"\nunit = 1\ninterval = \"{every}\"\n{timeout}{points_toml}")).collect();
    let cfg = dir.join(format!("agent-{tag}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "gateway = \"gw-{tag}\"\n[uplink]\nbroker = \"{broker}\"\n{}\n[buffer]\npath = \"{}\"\n[status]\nlisten = \"127.0.0.1:{status}\"\n{devices_toml}",
            uplink_extra(),
            dir.join(format!("outbox-{tag}")).display()
        ),
    )?;
    Ok(Child(run_quietly(Command::new(&bins.agent), &cfg)?))
}

/// The collector in its own process on Mosquitto at `broker`.
fn collector(dir: &Path, tag: &str, broker: &str) -> Result<Child> {
    Ok(collector_process(dir, tag, Broker::External(broker), "")?.proc)
}

async fn status_when(port: u16, limit: Duration, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> Result<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = agent_status(port).await {
            if ok(&s) {
                return Ok(s);
            }
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Read → stored latency at `devices × points` readings per second.
async fn latency(bins: &Bins, dir: &Path, mosquitto: &support::Mosquitto, tag: &str, devices: usize, points: usize, secs: u64) -> Result<serde_json::Value> {
    let (bank, device) = StampedBank::serve().await?;
    let gateway = format!("gw-{tag}");
    // seq → (counter value, when its batch was seen), from the agent's batches; (ack seq, when), from the collector.
    let sent: Arc<Mutex<BTreeMap<u64, (u16, u64)>>> = Default::default();
    let acks: Arc<Mutex<Vec<(u64, u64)>>> = Default::default();
    let (client, mut el) = mqtt_client(&mosquitto.url(), &format!("bench-watch-{tag}"));
    client.subscribe(shared::topics::up(&gateway), QoS::AtMostOnce).await?;
    client.subscribe(shared::topics::ack(&gateway), QoS::AtMostOnce).await?;
    let (up_topic, ack_topic) = (shared::topics::up(&gateway), shared::topics::ack(&gateway));
    let watch = {
        let (sent, acks, epoch) = (sent.clone(), acks.clone(), bank.epoch);
        tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = ev {
                    let now = epoch.elapsed().as_nanos() as u64;
                    if p.topic == ack_topic {
                        if let Ok(a) = serde_json::from_slice::<shared::wire::Ack>(&p.payload) {
                            acks.lock().unwrap().push((a.seq.get(), now));
                        }
                    } else if p.topic == up_topic {
                        if let Ok(b) = shared::Batch::decode(&p.payload) {
                            let mut s = sent.lock().unwrap();
                            for r in &b.readings {
                                s.entry(r.seq.get()).or_insert((r.value as u16, now));
                            }
                        }
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = free_port();
    let ag = agent(bins, dir, tag, &mosquitto.url(), status, Polling { device, devices, points, every: "1s" })?;
    status_when(status, Duration::from_secs(30), "the agent to connect", |s| s["connected"] == true).await?;
    // Warm up, then count the readings served during `secs`.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from_ns = bank.epoch.elapsed().as_nanos() as u64;
    let (c0, _, _) = proc_usage(ag.0.id())?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let upto_ns = bank.epoch.elapsed().as_nanos() as u64;
    let (c1, rss, peak) = proc_usage(ag.0.id())?;
    let cpu = (c1 - c0) / t0.elapsed().as_secs_f64();
    // Let the last of them be stored and acked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(ag);
    watch.abort();
    let served = bank.next.load(Relaxed);
    if served >= 1 << 16 {
        bail!("{served} requests: counter values wrapped");
    }
    let mut acks = acks.lock().unwrap().clone();
    // The first ack at or above a seq is when it was stored: the earliest over every ack covering it.
    acks.sort_unstable();
    let mut earliest = vec![u64::MAX; acks.len()];
    for i in (0..acks.len()).rev() {
        earliest[i] = acks[i].1.min(earliest.get(i + 1).copied().unwrap_or(u64::MAX));
    }
    let sent = sent.lock().unwrap();
    let (mut lat, mut unacked) = (Vec::new(), 0u64);
    let (mut to_sent, mut to_stored) = (Vec::new(), Vec::new());
    for (seq, (c, seen)) in sent.iter() {
        let at = bank.served[*c as usize].load(Relaxed);
        if at < from_ns || at > upto_ns {
            continue;
        }
        let i = acks.partition_point(|(s, _)| s < seq);
        match earliest.get(i) {
            Some(t) if *t != u64::MAX => {
                lat.push((*t as f64 - at as f64) / 1e6);
                to_sent.push((*seen as f64 - at as f64) / 1e6);
                to_stored.push((*t as f64 - *seen as f64) / 1e6);
            }
            _ => unacked += 1,
        }
    }
    for v in [&mut lat, &mut to_sent, &mut to_stored] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let spread = |v: &[f64]| json!({"p50": r3(pct(v, 0.5)), "p90": r3(pct(v, 0.9)), "p99": r3(pct(v, 0.99)), "max": r3(v.last().copied().unwrap_or(f64::NAN))});
    let expected = (devices * points) as f64 * secs as f64;
    Ok(json!({
        "readings_per_s_configured": devices * points, "devices": devices, "points_per_device": points, "secs": secs,
        "readings_measured": lat.len(), "readings_expected_about": expected, "unacked": unacked,
        "read_to_stored_ms": spread(&lat), "read_to_sent_ms": spread(&to_sent), "sent_to_stored_ms": spread(&to_stored),
        "agent_cpu_pct": r1(cpu * 100.0), "agent_rss_mb": r1(rss), "agent_rss_peak_mb": r1(peak),
    }))
}

/// `GET /status` straight over a blocking socket: a few hundred
/// microseconds, so a kill lands right after what the answer showed.
fn status_now(port: u16) -> Option<serde_json::Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

/// One kill: what `/status` showed right before it, and how long after that answer it came.
struct Kill {
    /// `durable_seq` when the outbox opened, before this agent's polls.
    opened: u64,
    durable: u64,
    /// Seqs handed out but not yet durable in that same answer: the window a kill may lose.
    not_yet_durable: u64,
    after: Duration,
}

/// Waits for the agent's first `/status` answer (what the outbox held on
/// opening), then for a poll made durable after it, and kills at once.
fn kill_after_a_durable_poll(agent: &mut Child, port: u16) -> Result<Kill> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let opened = loop {
        if let Some(d) = status_now(port).and_then(|s| s["durable_seq"].as_u64()) {
            break d;
        }
        if Instant::now() > deadline {
            bail!("the agent's status never answered");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    loop {
        if let Some(s) = status_now(port) {
            let (durable, next) = (s["durable_seq"].as_u64().unwrap_or(0), s["next_seq"].as_u64().unwrap_or(0));
            if durable > opened {
                let seen = Instant::now();
                agent.0.kill()?;
                let after = seen.elapsed();
                agent.0.wait()?;
                return Ok(Kill { opened, durable, not_yet_durable: next.saturating_sub(durable + 1), after });
            }
        }
        if Instant::now() > deadline {
            bail!("no poll became durable after the outbox opened at seq {opened}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `rounds` agents in a row on one outbox, each killed with SIGKILL right
/// after a poll was made durable; then one more delivers what is left.
/// Lost: seqs durable at a kill that the next outbox did not hold on
/// opening, and seqs durable at a kill that never reached Mosquitto.
async fn kills(bins: &Bins, dir: &Path, mosquitto: &support::Mosquitto, rounds: usize) -> Result<serde_json::Value> {
    let (_bank, device) = StampedBank::serve().await?;
    let tag = "kill";
    let gateway = format!("gw-{tag}");
    // seq → every distinct reading seen under it (sensor, metric, time, value bits).
    type Seen = BTreeMap<u64, BTreeSet<(String, String, i64, u64)>>;
    let seen: Arc<Mutex<Seen>> = Default::default();
    let (client, mut el) = mqtt_client(&mosquitto.url(), "bench-watch-kill");
    let up = shared::topics::up(&gateway);
    client.subscribe(up.clone(), QoS::AtLeastOnce).await?;
    let watch = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = ev {
                    if let (true, Ok(b)) = (p.topic == up, shared::Batch::decode(&p.payload)) {
                        let mut seen = seen.lock().unwrap();
                        for r in &b.readings {
                            seen.entry(r.seq.get()).or_default().insert((r.sensor.to_string(), r.metric.to_string(), r.ts_ms, r.value.to_bits()));
                        }
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let polling = || Polling { device, devices: 10, points: 18, every: "1s" };
    let mut done = Vec::new();
    for round in 0..rounds {
        let status = free_port();
        let mut ag = agent(bins, dir, tag, &mosquitto.url(), status, polling())?;
        let k = tokio::task::spawn_blocking(move || kill_after_a_durable_poll(&mut ag, status)).await?.with_context(|| format!("kill {round}"))?;
        done.push(k);
    }
    let durable = done.iter().map(|k| k.durable).max().unwrap_or(0);
    let status = free_port();
    let last = agent(bins, dir, tag, &mosquitto.url(), status, polling())?;
    let reopened = status_when(status, Duration::from_secs(30), "the last agent's status", |_| true).await?["durable_seq"].as_u64().unwrap_or(0);
    // A durable seq the next outbox does not hold is lost: it would be handed out again.
    let opens: Vec<u64> = done.iter().skip(1).map(|k| k.opened).chain([reopened]).collect();
    let not_reopened: u64 = done.iter().zip(&opens).map(|(k, o)| k.durable.saturating_sub(*o)).sum();
    status_when(status, Duration::from_secs(60), "the last agent to deliver what the killed ones left", |s| s["acked_seq"].as_u64() >= Some(durable) && s["buffer_depth"] == 0)
        .await?;
    drop(last);
    tokio::time::sleep(Duration::from_millis(300)).await;
    watch.abort();
    let seen = seen.lock().unwrap();
    let not_delivered = (1..=durable).filter(|s| !seen.contains_key(s)).count() as u64;
    let reused = seen.values().filter(|r| r.len() > 1).count();
    let mut after: Vec<f64> = done.iter().map(|k| k.after.as_secs_f64() * 1e3).collect();
    after.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(json!({
        "kills": done.len(), "devices": 10, "points_per_device": 18, "interval": "1s",
        "kill_after_durable_ms": {"p50": r3(pct(&after, 0.5)), "max": r3(after.last().copied().unwrap_or(f64::NAN))},
        "kills_within_20ms": done.iter().filter(|k| k.after < Duration::from_millis(20)).count(),
        "durable_seqs_at_kills": durable, "readings_lost": not_reopened + not_delivered,
        "durable_not_held_on_reopening": not_reopened, "durable_never_delivered": not_delivered, "seqs_seen_with_two_readings": reused,
        "not_yet_durable_at_kill_total": done.iter().map(|k| k.not_yet_durable).sum::<u64>(),
    }))
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) async fn delivery(quick: bool) -> Result<serde_json::Value> {
    let here = std::env::current_exe()?;
    let bins = Bins { agent: here.with_file_name("citysense-agent"), collector: here.with_file_name("citysense-collector") };
    for b in [&bins.agent, &bins.collector] {
        if !b.exists() {
            bail!("{} is missing: cargo build --release -p citysense-collector -p citysense-bench, then cargo build --release -p citysense-agent", b.display());
        }
    }
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let secs = if quick { 10 } else { 30 };
    let backlog_target: u64 = if quick { 200_000 } else { 1_000_000 };

    let mosquitto = support::Mosquitto::open(d)?;
    let collector_proc = collector(d, "main", &mosquitto.url())?;
    let low = latency(&bins, d, &mosquitto, "low", 10, 18, secs).await.context("latency at 180/s")?;
    eprintln!("latency at 180/s: {low}");
    let high = latency(&bins, d, &mosquitto, "high", 100, 100, secs).await.context("latency at 10k/s")?;
    eprintln!("latency at 10k/s: {high}");
    let killed = kills(&bins, d, &mosquitto, if quick { 10 } else { 30 }).await.context("kill -9 after a poll")?;
    eprintln!("kill -9 after a poll: {killed}");
    drop(collector_proc);
    drop(mosquitto);

    // Idle: 200 points, polled at start and then hourly.
    let (_idle_bank, idle_device) = StampedBank::serve().await?;
    let idle_status = free_port();
    let idle = agent(&bins, d, "idle", "mqtt://127.0.0.1:9", idle_status, Polling { device: idle_device, devices: 10, points: 20, every: "1h" })?;
    status_when(idle_status, Duration::from_secs(30), "the idle agent's first polls", |s| s["durable_seq"].as_u64() >= Some(200)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, idle_rss, idle_peak) = proc_usage(idle.0.id())?;
    drop(idle);
    eprintln!("idle, 200 points: RSS {idle_rss:.1} MB");

    // Backlog: the broker's port is chosen but nothing listens on it yet.
    let (bank, device) = StampedBank::serve().await?;
    let broker_port = free_port();
    let status = free_port();
    let fill_start = Instant::now();
    let ag = agent(&bins, d, "backlog", &format!("mqtt://127.0.0.1:{broker_port}"), status, Polling { device, devices: 1, points: 4000, every: "20ms" })?;
    status_when(status, Duration::from_secs(600), "the backlog to build", |s| s["buffer_depth"].as_u64() >= Some(backlog_target)).await?;
    bank.offline.store(true, Relaxed);
    let fill_s = fill_start.elapsed().as_secs_f64();
    // Whatever was polled before the device went offline is durable.
    let settled = status_when(status, Duration::from_secs(30), "the last polls to be durable", |s| s["durable_seq"].as_u64() == s["next_seq"].as_u64().map(|n| n - 1)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, backlog_rss, backlog_peak) = proc_usage(ag.0.id())?;
    let backlog = settled["buffer_depth"].as_u64().unwrap_or(0);
    eprintln!("backlog {backlog}: RSS {backlog_rss:.1} MB, peak {backlog_peak:.1} MB");

    // Drain: the broker and the collector come back.
    let broker_dir = tempfile::tempdir()?;
    let conf = broker_dir.path().join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 16777216\nmax_queued_messages 100000\n"))?;
    let broker_up = Instant::now();
    let _mosq = Child(Command::new("mosquitto").arg("-c").arg(&conf).stderr(Stdio::null()).spawn().context("mosquitto is not installed")?);
    let url = format!("mqtt://127.0.0.1:{broker_port}");
    while std::net::TcpStream::connect(("127.0.0.1", broker_port)).is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _drain_collector = collector(d, "drain", &url)?;
    let first = status_when(status, Duration::from_secs(60), "the first ack", |s| s["acked_seq"].as_u64() > Some(0)).await?;
    let first_ack = Instant::now();
    let mut peak_during_drain = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = agent_status(status).await?;
        peak_during_drain = peak_during_drain.max(proc_usage(ag.0.id())?.1);
        if s["buffer_depth"] == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the backlog did not drain in 600 s: {s}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = first_ack.elapsed().as_secs_f64();
    let from_broker = broker_up.elapsed().as_secs_f64();
    let after = first["acked_seq"].as_u64().unwrap_or(0);
    drop(ag);

    Ok(json!({
        "scenario": "delivery",
        "settings": format!("{}; agent, collector, Mosquitto each in its own process, unpinned", shipped_defaults()),
        "uplink_settings_besides_defaults": uplink_extra(),
        "latency_180_per_s": low,
        "latency_10k_per_s": high,
        "kill_after_poll": killed,
        "idle_200_points": {"rss_mb": r1(idle_rss), "rss_peak_mb": r1(idle_peak)},
        "backlog": {"readings": backlog, "fill_s": r1(fill_s), "rss_mb": r1(backlog_rss), "rss_peak_mb": r1(backlog_peak)},
        "drain": {"readings": backlog - after, "seconds_from_first_ack": r3(drained), "readings_per_s": ((backlog - after) as f64 / drained).round(),
                  "seconds_from_broker_start": r3(from_broker), "rss_peak_mb_during_drain": r1(peak_during_drain)},
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_settings_named_are_the_agents_own_defaults() {
        let s = super::shipped_defaults();
        assert!(s.starts_with("shipped defaults (batch_max "), "{s}");
    }
}
