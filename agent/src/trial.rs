//! `citysense-agent test`: poll every device of a config once, listen to its
//! MQTT sources for a while, and print each reading as it would be sent with
//! the registers (or payload) it came from. The technician's "does my config
//! read the right values" at the cabinet; it never opens the outbox, so it is
//! safe beside a running agent.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};

use crate::config::{AgentConfig, MqttSource};
use crate::source::modbus::poller::{Link, Poller};
use crate::source::modbus::{Decoded, ModbusAddress, Table};
use crate::source::mqtt::{options, MessageMap};
use crate::stats::DeviceStats;
use shared::Quality;

/// What `test` found: the text to print and how many sources failed.
#[derive(Debug, Default)]
pub struct TrialReport {
    pub text: String,
    pub failed: usize,
}

/// One device's or source's block of the report.
struct Block {
    text: String,
    failed: bool,
}

/// Polls every Modbus device once (TCP devices at the same time, each serial
/// line one device after the other) and listens to every MQTT source for
/// `listen`; blocks come out in the config's order.
pub async fn run(config: &AgentConfig, listen: Duration) -> TrialReport {
    let mut pending: Vec<tokio::task::JoinHandle<Vec<Block>>> = Vec::new();
    let mut lines: std::collections::BTreeMap<String, Vec<Poller>> = Default::default();
    for d in &config.modbus {
        let poller = Poller::new(d, Arc::new(DeviceStats::new(&d.sensor)));
        match &poller.address {
            ModbusAddress::Rtu(s) => lines.entry(s.path.clone()).or_default().push(poller),
            ModbusAddress::Tcp(_) => pending.push(tokio::spawn(async move { vec![poll_device(&poller, &mut Link::new(poller.address.clone())).await] })),
        }
    }
    for (_, devices) in lines {
        pending.push(tokio::spawn(async move {
            let mut link = Link::new(devices[0].address.clone());
            let mut out = Vec::new();
            for d in &devices {
                out.push(poll_device(d, &mut link).await);
            }
            out
        }));
    }
    for (i, m) in config.mqtt.iter().enumerate() {
        let (m, gateway) = (m.clone(), config.gateway.clone());
        pending.push(tokio::spawn(async move { vec![listen_source(i, &gateway, &m, listen).await] }));
    }
    let mut report = TrialReport::default();
    for task in pending {
        for b in task.await.unwrap_or_else(|e| vec![Block { text: format!("internal error: {e}\n"), failed: true }]) {
            report.text.push_str(&b.text);
            report.failed += usize::from(b.failed);
        }
    }
    let total = config.modbus.len() + config.mqtt.len();
    let _ = writeln!(report.text, "{} of {total} device(s) and source(s) OK", total - report.failed);
    report
}

