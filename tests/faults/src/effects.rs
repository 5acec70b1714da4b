//! What users see of the readings, counted where they see it. The store keys
//! a point by (series, time), so a reading stored twice overwrites itself and
//! cannot show there; its other effects can: a second message on the live
//! MQTT feed or on SSE, `citysense_readings_stored_total` above the distinct
//! readings, a second alert or webhook for one threshold crossing, a second
//! sample in VictoriaMetrics (started without `-dedup.minScrapeInterval`, it
//! keeps identical samples).
//!
//! The alert ladder: one `threshold` rule per rung, `counter > STEP * k`.
//! The simulator's counters only grow, so each rung is crossed once per
//! sensor whose counter passes it, and the crossings are spread over the
//! whole run (kills and restarts included). Each must raise exactly one
//! alert and one webhook change (distinct `Idempotency-Key`s; a key sent
//! again is the outbox's documented at-least-once, counted apart).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::harness::{get, wait_for};

/// Counts between the ladder's rungs, and how many rungs.
pub const STEP: u64 = 5;
pub const RUNGS: u64 = 100;

pub fn rule_id(threshold: u64) -> String {
    format!("counter-above-{threshold}")
}

/// The ladder as collector config.
pub fn rules_toml() -> String {
    (1..=RUNGS)
        .map(|k| {
            let t = k * STEP;
            format!("[[rule]]\nid = \"{}\"\nkind = \"threshold\"\nmetric = \"counter\"\nop = \">\"\nvalue = {t}\nseverity = \"warning\"\n", rule_id(t))
        })
        .collect()
}

/// The (rule, sensor) pairs the ladder must alert on, given the counter
/// values stored per sensor: every rung below the sensor's highest value.
pub fn crossings(stored: &HashMap<String, HashSet<u64>>) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    for (sensor, values) in stored {
        let max = values.iter().copied().max().unwrap_or(0);
        for k in 1..=RUNGS {
            if max > k * STEP {
                out.insert((rule_id(k * STEP), sensor.clone()));
            }
        }
    }
    out
}

/// Per scenario: duplicates of each effect (must be 0), and what is missing
/// where the harness can say exactly what should be there (None: not checked
/// in this scenario, the reason in the report's notes).
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub feed_dup: u64,
    pub feed_missing: Option<u64>,
    /// Heard on the feed but not in the store: a reading published before it was durable.
    pub feed_extra: u64,
    pub sse_dup: u64,
    pub sse_missing: Option<u64>,
    pub sse_extra: u64,
    /// |citysense_readings_stored_total − distinct readings stored|.
    pub stored_total_mismatch: Option<u64>,
    /// Ladder crossings, and alerts for them.
    pub crossings: u64,
    pub alert_dup: u64,
    pub alert_missing: u64,
    /// Alerts for a crossing the stored values do not show.
    pub alert_extra: u64,
    /// Distinct webhook keys for `fired` changes of the ladder.
    pub webhook_keys: u64,
    /// More than one key for one crossing: a second change announced.
    pub webhook_dup: u64,
    pub webhook_missing: u64,
    /// Deliveries without an `Idempotency-Key`.
    pub webhook_unkeyed: u64,
    /// The same key delivered again (at-least-once; a receiver drops it by its key).
    pub webhook_redelivered: u64,
    pub vm_dup: Option<u64>,
    pub vm_missing: Option<u64>,
}

impl Effects {
    pub fn clean(&self) -> bool {
        let zero = |o: Option<u64>| o.unwrap_or(0) == 0;
        self.feed_dup == 0
            && zero(self.feed_missing)
            && self.feed_extra == 0
            && self.sse_dup == 0
            && zero(self.sse_missing)
            && self.sse_extra == 0
            && zero(self.stored_total_mismatch)
            && self.alert_dup == 0
            && self.alert_missing == 0
            && self.alert_extra == 0
            && self.webhook_dup == 0
            && self.webhook_missing == 0
            && self.webhook_unkeyed == 0
            && zero(self.vm_dup)
            && zero(self.vm_missing)
    }
}

