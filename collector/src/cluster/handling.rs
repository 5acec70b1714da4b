//! Operators' handling of alerts, shared between the collectors of a
//! cluster: an acknowledgement or resolution made on one collector goes into
//! the replicated stream `CITYSENSE_OPS` and every other collector applies it
//! to its own copy of the alert (`Alerting::handled_elsewhere`), so the duty
//! desk sees the same state whichever collector it asks, and the speaker
//! announces it once. Each collector reads the stream from its start at
//! every start (a durable consumer `handling-<name>`, made anew), so one that
//! was down, or started on an empty disk, learns what was done meanwhile;
//! applying a handling twice changes nothing. A handling of an alert this
//! collector has not fired yet (it is behind in the log) waits, and is tried
//! again every second until it applies or is older than the log keeps.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::log::Link;
use crate::rules::alerting::{Alerting, Handled};

pub const STREAM: &str = "CITYSENSE_OPS";
const PREFIX: &str = "citysense.v1.ops.";

/// One handling, as the stream carries it: who made it, and what.
#[derive(Serialize, Deserialize)]
struct Entry {
    origin: String,
    #[serde(flatten)]
    handled: Handled,
}

/// Shares this collector's handlings and applies the others' until `stop`.
/// Returns the sender `Alerting::set_share` wants.
pub fn start(link: Link, name: String, alerting: Arc<Alerting>, stop: watch::Receiver<bool>) -> (mpsc::UnboundedSender<Handled>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio::spawn(run(link, name, alerting, rx, stop)))
}

async fn run(link: Link, name: String, alerting: Arc<Alerting>, mut ours: mpsc::UnboundedReceiver<Handled>, mut stop: watch::Receiver<bool>) {
    let mut fresh = true;
    // A handling waiting for the cluster when the connection broke.
    let mut unsent: Option<Handled> = None;
    let mut waiting = Vec::new();
    loop {
        let outcome = tokio::select! {
            r = share(&link, &name, &alerting, &mut ours, &mut unsent, &mut waiting, &mut fresh) => r,
            _ = stop.changed() => return,
        };
        if let Err(e) = outcome {
            tracing::warn!("alert handling in the cluster: {e}; trying again in 2 s");
        }
        if !super::wait_to_retry(&mut stop).await {
            return;
        }
    }
}

async fn share(
    link: &Link,
    name: &str,
    alerting: &Alerting,
    ours: &mut mpsc::UnboundedReceiver<Handled>,
    unsent: &mut Option<Handled>,
    waiting: &mut Vec<(String, Handled)>,
    fresh: &mut bool,
) -> Result<(), async_nats::Error> {
    let js = jetstream::new(link.connect("citysense-collector-handling").await?);
    let log = link.stream(&js, STREAM, &format!("{PREFIX}*")).await?;
    let config = pull::Config { durable_name: Some(format!("handling-{name}")), deliver_policy: DeliverPolicy::All, ack_policy: AckPolicy::Explicit, ..Default::default() };
    let consumer = link.consumer(&log, config, fresh).await?;
    let mut theirs = consumer.messages().await?;
    let subject = format!("{PREFIX}{name}");
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    loop {
        if let Some(h) = unsent.take() {
            let entry = serde_json::to_vec(&Entry { origin: name.to_string(), handled: h.clone() }).expect("handling serializes");
            // Kept until the cluster has it: a broken connection sends it again.
            *unsent = Some(h);
            js.publish(subject.clone(), entry.into()).await?.await?;
            *unsent = None;
        }
        tokio::select! {
            h = ours.recv() => match h {
                Some(h) => *unsent = Some(h),
                None => return Ok(()),
            },
            m = theirs.next() => {
                let Some(m) = m else { return Err("the handling stream's consumer ended".into()) };
                let m = m?;
                match serde_json::from_slice::<Entry>(&m.payload) {
                    Ok(e) if e.origin != name => waiting.push((e.origin, e.handled)),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(subject = %m.subject, "alert handling in the cluster: an entry that is not a handling: {e}"),
                }
                m.ack().await?;
                apply(alerting, waiting, link.keep());
            }
            _ = retry.tick(), if !waiting.is_empty() => apply(alerting, waiting, link.keep()),
        }
    }
}

/// Applies what can be applied; keeps the rest while the log may still fire its alert.
fn apply(alerting: &Alerting, waiting: &mut Vec<(String, Handled)>, keep: Duration) {
    let oldest = shared::clock::system().now_ms() - keep.as_millis() as i64;
    waiting.retain(|(origin, h)| match alerting.handled_elsewhere(h) {
        Some(changed) => {
            if changed {
                tracing::info!(from = %origin, rule = %h.rule, sensor = %h.sensor, action = ?h.action, "alert handled on another collector");
            }
            false
        }
        None => h.at_ms >= oldest,
    });
}
