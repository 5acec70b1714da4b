//! Operators' work, shared between the collectors of a cluster: an alert's
//! acknowledgement or resolution, an incident's handling (assignment,
//! acknowledgement, transfer, note, resolution, closing, reopening, rating,
//! rectification) and a silence made or deleted on one collector go into
//! the replicated stream `CITYSENSE_OPS`, and every other collector does it
//! to its own copy (`Alerting::handled_elsewhere`,
//! `Incidents::worked_elsewhere`), so a desk sees the same state whichever
//! collector it asks, and the speaker announces it once. Each collector
//! reads the stream from its start at every start (a durable consumer
//! `handling-<name>`, made anew), so one that was down, or started on an
//! empty disk, learns what was done meanwhile; doing a piece of work twice
//! changes nothing, which is why a collector also reads back its own
//! incident work (one restarted on an empty disk has lost it). Work on an
//! alert or incident this collector does not have yet (it is behind in the
//! log) waits, and is tried again every second, in the order it was done,
//! until it applies or is older than the log keeps.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::log::Link;
use crate::incident::service::Incidents;
use crate::incident::work::Worked;
use crate::rules::alerting::{Alerting, Handled};

pub const STREAM: &str = "CITYSENSE_OPS";
const PREFIX: &str = "citysense.v1.ops.";

/// One piece of work, as this collector hands it on.
#[derive(Debug, Clone)]
pub enum Op {
    Alert(Handled),
    Incident(Worked),
}

/// An alert's handling as the stream carries it: who made it, and what.
#[derive(Serialize, Deserialize)]
struct Entry {
    origin: String,
    #[serde(flatten)]
    handled: Handled,
}

/// Incident work as the stream carries it.
#[derive(Serialize, Deserialize)]
struct WorkEntry {
    origin: String,
    incident_work: Worked,
}

impl Op {
    fn to_json(&self, origin: &str) -> Vec<u8> {
        let origin = origin.to_string();
        match self {
            Op::Alert(h) => serde_json::to_vec(&Entry { origin, handled: h.clone() }),
            Op::Incident(w) => serde_json::to_vec(&WorkEntry { origin, incident_work: w.clone() }),
        }
        .expect("work serializes")
    }

    fn from_json(payload: &[u8]) -> Result<(String, Op), serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(payload)?;
        if value.get("incident_work").is_some() {
            let e: WorkEntry = serde_json::from_value(value)?;
            return Ok((e.origin, Op::Incident(e.incident_work)));
        }
        let e: Entry = serde_json::from_value(value)?;
        Ok((e.origin, Op::Alert(e.handled)))
    }

    fn at_ms(&self) -> i64 {
        match self {
            Op::Alert(h) => h.at_ms,
            Op::Incident(w) => w.at_ms(),
        }
    }
}

/// What work is done to.
pub struct Targets {
    pub alerting: Arc<Alerting>,
    pub incidents: Arc<Incidents>,
}

/// Shares this collector's work and does the others' until `stop`. Returns
/// the sender `Alerting::set_share` and `Incidents::set_share` feed.
pub fn start(link: Link, name: String, targets: Targets, stop: watch::Receiver<bool>) -> (mpsc::UnboundedSender<Op>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio::spawn(run(link, name, targets, rx, stop)))
}

async fn run(link: Link, name: String, targets: Targets, mut ours: mpsc::UnboundedReceiver<Op>, mut stop: watch::Receiver<bool>) {
    let mut fresh = true;
    // Work waiting for the cluster when the connection broke.
    let mut unsent: Option<Op> = None;
    let mut waiting = Vec::new();
    loop {
        let outcome = tokio::select! {
            r = share(&link, &name, &targets, &mut ours, &mut unsent, &mut waiting, &mut fresh) => r,
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
    targets: &Targets,
    ours: &mut mpsc::UnboundedReceiver<Op>,
    unsent: &mut Option<Op>,
    waiting: &mut Vec<(String, Op)>,
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
        if let Some(op) = unsent.take() {
            let entry = op.to_json(name);
            // Kept until the cluster has it: a broken connection sends it again.
            *unsent = Some(op);
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
                match Op::from_json(&m.payload) {
                    // An alert's own handling read back is not waited on: a
                    // resolved alert is not open here, and would wait its days.
                    Ok((origin, Op::Alert(_))) if origin == name => {}
                    Ok(work) => waiting.push(work),
                    Err(e) => tracing::warn!(subject = %m.subject, "operators' work in the cluster: an entry that is not work: {e}"),
                }
                m.ack().await?;
                apply(targets, waiting, link.keep());
            }
            _ = retry.tick(), if !waiting.is_empty() => apply(targets, waiting, link.keep()),
        }
    }
}

/// Does what can be done; keeps the rest while the log may still fire its alert.
fn apply(targets: &Targets, waiting: &mut Vec<(String, Op)>, keep: Duration) {
    let oldest = shared::clock::system().now_ms() - keep.as_millis() as i64;
    waiting.retain(|(origin, op)| {
        let done = match op {
            Op::Alert(h) => targets.alerting.handled_elsewhere(h),
            Op::Incident(w) => targets.incidents.worked_elsewhere(w),
        };
        match done {
            Some(changed) => {
                if changed {
                    tracing::info!(from = %origin, work = ?op, "work done on another collector, done here");
                }
                false
            }
            None => op.at_ms() >= oldest,
        }
    });
}