impl fmt::Display for Effects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        write!(f, "feed_dup={} feed_missing={} sse_dup={} sse_missing={}", self.feed_dup, o(self.feed_missing), self.sse_dup, o(self.sse_missing))?;
        write!(f, " stored_total_mismatch={}", o(self.stored_total_mismatch))?;
        write!(f, " crossings={} alert_dup={} alert_missing={}", self.crossings, self.alert_dup, self.alert_missing)?;
        write!(
            f,
            " webhook_keys={} webhook_dup={} webhook_missing={} webhook_redelivered={}",
            self.webhook_keys, self.webhook_dup, self.webhook_missing, self.webhook_redelivered
        )?;
        write!(f, " vm_dup={} vm_missing={}", o(self.vm_dup), o(self.vm_missing))?;
        for (name, n) in [("feed_extra", self.feed_extra), ("sse_extra", self.sse_extra), ("alert_extra", self.alert_extra), ("webhook_unkeyed", self.webhook_unkeyed)] {
            if n > 0 {
                write!(f, " {name}={n}")?;
            }
        }
        Ok(())
    }
}

/// (sensor, counter value) → times heard.
pub type Heard = Arc<Mutex<HashMap<(String, u64), u32>>>;

/// Duplicates, and (heard ∖ stored, stored ∖ heard) counts.
pub fn compare(heard: &HashMap<(String, u64), u32>, stored: &HashMap<String, HashSet<u64>>) -> (u64, u64, u64) {
    let dup = heard.values().map(|c| (c - 1) as u64).sum();
    let extra = heard.keys().filter(|(s, v)| !stored.get(s).is_some_and(|vs| vs.contains(v))).count() as u64;
    let missing = stored.iter().flat_map(|(s, vs)| vs.iter().map(move |v| (s.clone(), *v))).filter(|k| !heard.contains_key(k)).count() as u64;
    (dup, extra, missing)
}

/// The collector's SSE stream (`/api/v1/stream?types=reading`), read as a
/// dashboard reads it and opened again whenever the collector comes back.
/// Counts each counter reading it is sent. A plain blocking reader: the
/// fault harness has no async runtime (support's `SseClient` is tokio's).
pub struct Sse {
    pub heard: Heard,
    /// Events the collector told this client it skipped (`lagged`).
    pub lagged: Arc<AtomicU64>,
    connections: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<TcpStream>>>,
}

impl Sse {
    /// Opens the stream and returns once the collector has subscribed it to the bus.
    pub fn watch(http: u16) -> Result<Sse> {
        let sse = Sse { heard: Default::default(), lagged: Default::default(), connections: Default::default(), stop: Default::default(), current: Default::default() };
        let (heard, lagged, connections, stop, current) = (sse.heard.clone(), sse.lagged.clone(), sse.connections.clone(), sse.stop.clone(), sse.current.clone());
        std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                let _ = read_stream(http, &heard, &lagged, &connections, &current);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        wait_for("the SSE stream", Duration::from_secs(30), || (sse.connections() > 0).then_some(()))?;
        Ok(sse)
    }

    /// Streams opened so far (one per collector it heard from).
    pub fn connections(&self) -> u32 {
        self.connections.load(SeqCst)
    }

    pub fn count(&self) -> u64 {
        self.heard.lock().unwrap().values().map(|c| *c as u64).sum()
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(s) = self.current.lock().unwrap().take() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn read_stream(http: u16, heard: &Heard, lagged: &AtomicU64, connections: &AtomicU32, current: &Mutex<Option<TcpStream>>) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", http))?;
    write!(s, "GET /api/v1/stream?types=reading HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")?;
    *current.lock().unwrap() = Some(s.try_clone()?);
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.contains(" 200") {
        return Err(std::io::Error::other(format!("SSE answered {line}")));
    }
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            break;
        }
    }
    // The handler subscribes to the bus before it answers: from here on
    // every reading stored is sent on this stream.
    connections.fetch_add(1, SeqCst);
    let mut event = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end();
        if let Some(e) = l.strip_prefix("event:") {
            event = e.trim().to_string();
        } else if let Some(d) = l.strip_prefix("data:") {
            let v: Value = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
            match event.as_str() {
                "reading" if v["metric"] == "counter" => {
                    let sensor = v["sensor"].as_str().unwrap_or_default().to_string();
                    *heard.lock().unwrap().entry((sensor, v["value"].as_f64().unwrap_or(-1.0) as u64)).or_default() += 1;
                }
                "lagged" => {
                    lagged.fetch_add(v["missed"].as_u64().unwrap_or(0), SeqCst);
                }
                _ => {}
            }
        }
    }
}

