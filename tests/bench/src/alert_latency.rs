//! `alert-latency`: a reading's publish to its alert on MQTT and SSE.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use shared::Quality;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::common::*;

/// With 100 rules on pm25 loaded, one gateway alternates a pm25 value above
/// and below a threshold; the time from publishing the reading to the alert
/// change arriving on MQTT (`alerts/#`) and on the SSE stream is recorded.
/// Every rule is on the probe's metric, so the engine looks at all 100 for
/// each probe: half select it (by sensor pattern) and are evaluated with a
/// limit it never reaches, half are passed over by their selector.
///
/// With `load` > 0, ten other gateways publish that many readings per second
/// (batches of 1,000 readings of a metric no rule looks at) all along.
pub(crate) async fn alert_latency(samples: usize, load: u64) -> Result<serde_json::Value> {
    let rules = format!("{}{PROBE_RULE}", probe_rules(99));
    let (_dir, c) = collector_with(&rules).await?;
    let mut prober = Prober::start(&c, Duration::from_secs(5)).await?;
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
    for _ in 0..samples {
        let (m, s) = prober.once().await?;
        to_mqtt.push(m);
        to_sse.push(s);
    }
    let achieved = (c.counters.stored.load(Relaxed) - stored_before) as f64 / measuring.elapsed().as_secs_f64();
    stop_load.store(true, Relaxed);
    c.shutdown().await;
    Ok(json!({"scenario": "alert-latency", "rules": 100, "rules_on_probe_metric": 100, "rules_evaluated_per_probe": 1 + 99 / 2 + 99 % 2, "alert_changes": samples,
              "mqtt_ms_p50": pct(&mut to_mqtt, 0.5), "mqtt_ms_p99": pct(&mut to_mqtt, 0.99), "mqtt_ms_max": pct(&mut to_mqtt, 1.0),
              "sse_ms_p50": pct(&mut to_sse, 0.5), "sse_ms_p99": pct(&mut to_sse, 0.99), "sse_ms_max": pct(&mut to_sse, 1.0),
              "background_readings_per_s_asked": load, "background_readings_per_s_stored": achieved.round(),
              "measured": "from publish by the gateway to the alert change received on MQTT and SSE: the broker hops and the rule engine; the store's write and sync are not in it (rules see readings before the write)"}))
}

/// The value at quantile `p` of `v` (sorted here), to 0.01.
pub(crate) fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    (v[i] * 100.0).round() / 100.0
}

/// A gateway (`gw-lat`) whose sensor `aq-1` alternates pm25 above and below
/// 75, and the instants each alert change arrives on MQTT (`alerts/#`, QoS 1)
/// and on the SSE stream (`types=alert`), as emergency command listens.
pub(crate) struct Prober {
    client: rumqttc::AsyncClient,
    mqtt: UnboundedReceiver<Instant>,
    sse: UnboundedReceiver<Instant>,
    sent: u64,
    stamp: i64,
    patience: Duration,
}

/// The rule the probe fires and resolves.
pub(crate) const PROBE_RULE: &str = "[[rule]]\nid = \"pm\"\nkind = \"threshold\"\nmetric = \"pm25\"\nop = \">\"\nvalue = 75\nseverity = \"warning\"\n";

impl Prober {
    /// `patience`: how long one change may take before the run fails.
    pub(crate) async fn start(c: &collector::Collector, patience: Duration) -> Result<Prober> {
        let (mqtt, sse) = alert_listeners(c).await?;
        let (client, mut el) = mqtt_client(&c.mqtt_url, "bench-gw");
        tokio::spawn(async move { while el.poll().await.is_ok() {} });
        Ok(Prober { client, mqtt, sse, sent: 0, stamp: 0, patience })
    }

    /// One alert change (a firing, then a resolution, in turn): ms from the
    /// reading's publish to the change on MQTT and on SSE.
    pub(crate) async fn once(&mut self) -> Result<(f64, f64)> {
        // Rules evaluate a series in time order: each probe is stamped at least
        // a millisecond after the last, as a sensor polled faster than 1 kHz is not.
        self.stamp = shared::now_ms().max(self.stamp + 1);
        let value = if self.sent.is_multiple_of(2) { 100.0 } else { 10.0 };
        self.sent += 1;
        let r = shared::Reading { seq: shared::Seq(self.sent), sensor: "aq-1".into(), metric: "pm25".into(), ts_ms: self.stamp, value, quality: Quality::Good };
        let sent = Instant::now();
        self.client.publish(shared::topics::up("gw-lat"), rumqttc::QoS::AtLeastOnce, false, shared::Batch::new("gw-lat", 1, vec![r]).encode()).await?;
        let m = tokio::time::timeout(self.patience, self.mqtt.recv()).await?.ok_or_else(|| anyhow::anyhow!("the MQTT alert subscriber stopped"))?;
        let s = tokio::time::timeout(self.patience, self.sse.recv()).await?.ok_or_else(|| anyhow::anyhow!("the SSE alert stream ended"))?;
        Ok((m.duration_since(sent).as_secs_f64() * 1000.0, s.duration_since(sent).as_secs_f64() * 1000.0))
    }
}

async fn alert_listeners(c: &collector::Collector) -> Result<(UnboundedReceiver<Instant>, UnboundedReceiver<Instant>)> {
    let (sub, mut sub_el) = mqtt_client(&c.mqtt_url, "bench-command");
    let (mqtt_tx, mqtt_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    sub.subscribe("citysense/v1/alerts/#", rumqttc::QoS::AtLeastOnce).await?;
    tokio::spawn(async move {
        loop {
            match sub_el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))) => {
                    let _ = mqtt_tx.send(Instant::now());
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("alert subscriber: {e}");
                    return;
                }
            }
        }
    });
    let (sse_tx, sse_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let http = c.http_addr;
    tokio::spawn(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        // An open collector answers only to a loopback Host.
        s.write_all(b"GET /api/v1/stream?types=alert HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
        let mut lines = tokio::io::BufReader::new(s).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("data:") {
                let _ = sse_tx.send(Instant::now());
            }
        }
    });
    Ok((mqtt_rx, sse_rx))
}

/// `n` pm25 threshold rules the probe sensor `aq-1` meets: even ones select it
/// by a sensor pattern and never fire (limit 1e9), odd ones select other
/// sensors and are passed over.
fn probe_rules(n: usize) -> String {
    (0..n)
        .map(|i| {
            let sensor = if i % 2 == 0 { "aq-*" } else { "tr-*" };
            format!("[[rule]]\nid = \"probe{i}\"\nkind = \"threshold\"\nmetric = \"pm25\"\nselect = {{ sensor = \"{sensor}\" }}\nop = \">\"\nvalue = 1e9\nseverity = \"info\"\n")
        })
        .collect()
}
