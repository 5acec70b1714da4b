//! The agent's local status endpoint (loopback by default): `GET /status` as
//! JSON for `citysense-agent status`, `GET /metrics` for Prometheus. It runs
//! apart from the pipeline so that a stuck disk or a dead uplink never stops
//! a technician from seeing why.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::AgentClock;
use crate::outbox::Outbox;
use crate::stats::{DeviceState, DeviceStats};
use crate::uplink::LinkState;
use shared::wire::{ClockState, ConfigHealth, DeviceHealth, RefusedReload};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub gateway: String,
    /// The broker the uplink is on, or trying.
    pub broker: String,
    /// Every broker of `uplink.broker`, comma-separated, when there are several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    pub connected: bool,
    pub uplink_error: Option<String>,
    pub buffer_depth: u64,
    pub buffer_bytes: u64,
    pub buffer_max_bytes: u64,
    pub oldest_age_ms: i64,
    pub acked_seq: u64,
    /// The outbox's sequence space (see the batch format in docs/mqtt.md).
    #[serde(default)]
    pub epoch: u64,
    /// Acks ignored: for another outbox epoch, or above anything sent.
    #[serde(default)]
    pub acks_ignored: u64,
    pub next_seq: u64,
    pub durable_seq: u64,
    pub dropped_total: u64,
    /// Modbus requests abandoned since start (no answer within the device's
    /// timeout, whether or not a retry then succeeded), all devices.
    #[serde(default)]
    pub abandoned_requests: u64,
    pub full: bool,
    /// The outbox's last storage error, if writing is failing right now.
    pub storage_error: Option<String>,
    pub devices: Vec<DeviceStatus>,
    /// The running config: when it was loaded, and the last reload's outcome.
    #[serde(default)]
    pub config: ConfigRecord,
    /// The agent's clock, whether it can be right, and its offset from the
    /// collector's (absent from agents that predate it).
    #[serde(default)]
    pub clock: Option<ClockState>,
}

/// A device's counters (as in `health/`) and its UP/DOWN state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceStatus {
    #[serde(flatten)]
    pub health: DeviceHealth,
    #[serde(flatten)]
    pub state: DeviceState,
    /// Requests abandoned for want of an answer within the timeout, retried
    /// or not (a timeout the retry recovered is not in `errors`).
    #[serde(default)]
    pub abandoned_requests: u64,
}

/// What status says about the config: the running one's load time and the
/// last SIGHUP's outcome (refused with its reasons, the running config kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub path: Option<String>,
    pub loaded_ms: i64,
    pub last_reload: Option<ReloadOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    pub at_ms: i64,
    pub accepted: bool,
    /// Why it was refused, one `FILE:LINE: path: message` per line.
    pub problems: Vec<String>,
}

impl ConfigRecord {
    /// As `health/` carries it: the load time and a refused last reload, bounded.
    pub fn health(&self) -> ConfigHealth {
        let refused = self.last_reload.as_ref().filter(|l| !l.accepted);
        ConfigHealth { loaded_ms: self.loaded_ms, reload_refused: refused.map(|l| RefusedReload::new(l.at_ms, l.problems.clone())) }
    }
}

pub type SharedConfigRecord = Arc<std::sync::Mutex<ConfigRecord>>;

pub struct StatusSource {
    pub gateway: String,
    /// `uplink.broker` as written, in order.
    pub brokers: Vec<String>,
    /// None while the data directory cannot be opened.
    pub outbox: Option<Arc<dyn Outbox>>,
    pub devices: Vec<Arc<DeviceStats>>,
    pub link: watch::Receiver<LinkState>,
    pub storage_error: Arc<std::sync::Mutex<Option<String>>>,
    pub config: SharedConfigRecord,
    pub clock: Arc<AgentClock>,
}