/// One POST the webhook receiver took.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: Option<String>,
    pub body: Value,
}

/// A webhook receiver on 127.0.0.1, port 0: answers 200 to every POST and
/// keeps what it was sent. Lives as long as the scenario, across restarts
/// of the collector.
pub struct Hooks {
    pub port: u16,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Hooks {
    pub fn start() -> Result<Hooks> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let got: Arc<Mutex<Vec<Delivery>>> = Default::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let g = g.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &g);
                });
            }
        });
        Ok(Hooks { port, got })
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

/// HTTP/1.1 requests on one connection (the collector's client keeps it alive).
fn serve(conn: TcpStream, got: &Mutex<Vec<Delivery>>) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut len, mut key) = (0usize, None);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = value.trim().parse().unwrap_or(0),
                    "idempotency-key" => key = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        // Counted before the answer: a collector killed before it reads the
        // 200 sends this again, which the receiver sees as the same key.
        got.lock().unwrap().push(Delivery { key, body: serde_json::from_slice(&body).unwrap_or(Value::Null) });
        out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")?;
    }
}

/// The ladder's alerts against its crossings: (alerts, dup, missing, extra).
pub fn count_alerts(alerts: &Value, expected: &HashSet<(String, String)>) -> Result<(u64, u64, u64, u64)> {
    let mut per: HashMap<(String, String), u64> = HashMap::new();
    for a in alerts.as_array().ok_or_else(|| anyhow!("/api/v1/alerts is not a list: {alerts}"))? {
        let rule = a["rule"].as_str().unwrap_or_default();
        if rule.starts_with("counter-above-") {
            *per.entry((rule.to_string(), a["sensor"].as_str().unwrap_or_default().to_string())).or_default() += 1;
        }
    }
    let total = per.values().sum();
    let dup = per.values().map(|c| c - 1).sum();
    let missing = expected.iter().filter(|k| !per.contains_key(*k)).count() as u64;
    let extra = per.keys().filter(|k| !expected.contains(*k)).count() as u64;
    Ok((total, dup, missing, extra))
}

/// The ladder's `fired` webhook deliveries against its crossings:
/// (distinct keys, dup, missing, unkeyed, redelivered).
pub fn count_webhooks(deliveries: &[Delivery], expected: &HashSet<(String, String)>) -> (u64, u64, u64, u64, u64) {
    let mut keys: HashMap<(String, String), HashSet<String>> = HashMap::new();
    let (mut unkeyed, mut fired) = (0u64, 0u64);
    for d in deliveries {
        let rule = d.body["rule"].as_str().unwrap_or_default();
        if !rule.starts_with("counter-above-") || d.body["event"] != "fired" {
            continue;
        }
        fired += 1;
        let Some(k) = &d.key else {
            unkeyed += 1;
            continue;
        };
        keys.entry((rule.to_string(), d.body["sensor"].as_str().unwrap_or_default().to_string())).or_default().insert(k.clone());
    }
    let distinct: u64 = keys.values().map(|k| k.len() as u64).sum();
    let dup = keys.values().map(|k| k.len() as u64 - 1).sum();
    let missing = expected.iter().filter(|k| !keys.contains_key(*k)).count() as u64;
    (distinct, dup, missing, unkeyed, (fired - unkeyed).saturating_sub(distinct))
}

/// Every `counter_value` sample VictoriaMetrics holds, per (sensor, value).
pub fn vm_counter_samples(port: u16) -> Result<HashMap<(String, u64), u32>> {
    get(port, "/internal/force_flush")?;
    let body = get(port, "/api/v1/export?match[]=counter_value")?;
    let mut out: HashMap<(String, u64), u32> = HashMap::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| anyhow!("VictoriaMetrics export line {line}: {e}"))?;
        let sensor = v["metric"]["sensor"].as_str().unwrap_or_default().to_string();
        for x in v["values"].as_array().into_iter().flatten() {
            *out.entry((sensor.clone(), x.as_f64().unwrap_or(-1.0) as u64)).or_default() += 1;
        }
    }
    Ok(out)
}

/// The sum of a labelled metric's lines whose name and labels start with `prefix`.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}
