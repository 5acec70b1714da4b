//! `ingest`: collector readings/s from many gateways, with rules, through
//! the embedded broker or Mosquitto.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;
use shared::Quality;

use crate::common::*;

/// `gateways` connections each publish batches of 1,000 readings (10 metrics ×
/// 100 sensors) until `total` readings are stored; readings/s is stored/elapsed.
pub(crate) async fn ingest(gateways: usize, total: u64, batch: Option<u64>, rules: usize, broker: &str) -> Result<serde_json::Value> {
    let (mqtt, mosquitto) = broker_line(broker)?;
    let (_dir, c) = collector_on(&mqtt, &quiet_rules(rules)).await?;
    let connected = Gateways::connect(&c, gateways, None).await?;
    let start = Instant::now();
    let want = load(&c, connected, total, batch, None).await?;
    let stored_secs = start.elapsed().as_secs_f64();
    evaluated(&c, || want).await?;
    let secs = start.elapsed().as_secs_f64();
    let lagged = c.counters.rules_lagged.load(Relaxed);
    let lagged_readings = c.counters.rules_lagged_readings.load(Relaxed);
    c.shutdown().await;
    drop(mosquitto);
    Ok(json!({"scenario": "ingest", "gateways": gateways, "rules": rules, "readings": want, "batch": batch.unwrap_or((total / gateways as u64).clamp(1, 1000)),
              "seconds": (secs * 1000.0).round() / 1000.0, "readings_per_s": (want as f64 / secs).round(),
              "stored_seconds": (stored_secs * 1000.0).round() / 1000.0, "stored_readings_per_s": (want as f64 / stored_secs).round(),
              "rules_lagged_batches": lagged, "rules_lagged_readings": lagged_readings, "broker": broker,
              "clock": "from the first publish until every reading is stored and the rule engine has evaluated it (or counted it lagged)"}))
}

/// Waits until the rule engine has evaluated `want` readings, or counted the
/// rest as lagged (taken off its queue unevaluated): only then has the work
/// an ingest figure with rules claims been done.
pub(crate) async fn evaluated(c: &collector::Collector, want: impl Fn() -> u64) -> Result<()> {
    until("rules", Duration::from_millis(1), || c.alerting.evaluated.load(Relaxed) + c.counters.rules_lagged_readings.load(Relaxed), want).await
}