async fn poll_device(d: &Poller, link: &mut Link) -> Block {
    let started = Instant::now();
    let answers = d.read_all(link).await;
    let map = d.map();
    let mut rows = String::new();
    let mut errors = Vec::new();
    for (request, answer) in map.requests.iter().zip(answers) {
        match answer {
            Ok(words) => {
                for v in map.decode(request, &words) {
                    rows.push_str(&reading_row(d, &v));
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let head = format!("{} ({} unit {})", d.sensor, d.address, d.unit());
    let mut text = if errors.is_empty() {
        format!("{head}: OK, {} request(s) in {} ms\n", map.requests.len(), started.elapsed().as_millis())
    } else {
        format!("{head}: FAILED, {} of {} request(s) failed\n", errors.len(), map.requests.len())
    };
    for e in &errors {
        let _ = writeln!(text, "  error: {e}");
    }
    text.push_str(&rows);
    Block { text, failed: !errors.is_empty() }
}

/// `  metric = value unit  quality   table first..last = 0x.... 0x....`
fn reading_row(d: &Poller, v: &Decoded) -> String {
    let p = &d.map().points[v.point];
    let value = match p.unit.as_deref() {
        Some(u) => format!("{} {u}", v.value),
        None => v.value.to_string(),
    };
    let last = p.address as u32 + v.raw.len() as u32 - 1;
    let at = if last == p.address as u32 { format!("{} {}", p.table.name(), p.address) } else { format!("{} {}..{last}", p.table.name(), p.address) };
    let raw: Vec<String> = if p.table == Table::Coil || p.table == Table::Discrete {
        v.raw.iter().map(|w| if *w != 0 { "on".into() } else { "off".into() }).collect()
    } else {
        v.raw.iter().map(|w| format!("0x{w:04X}")).collect()
    };
    let bits = p.bits.map(|(a, b)| if a == b { format!(" bit {a}") } else { format!(" bits {a}..={b}") }).unwrap_or_default();
    let mut note = String::new();
    if let Some((lo, hi)) = p.range.filter(|_| v.quality == Quality::Uncertain) {
        note = format!("  (outside range [{lo}, {hi}]: check address, type and scale)");
    } else if !v.value.is_finite() {
        note = "  (not a number: not sent, counted as an error)".into();
    }
    format!("  {} {:<16} = {:<18} {:<9}  {at}{bits} = {}{note}\n", d.sensor, p.metric, value, v.quality.as_str(), raw.join(" "))
}

/// `2026-11-22T06:03:05.250Z`; the number itself before 1970 or after 9999,
/// which humantime cannot print (an epoch in µs taken as ms lands there).
fn utc(ts_ms: i64) -> String {
    u64::try_from(ts_ms)
        .ok()
        .filter(|ms| *ms < 253_402_300_800_000)
        .and_then(|ms| std::time::UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_else(|| format!("{ts_ms} ms"))
}

async fn listen_source(index: usize, gateway: &str, source: &MqttSource, listen: Duration) -> Block {
    let map = MessageMap::from(source);
    let head = format!("mqtt[{index}] {} on {}", source.topic, source.broker);
    let client_id = format!("citysense-{gateway}-test{index}-{}", std::process::id());
    let (client, mut eventloop) = AsyncClient::new(options(source, client_id), 64);
    let deadline = tokio::time::Instant::now() + listen;
    let (mut connected, mut messages, mut rows, mut errors) = (false, 0usize, String::new(), Vec::new());
    let mut transport_error = None;
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                if let Err(e) = client.subscribe(source.topic.clone(), QoS::AtLeastOnce).await {
                    transport_error = Some(format!("cannot subscribe: {e}"));
                    break;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                messages += 1;
                match map.map(&p.topic, &p.payload, shared::now_ms()) {
                    Ok(readings) => {
                        for r in readings {
                            // The time as taken (offset applied, or arrival time): a zone rule
                            // or an epoch in the wrong unit shows here, not weeks later in a chart.
                            let _ = writeln!(rows, "  {} {:<16} = {:<18} {:<9}  from {} at {}", r.sensor, r.metric, r.value, r.quality.as_str(), p.topic, utc(r.ts_ms));
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Ok(_) => {}
            Err(e) if !connected => {
                transport_error = Some(format!("cannot connect: {e}"));
                break;
            }
            Err(e) => {
                transport_error = Some(format!("connection lost: {e}"));
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), client.disconnect()).await;
    let secs = listen.as_secs_f64();
    let (mut text, failed) = match (&transport_error, errors.is_empty()) {
        (Some(e), _) => (format!("{head}: FAILED, {e}\n"), true),
        (None, false) => (format!("{head}: FAILED, {} of {messages} message(s) carried no reading\n", errors.len()), true),
        (None, true) if messages == 0 => (format!("{head}: connected, but no message within {secs}s (a sensor that publishes less often needs a longer --seconds)\n"), false),
        (None, true) => (format!("{head}: OK, {messages} message(s) in {secs}s\n"), false),
    };
    for e in errors.iter().take(10) {
        let _ = writeln!(text, "  error: {e}");
    }
    text.push_str(&rows);
    Block { text, failed }
}
