//! Processes, ports, HTTP and the final accounting.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

pub use support::now_ms;

/// The binaries under test, found beside the running executable (target/<profile>/
/// or target/<profile>/deps/).
pub struct Bins {
    pub agent: PathBuf,
    pub collector: PathBuf,
    pub sim: PathBuf,
}

impl Bins {
    pub fn locate() -> Result<Bins> {
        let exe = std::env::current_exe()?;
        let mut dirs = vec![];
        if let Some(d) = exe.parent() {
            dirs.push(d.to_path_buf());
            if let Some(p) = d.parent() {
                dirs.push(p.to_path_buf());
            }
        }
        let find = |name: &str| -> Result<PathBuf> {
            dirs.iter()
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| anyhow!("{name} not found next to {}: build the workspace first (tests/faults/run does)", exe.display()))
        };
        Ok(Bins { agent: find("citysense-agent")?, collector: find("citysense-collector")?, sim: find("citysense-sim")? })
    }
}

/// A child process whose output goes to a log file; killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Result<Proc> {
        let log = File::create(log_dir.join(format!("{name}.log")))?;
        let child = cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc { name: name.to_string(), child: Some(child) })
    }

    /// SIGKILL: no flushing, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = c.try_wait()? {
                    if !status.success() {
                        bail!("{} exited with {status} on SIGTERM", self.name);
                    }
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    bail!("{} did not stop within 20 s of SIGTERM", self.name);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// SIGSTOP / SIGCONT: frozen, it sends nothing, and resumes where it was.
    pub fn pause(&mut self, on: bool) -> Result<()> {
        if let Some(c) = &self.child {
            Command::new("kill").arg(if on { "-STOP" } else { "-CONT" }).arg(c.id().to_string()).status()?;
        }
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port below Linux's ephemeral range: an agent that keeps
/// reconnecting to a stopped collector's port could otherwise take it.
pub fn free_port() -> u16 {
    support::port_below_ephemeral()
}

/// Polls `f` every 50 ms until it yields, or fails naming `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_for_port(port: u16, what: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
}

/// GET a JSON document over plain HTTP/1.0.
pub fn get_json(port: u16, path: &str) -> Result<Value> {
    let body = get(port, path)?;
    serde_json::from_str(&body).with_context(|| format!("GET {path}: {body}"))
}

pub fn get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").ok_or_else(|| anyhow!("GET {path}: no HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {head}: {body}");
    }
    Ok(body.to_string())
}

/// An unlabelled counter from Prometheus text.
pub fn metric(port: u16, name: &str) -> Result<f64> {
    let text = get(port, "/metrics")?;
    support::metric_in(&text, name).ok_or_else(|| anyhow!("{name} not in /metrics"))
}

/// One scenario's outcome, printed as `SCENARIO lost=N duplicated=M delivered=K`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    pub lost: u64,
    pub duplicated: u64,
    pub delivered: u64,
    /// Readings a kill of the agent lost inside the documented window (polled,
    /// fsync not returned), counted exactly per kill.
    pub in_kill_window: u64,
    /// Values the agent dropped under `when_full` and the collector counted as never received.
    pub dropped: u64,
    /// Modbus requests the agent abandoned (no answer within its timeout,
    /// retried or not): the simulator may have served each one a counter
    /// value nobody received, so that many missing values are excused.
    pub abandoned: u64,
    /// Free-form figures (drain rate, peak buffer depth...).
    pub notes: Vec<String>,
    /// The power-cut scenarios' own tally.
    pub cuts: Option<Cuts>,
    /// What users see: feeds, the stored count, alerts, webhooks, VictoriaMetrics.
    pub effects: crate::effects::Effects,
}

/// What power cuts did: each is a SIGKILL, the unsynced writes of the crash
/// disk dropped, a remount and a restart.
#[derive(Debug, Clone, Default)]
pub struct Cuts {
    pub cuts: u64,
    /// Readings a cut lost beyond the documented window (a poll whose fsync
    /// had returned), or missing from the store for any other reason.
    pub lost_beyond_window: u64,
    /// Readings the collector acknowledged (so the agent deleted them) that a
    /// cut of the collector's disk then lost.
    pub acked_then_lost: u64,
    /// Restarts where the agent or collector did not open its store by itself.
    pub reopen_failures: u64,
    /// Per cut of the agent's disk: readings lost inside the window (polled,
    /// fsync not returned), each cut's count in order.
    pub excused: Vec<u64>,
}

impl Cuts {
    pub fn clean(&self) -> bool {
        self.lost_beyond_window == 0 && self.acked_then_lost == 0 && self.reopen_failures == 0
    }

    pub fn add(&mut self, other: &Cuts) {
        self.cuts += other.cuts;
        self.lost_beyond_window += other.lost_beyond_window;
        self.acked_then_lost += other.acked_then_lost;
        self.reopen_failures += other.reopen_failures;
        self.excused.extend(&other.excused);
    }
}