/// Waits until `count()` reaches `want()` (both read again each time: a
/// probe may still be adding readings), looking every `every`; after 600 s
/// fails naming `what` stalled.
pub(crate) async fn until(what: &str, every: Duration, count: impl Fn() -> u64, want: impl Fn() -> u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while count() < want() {
        if Instant::now() > deadline {
            bail!("{what} stalled at {} of {} readings", count(), want());
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// Gateway connections for `load`, each connected (and, with a window,
/// subscribed to its acks) before the clock starts.
pub(crate) struct Gateways {
    window: Option<u64>,
    each: Vec<(rumqttc::AsyncClient, tokio::sync::watch::Receiver<u64>)>,
}

impl Gateways {
    /// `n` gateways `gw-0`..; with `window`, each keeps at most that many
    /// batches unacknowledged by the collector, as an agent does
    /// (`uplink.max_inflight`, 4 shipped), and sends them again when the
    /// agent's ack timer runs out (`agent::uplink::ack_timer`, from the
    /// shipped `ack_timeout`).
    /// Without it a gateway has 100 QoS 1 publishes in flight at the broker
    /// and never waits for the collector: the whole load queues in the broker,
    /// whose log drops its oldest segment past 1 GB (rumqttd), so a flood
    /// longer than that never completes.
    pub(crate) async fn connect(c: &collector::Collector, n: usize, window: Option<u64>) -> Result<Gateways> {
        let mut ready = Vec::with_capacity(n);
        for g in 0..n {
            let (client, el) = mqtt_client(&c.mqtt_url, &format!("bench-gw-{g}"));
            ready.push((client.clone(), watch_acks(&format!("gw-{g}"), client, el, window.is_some())));
        }
        let mut each = Vec::with_capacity(n);
        for (client, acked) in ready {
            each.push((client, acked.await?));
        }
        Ok(Gateways { window, each })
    }
}

/// Publishes about `total` readings from `gateways` in batches of `batch`
/// (default: 1,000, fewer when there are many gateways), as fast as the
/// collector takes them or at `rate` readings/s in all (each gateway sending
/// its share on a schedule it keeps up with if it can), and waits until the
/// collector has stored them all; returns how many.
pub(crate) async fn load(c: &collector::Collector, gateways: Gateways, total: u64, batch: Option<u64>, rate: Option<u64>) -> Result<u64> {
    let (window, n) = (gateways.window, gateways.each.len());
    let size = batch.unwrap_or((total / n as u64).clamp(1, 1000));
    let per_gateway = total / n as u64 / size;
    let every = rate.map(|r| Duration::from_secs_f64(size as f64 * n as f64 / r as f64));
    let mut tasks = Vec::new();
    for (g, (client, mut acked)) in gateways.each.into_iter().enumerate() {
        let gw = format!("gw-{g}");
        tasks.push(tokio::spawn(async move {
            let mut ts = 0;
            // Gateways start spread over one period, as a city's do.
            let mut tick = every.map(|e| tokio::time::interval_at(tokio::time::Instant::now() + e.mul_f64(g as f64 / n as f64), e));
            let mut out = Out::default();
            for b in 0..per_gateway {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                // A poll's time, as an agent stamps it: the clock when the
                // batch is made (a series is in a batch once at most with
                // 1,000-reading batches), a millisecond on if a batch came sooner.
                ts = shared::now_ms().max(ts + 1);
                let readings = (0..size)
                    .map(|k| {
                        let seq = b * size + k + 1;
                        shared::Reading {
                            seq: shared::Seq(seq),
                            sensor: format!("s{g}-{}", k % 100).into(),
                            metric: format!("m{}", k / 100).into(),
                            ts_ms: ts,
                            value: (k % 97) as f64,
                            quality: Quality::Good,
                        }
                    })
                    .collect();
                let bytes = shared::Batch::new(gw.clone(), 1, readings).encode();
                client.publish(shared::topics::up(&gw), rumqttc::QoS::AtLeastOnce, false, bytes.clone()).await?;
                if let Some(w) = window {
                    out.unacked.push_back(Unacked { last: (b + 1) * size, bytes, sent: Instant::now(), resent: false });
                    acked_up_to(&client, &gw, &mut acked, &mut out, w - 1).await?;
                }
            }
            acked_up_to(&client, &gw, &mut acked, &mut out, 0).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let want = per_gateway * size * n as u64;
    until("ingest", Duration::from_millis(5), || c.counters.stored.load(Relaxed), || want).await?;
    Ok(want)
}

/// An agent's shipped `ack_timeout`: the least its ack timer waits.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A batch out, as the agent's window keeps it.
struct Unacked {
    last: u64,
    bytes: Vec<u8>,
    sent: Instant,
    /// Sent more than once: its ack is not measured (it may answer either sending).
    resent: bool,
}

/// A gateway's batches out and its ack timer, as the agent's uplink window
/// times them: the oldest from its sending or the last ack, whichever is later.
struct Out {
    unacked: std::collections::VecDeque<Unacked>,
    timer: agent::uplink::ack_timer::AckTimer,
    head_since: Option<Instant>,
}

impl Default for Out {
    fn default() -> Self {
        Out { unacked: Default::default(), timer: agent::uplink::ack_timer::AckTimer::new(ACK_TIMEOUT), head_since: None }
    }
}

/// Batches sent again for want of an ack, in this process.
pub(crate) static RESENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs gateway `gw`'s connection and gives the highest seq the collector
/// has acknowledged, kept up to date, once connected (when `subscribing`,
/// once the broker has granted the subscription: an ack published before
/// would be lost). A lost connection is made again, and the subscription
/// with it, as an agent does: a thousand gateways connecting at once
/// overflow the broker's listen backlog, and a SYN retried after 1, 3, 7, 15
/// and 31 s can outlast any connect timeout.
fn watch_acks(
    gw: &str,
    client: rumqttc::AsyncClient,
    mut el: rumqttc::EventLoop,
    subscribing: bool,
) -> impl std::future::Future<Output = Result<tokio::sync::watch::Receiver<u64>>> {
    let topic = shared::topics::ack(gw);
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let (granted, subscribed) = tokio::sync::oneshot::channel();
    let mut granted = Some(granted);
    let gw = gw.to_string();
    tokio::spawn(async move {
        let mut lost = 0;
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) if p.topic == topic => {
                    if let Ok(a) = serde_json::from_slice::<shared::wire::Ack>(&p.payload) {
                        tx.send_modify(|s| *s = (*s).max(a.seq.get()));
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) if subscribing => {
                    if client.try_subscribe(&topic, rumqttc::QoS::AtMostOnce).is_err() {
                        return;
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_) | rumqttc::Packet::SubAck(_))) => {
                    granted.take().map(|g| g.send(()));
                }
                Ok(_) => {}
                Err(e) => {
                    lost += 1;
                    if lost == 1 {
                        eprintln!("gateway {gw}: connection lost, connecting again: {e}");
                    }
                    if lost > 100 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    async move {
        subscribed.await.map_err(|_| anyhow::anyhow!("the connection was lost 100 times before it was ready"))?;
        Ok(rx)
    }
}

/// Waits until at most `keep` batches of `out` are still unacknowledged,
/// sending them all again each time the ack timer runs out without one.
async fn acked_up_to(client: &rumqttc::AsyncClient, gw: &str, acked: &mut tokio::sync::watch::Receiver<u64>, out: &mut Out, keep: u64) -> Result<()> {
    let mut timeouts = 0;
    loop {
        let a = *acked.borrow_and_update();
        let now = Instant::now();
        let mut moved = false;
        while let Some(b) = out.unacked.front().filter(|b| b.last <= a) {
            if !moved && !b.resent {
                out.timer.measured(now - out.head_since.map_or(b.sent, |h| h.max(b.sent)));
            }
            moved = true;
            out.unacked.pop_front();
        }
        if moved {
            out.head_since = Some(now);
        }
        if out.unacked.len() as u64 <= keep {
            return Ok(());
        }
        let head = &out.unacked[0];
        let due = out.head_since.map_or(head.sent, |h| h.max(head.sent)) + out.timer.timeout();
        match tokio::time::timeout_at(due.into(), acked.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("{gw}: its connection task ended"),
            Err(_) => {
                timeouts += 1;
                if timeouts > 30 {
                    bail!("{gw}: seq {} not acknowledged after {timeouts} resends", out.unacked[0].last);
                }
                out.timer.timed_out();
                out.head_since = None;
                RESENT.fetch_add(out.unacked.len() as u64, Relaxed);
                for b in out.unacked.iter_mut() {
                    client.publish(shared::topics::up(gw), rumqttc::QoS::AtLeastOnce, false, b.bytes.clone()).await?;
                    (b.sent, b.resent) = (Instant::now(), true);
                }
            }
        }
    }
}