impl StatusSource {
    pub fn report(&self) -> StatusReport {
        let s = self.outbox.as_ref().map(|o| o.stats()).unwrap_or_default();
        let link = self.link.borrow().clone();
        let clock = self.clock.state();
        let now = clock.now_ms;
        let devices: Vec<DeviceStatus> = self.devices.iter().map(|d| DeviceStatus { health: d.snapshot(), state: d.state(), abandoned_requests: d.abandoned_requests() }).collect();
        StatusReport {
            gateway: self.gateway.clone(),
            broker: link.broker.clone().or_else(|| self.brokers.first().cloned()).unwrap_or_default(),
            brokers: (self.brokers.len() > 1).then(|| self.brokers.join(", ")),
            connected: link.connected,
            uplink_error: link.last_error,
            buffer_depth: s.depth,
            buffer_bytes: s.bytes,
            buffer_max_bytes: s.max_bytes,
            oldest_age_ms: s.oldest_ts_ms.map(|t| (now - t).max(0)).unwrap_or(0),
            acked_seq: s.acked,
            epoch: s.epoch,
            acks_ignored: link.acks_ignored,
            next_seq: s.next_seq,
            durable_seq: s.durable,
            dropped_total: s.dropped_total,
            abandoned_requests: devices.iter().map(|d| d.abandoned_requests).sum(),
            full: s.full,
            storage_error: self.storage_error.lock().unwrap().clone(),
            devices,
            config: self.config.lock().unwrap().clone(),
            clock: Some(clock),
        }
    }

    fn metrics(&self) -> String {
        let r = self.report();
        let mut out = String::new();
        let g = &r.gateway;
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{gateway=\"{g}\"}} {v}");
        };
        gauge("citysense_agent_uplink_connected", "1 when the uplink is connected.", f64::from(u8::from(r.connected)));
        gauge("citysense_agent_buffer_depth", "Readings in the outbox.", r.buffer_depth as f64);
        gauge("citysense_agent_buffer_bytes", "Bytes in the outbox.", r.buffer_bytes as f64);
        gauge("citysense_agent_buffer_oldest_age_seconds", "Age of the oldest buffered reading.", r.oldest_age_ms as f64 / 1000.0);
        gauge("citysense_agent_acked_seq", "Highest seq the collector acknowledged.", r.acked_seq as f64);
        gauge("citysense_agent_readings_dropped_total", "Readings discarded by the buffer.when_full policy.", r.dropped_total as f64);
        gauge("citysense_agent_acks_ignored_total", "Acks ignored: for another outbox epoch, above anything sent, or badly signed.", r.acks_ignored as f64);
        if let Some(c) = &r.clock {
            gauge("citysense_agent_clock_synced", "0 while the clock reads a time before this agent was built (never set: RTC reset, no NTP yet).", f64::from(u8::from(c.synced)));
            if let Some(o) = c.offset_ms {
                gauge("citysense_agent_clock_offset_seconds", "The collector's clock minus this agent's, from the last ack.", o as f64 / 1000.0);
            }
        }
        let _ = writeln!(out, "# HELP citysense_agent_device_errors_total Failed polls per device.\n# TYPE citysense_agent_device_errors_total counter");
        for d in &r.devices {
            let _ = writeln!(out, "citysense_agent_device_errors_total{{gateway=\"{g}\",sensor=\"{}\"}} {}", d.health.sensor, d.health.errors);
        }
        let _ =
            writeln!(out, "# HELP citysense_agent_device_up 1 while the device answers (an MQTT source: while connected), 0 when DOWN.\n# TYPE citysense_agent_device_up gauge");
        for d in r.devices.iter().filter(|d| d.state.state != "unknown") {
            let _ = writeln!(out, "citysense_agent_device_up{{gateway=\"{g}\",sensor=\"{}\"}} {}", d.health.sensor, u8::from(d.state.state == "up"));
        }
        let refused = r.config.last_reload.as_ref().is_some_and(|l| !l.accepted);
        let _ = writeln!(
            out,
            "# HELP citysense_agent_config_reload_refused 1 when the last SIGHUP reload was refused (the running config kept).\n# TYPE citysense_agent_config_reload_refused gauge\ncitysense_agent_config_reload_refused{{gateway=\"{g}\"}} {}",
            u8::from(refused)
        );
        let _ = writeln!(
            out,
            "# HELP citysense_agent_modbus_abandoned_total Modbus requests abandoned per device: no answer within the timeout, whether or not a retry then succeeded.\n# TYPE citysense_agent_modbus_abandoned_total counter"
        );
        for d in &r.devices {
            let _ = writeln!(out, "citysense_agent_modbus_abandoned_total{{gateway=\"{g}\",sensor=\"{}\"}} {}", d.health.sensor, d.abandoned_requests);
        }
        let _ = writeln!(out, "# HELP citysense_agent_device_polls_total Successful polls per device.\n# TYPE citysense_agent_device_polls_total counter");
        for d in &r.devices {
            let _ = writeln!(out, "citysense_agent_device_polls_total{{gateway=\"{g}\",sensor=\"{}\"}} {}", d.health.sensor, d.health.polls);
        }
        out
    }
}