impl fmt::Display for Cuts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cuts={} lost_beyond_window={} acked_then_lost={} reopen_failures={}", self.cuts, self.lost_beyond_window, self.acked_then_lost, self.reopen_failures)
    }
}

impl Report {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.delivered > 0 && self.cuts.as_ref().is_none_or(Cuts::clean) && self.effects.clean()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lost={} duplicated={} delivered={}", self.scenario, self.lost, self.duplicated, self.delivered)?;
        write!(f, " in_kill_window={} dropped={} abandoned={}", self.in_kill_window, self.dropped, self.abandoned)?;
        write!(f, " {}", self.effects)?;
        if let Some(c) = &self.cuts {
            write!(f, " {c}")?;
        }
        for n in &self.notes {
            write!(f, " {n}")?;
        }
        Ok(())
    }
}

/// Counter values the simulator served, per sensor, with when.
pub fn served(log: &Path) -> Result<HashMap<String, Vec<(u64, i64)>>> {
    let text = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut out: HashMap<String, Vec<(u64, i64)>> = HashMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(s), Some(v), Some(t)) = (it.next(), it.next(), it.next()) else { continue };
        out.entry(s.to_string()).or_default().push((v.parse()?, t.parse()?));
    }
    Ok(out)
}

/// Compares what was served with what the collector stored. A value missing
/// is lost, unless the agent reported it dropped (`dropped_reported`, which
/// must then match exactly) or it can be one of the `abandoned` requests'
/// (each request reads the counter once, so it can have served at most one
/// counter value). The scenarios that kill the agent excuse exactly the
/// readings a kill lost inside the documented window themselves (`powercut`).
pub fn account(scenario: &str, http: u16, log: &Path, dropped_reported: u64, abandoned: u64) -> Result<Report> {
    let served = served(log)?;
    let mut r = Report { scenario: scenario.to_string(), dropped: dropped_reported, abandoned, ..Default::default() };
    let mut missing = 0u64;
    for (sensor, values) in &served {
        let doc = get_json(http, &format!("/api/v1/series?sensor={sensor}&metric=counter&from=0"))?;
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for p in doc["points"].as_array().ok_or_else(|| anyhow!("no points for {sensor}"))? {
            *counts.entry(p["value"].as_f64().unwrap_or(-1.0) as u64).or_default() += 1;
        }
        r.delivered += counts.len() as u64;
        r.duplicated += counts.values().map(|&c| (c - 1) as u64).sum::<u64>();
        missing += values.iter().filter(|(v, _)| !counts.contains_key(v)).count() as u64;
    }
    // Readings the agent dropped when its buffer was full are not lost in
    // silence: they must be exactly the ones it reported. Beyond them, at
    // most one value per abandoned request.
    r.lost = if missing < dropped_reported { dropped_reported - missing } else { (missing - dropped_reported).saturating_sub(abandoned) };
    Ok(r)
}

/// A subscriber to the live MQTT feed's counter topics, as a dashboard or a
/// city system would be: QoS 0, reconnecting (and subscribing again) when the
/// broker comes back. Counts each (sensor, value) it hears.
pub struct Feed {
    pub heard: crate::effects::Heard,
    subscribed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections the broker accepted: more than one, and messages in between were not heard.
    connections: std::sync::Arc<std::sync::atomic::AtomicU32>,
    client: rumqttc::Client,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Feed {
    pub fn watch(port: u16) -> Result<Feed> {
        use rumqttc::{Event, MqttOptions, Packet, QoS};
        use std::sync::atomic::Ordering;
        const TOPIC: &str = "citysense/v1/live/+/counter";
        let mut opts = MqttOptions::new(format!("faults-feed-{}", now_ms()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = rumqttc::Client::new(opts, 1000);
        let feed = Feed { heard: Default::default(), subscribed: Default::default(), connections: Default::default(), client: client.clone(), stop: Default::default() };
        let (heard, subscribed, connections, stop) = (feed.heard.clone(), feed.subscribed.clone(), feed.connections.clone(), feed.stop.clone());
        std::thread::spawn(move || {
            for event in conn.iter() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match event {
                    // A clean session forgets the subscription with the broker.
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connections.fetch_add(1, Ordering::SeqCst);
                        let _ = client.try_subscribe(TOPIC, QoS::AtMostOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => subscribed.store(true, Ordering::SeqCst),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let sensor = p.topic.trim_start_matches("citysense/v1/live/").split('/').next().unwrap_or_default().to_string();
                        let value = serde_json::from_slice::<Value>(&p.payload).ok().and_then(|v| v["value"].as_f64()).unwrap_or(-1.0) as u64;
                        *heard.lock().unwrap().entry((sensor, value)).or_default() += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                    _ => {}
                }
            }
        });
        wait_for("the live feed subscription", Duration::from_secs(30), || feed.subscribed.load(Ordering::SeqCst).then_some(()))?;
        Ok(feed)
    }

    pub fn connections(&self) -> u32 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Messages heard so far.
    pub fn count(&self) -> u64 {
        self.heard.lock().unwrap().values().map(|c| *c as u64).sum()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}
