//! Open alerts kept on the cluster, when collectors share the log by
//! partition: each change of an alert the holder of its subject's partition
//! makes is written to the replicated bucket `citysense_alerts` (key
//! `<partition>.<hex of rule, subject and metric>`, the alert as JSON;
//! deleted once resolved). A collector that takes a partition over reads the
//! partition's open alerts before its batches (`take_over`): an alert open
//! when its partition moved goes on under the new holder, which resolves it
//! when its condition clears, so one crossing is one alert whichever
//! collector judged it. Every collector also watches the whole bucket
//! (`watch`): its API lists the city's open alerts, each under the id it
//! has everywhere (each collector numbers from a range of its own, `id_base`),
//! and passes the handling of one another collector holds on to it.

use std::fmt::Write as _;
use std::sync::Arc;

use async_nats::jetstream;
use tokio::sync::{mpsc, watch};

use super::holdings::Holdings;
use super::log::Link;
use crate::rules::alerting::{Alerting, Replicate};
use crate::rules::Alert;

pub const BUCKET: &str = "citysense_alerts";

fn key(p: u32, a: &Alert) -> String {
    let mut k = format!("{p}.");
    for b in [a.rule.as_bytes(), &[0], a.sensor.as_bytes(), &[0], a.metric.as_bytes()].concat() {
        let _ = write!(k, "{b:02x}");
    }
    k
}

/// Where collector `name` numbers its alerts from: one of 65,535 ranges of
/// 2^36 ids, by its name's hash (ids stay below 2^53, exact in JSON
/// numbers); never the first, where a single process numbers.
pub fn id_base(name: &str) -> u64 {
    (super::partition::fnv1a(name) % 65_535 + 1) as u64 * crate::rules::engine::ID_RANGE
}

/// Keeps `alerting` told of the city's open alerts as the cluster keeps
/// them (`Alerting::heard_elsewhere`) until `stop`.
pub async fn watch(link: Link, alerting: Arc<Alerting>, mut stop: watch::Receiver<bool>) {
    super::keep_trying!("the city's open alerts", stop, follow(&link, &alerting));
}

async fn follow(link: &Link, alerting: &Alerting) -> Result<(), async_nats::Error> {
    use futures_util::StreamExt as _;
    let js = jetstream::new(link.connect("citysense-collector-city-alerts").await?);
    let store = super::bucket::open(&js, link, BUCKET).await?;
    // Every key's latest first (those opened before this collector started
    // or while it was cut off, and deletions it missed), then each change.
    let mut news = store.watch_with_history(">").await?;
    while let Some(e) = news.next().await {
        let e = e?;
        match e.operation {
            async_nats::jetstream::kv::Operation::Put => match serde_json::from_slice::<Alert>(&e.value) {
                Ok(a) => alerting.heard_elsewhere(&e.key, Some(a)),
                Err(err) => tracing::warn!(key = %e.key, "an open alert on the cluster that is not an alert: passed over: {err}"),
            },
            _ => alerting.heard_elsewhere(&e.key, None),
        }
    }
    Err("the watch ended".into())
}

/// What `Alerting::set_replicate` is given, and the task that writes each
/// change to the cluster, in the order made, until `stop`.
pub fn start(link: Link, holdings: Arc<Holdings>, stop: watch::Receiver<bool>) -> (Replicate, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let replicate: Replicate = Arc::new(move |a: &Alert, gateway: Option<&str>| {
        let _ = tx.send((holdings.of(gateway), a.clone()));
    });
    (replicate, tokio::spawn(run(link, rx, stop)))
}

async fn run(link: Link, mut changes: mpsc::UnboundedReceiver<(u32, Alert)>, mut stop: watch::Receiver<bool>) {
    let mut unsent = None;
    loop {
        // Not cut short by `stop`: what ingest settles while the collector
        // hands its partitions back is still written (it ends when ingest does).
        let outcome = write(&link, &mut changes, &mut unsent).await;
        match outcome {
            Ok(()) => return,
            Err(e) => tracing::warn!("open alerts to the cluster: {e}; trying again in 2 s"),
        }
        if !super::wait_to_retry(&mut stop).await {
            return;
        }
    }
}

async fn write(link: &Link, changes: &mut mpsc::UnboundedReceiver<(u32, Alert)>, unsent: &mut Option<(u32, Alert)>) -> Result<(), async_nats::Error> {
    let js = jetstream::new(link.connect("citysense-collector-alerts").await?);
    let store = super::bucket::open(&js, link, BUCKET).await?;
    loop {
        let (p, a) = match unsent.take() {
            Some(c) => c,
            None => match changes.recv().await {
                Some(c) => c,
                None => return Ok(()),
            },
        };
        let written = if a.is_open() {
            store.put(key(p, &a), serde_json::to_vec(&a).expect("alert serializes").into()).await.map(|_| ()).map_err(async_nats::Error::from)
        } else {
            store.delete(key(p, &a)).await.map_err(Into::into)
        };
        if let Err(e) = written {
            *unsent = Some((p, a));
            return Err(e);
        }
    }
}

/// Reads partition `p`'s open alerts from the cluster and has `alerting`
/// take them over (`Alerting::take_over`); returns how many changed here.
pub async fn take_over(link: &Link, client: &async_nats::Client, p: u32, alerting: &Alerting, holdings: &Holdings) -> Result<usize, async_nats::Error> {
    let mut theirs = Vec::new();
    for (key, value) in super::bucket::partition(&jetstream::new(client.clone()), link, BUCKET, p).await? {
        match serde_json::from_slice::<Alert>(&value) {
            Ok(a) => theirs.push(a),
            Err(e) => tracing::warn!(key, "an open alert on the cluster that is not an alert: passed over: {e}"),
        }
    }
    Ok(alerting.take_over(theirs, &|gateway| holdings.of(gateway) == p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alerts_key_is_its_partition_then_its_rule_subject_and_metric() {
        let a: Alert = serde_json::from_value(serde_json::json!({
            "id": 7, "rule": "hot", "sensor": "aq.1", "metric": "pm25", "severity": "warning", "state": "firing",
            "value": 1.0, "threshold": 0.5, "started_ts_ms": 1, "updated_ts_ms": 1, "acked_by": null, "note": null,
            "escalated": false, "resolved_ts_ms": null, "resolved_by": null
        }))
        .unwrap();
        // Every byte in hex: ids may hold what a key may not (a `.` splits one).
        assert_eq!(key(3, &a), "3.686f740061712e3100706d3235");
    }
}