fn respond(source: &StatusSource, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/status") => (StatusCode::OK, "application/json", serde_json::to_string(&source.report()).expect("report serializes")),
        ("GET", "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", source.metrics()),
        _ => (StatusCode::NOT_FOUND, "application/json", r#"{"error":"no such route; use /status or /metrics"}"#.to_string()),
    };
    Response::builder().status(status).header("content-type", ctype).body(Full::new(Bytes::from(body))).expect("valid response")
}

/// Binds `listen` and serves until `shutdown`; returns the bound address.
pub async fn serve(listen: SocketAddr, source: StatusSource, mut shutdown: watch::Receiver<bool>) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await.map_err(|e| std::io::Error::new(e.kind(), format!("status.listen {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let source = Arc::new(source);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                _ = shutdown.changed() => return,
            };
            let source = source.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let source = source.clone();
                    async move { Ok::<_, Infallible>(respond(&source, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok((addr, task))
}

/// Why `citysense-agent status` got no report; each names the address asked.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer from the agent's status endpoint at {addr}")]
    NoAnswer { addr: String },
    #[error("cannot reach the agent's status endpoint at {addr}: {err} (is citysense-agent running, and is [status] listen the same?)")]
    Unreachable { addr: String, err: std::io::Error },
    #[error("talking to the agent's status endpoint at {addr}: {err}")]
    Io { addr: String, err: std::io::Error },
    #[error("{addr} took the connection but sent no answer within 5 s: not a citysense agent's status endpoint; check the port against [status] listen")]
    Silent { addr: String },
    #[error("{addr} answered, but it is not a citysense agent's status endpoint ({what}); check the port against [status] listen")]
    NotAnAgent { addr: String, what: String },
}

/// `citysense-agent status`: fetches `/status` from a running agent.
pub async fn fetch(addr: &str) -> Result<StatusReport, FetchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = || addr.to_string();
    let mut s = tokio::time::timeout(std::time::Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| FetchError::NoAnswer { addr: a() })?
        .map_err(|err| FetchError::Unreachable { addr: a(), err })?;
    // A port that accepts and then says nothing (a Modbus device waiting for
    // the rest of what it takes for a frame, a stuck service) must not hang
    // the technician's terminal: the agent answers in milliseconds.
    let exchange = async {
        s.write_all(format!("GET /status HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map(|_| buf)
    };
    let buf =
        tokio::time::timeout(std::time::Duration::from_secs(5), exchange).await.map_err(|_| FetchError::Silent { addr: a() })?.map_err(|err| FetchError::Io { addr: a(), err })?;
    let text = String::from_utf8_lossy(&buf);
    let not_agent = |what: String| FetchError::NotAnAgent { addr: a(), what };
    let Some((head, body)) = text.split_once("\r\n\r\n").filter(|(h, _)| h.starts_with("HTTP/")) else {
        let first = text.lines().next().unwrap_or("").chars().take(60).collect::<String>();
        return Err(not_agent(if first.is_empty() { "it closed without an answer".into() } else { format!("not HTTP: `{first}`") }));
    };
    let status_line = head.lines().next().unwrap_or("");
    let value: serde_json::Value = serde_json::from_str(body).map_err(|_| not_agent(format!("`{status_line}` without a status report")))?;
    if value.get("gateway").is_none() || value.get("buffer_depth").is_none() {
        return Err(not_agent(format!("`{status_line}` with JSON that is no status report")));
    }
    serde_json::from_value(value).map_err(|e| not_agent(format!("a status report this version cannot read: {e}")))
}

/// `clock: TIME, synced, 0.3 s behind the collector` (or what is wrong with it).
fn clock_line(c: &ClockState) -> String {
    let at = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(c.now_ms.max(0) as u64)).map(humantime::format_rfc3339_seconds);
    let at = at.map(|t| t.to_string()).unwrap_or_else(|| format!("{} ms", c.now_ms));
    let synced = if c.synced {
        "synced".to_string()
    } else {
        format!(
            "NOT SYNCED (before this agent was built, {})",
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(crate::clock::BUILT_MS as u64))
        )
    };
    let offset = match c.offset_ms {
        // The collector's time minus ours: positive when this clock is behind.
        Some(o) => format!(", {} {} the collector", span(o.saturating_abs()), if o > 0 { "behind" } else { "ahead of" }),
        None => ", offset unknown until the collector acknowledges a batch".to_string(),
    };
    format!("clock: {at}, {synced}{offset}")
}

/// A span of time at the scale it is read at: ms to years.
fn span(ms: i64) -> String {
    const YEAR: f64 = 365.25 * 86_400_000.0;
    if ms < 7_200_000 {
        age(ms)
    } else if ms < 172_800_000 {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    } else if ms < 63_115_200_000 {
        format!("{:.1} d", ms as f64 / 86_400_000.0)
    } else {
        format!("{:.1} y", ms as f64 / YEAR)
    }
}

fn age(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{:.1} min", ms as f64 / 60_000.0)
    }
}

/// The human-readable form `citysense-agent status` prints.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    // Ages are measured on the agent's clock, which stamped what they age from.
    let now = r.clock.map_or_else(shared::now_ms, |c| c.now_ms);
    let _ = writeln!(
        out,
        "gateway {}: uplink {} {}{}{}",
        r.gateway,
        if r.connected { "connected to" } else { "DISCONNECTED from" },
        r.broker,
        r.brokers.as_ref().map(|all| format!(" (failover list: {all})")).unwrap_or_default(),
        r.uplink_error.as_ref().filter(|_| !r.connected).map(|e| format!(" (last error: {e})")).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "buffer: {} readings, {} of {} bytes{}, oldest {}, acked seq {}, next seq {}, dropped {}",
        r.buffer_depth,
        r.buffer_bytes,
        r.buffer_max_bytes,
        if r.full { " (FULL)" } else { "" },
        if r.buffer_depth == 0 { "-".to_string() } else { age(r.oldest_age_ms) },
        r.acked_seq,
        r.next_seq,
        r.dropped_total
    );
    if let Some(e) = &r.storage_error {
        let _ = writeln!(out, "storage: FAILING: {e}");
    }
    if let Some(c) = &r.clock {
        let _ = writeln!(out, "{}", clock_line(c));
    }
    if let Some(l) = &r.config.last_reload {
        if l.accepted {
            let _ = writeln!(out, "config: reloaded {} ago", age(now - l.at_ms));
        } else {
            let _ = writeln!(out, "config: reload REFUSED {} ago; still running the config loaded {} ago. The file on disk:", age(now - l.at_ms), age(now - r.config.loaded_ms));
            for p in &l.problems {
                let _ = writeln!(out, "  {p}");
            }
        }
    }
    for d in &r.devices {
        let h = &d.health;
        let since = d.state.since_ms.map(|t| format!(" since {} ago", age(now - t))).unwrap_or_default();
        let last = h.last_poll_ms.map(|t| format!("{} ago", age(now - t))).unwrap_or_else(|| "never".into());
        let abandoned = if d.abandoned_requests > 0 { format!(", {} requests abandoned (timed out)", d.abandoned_requests) } else { String::new() };
        let _ = write!(out, "{}: {}{since}, {} polls, {} errors{abandoned}, last good poll {last}", h.sensor, d.state.state.to_uppercase(), h.polls, h.errors);
        match (&d.state.error, &h.last_error) {
            (Some(e), _) => {
                let _ = write!(out, ", error: {e}");
            }
            // Kept as history once the device is UP again: said so, with its time.
            (None, Some(e)) => {
                let when = d.state.last_error_ms.map(|t| format!(" {} ago", age(now - t))).unwrap_or_default();
                let _ = write!(out, ", last error{when} (recovered since): {e}");
            }
            (None, None) => {}
        }
        out.push('\n');
    }
    out
}
