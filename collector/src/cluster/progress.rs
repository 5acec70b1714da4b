//! Delivery progress kept on the cluster, when collectors share the log by
//! partition: each commit's progress (per gateway and outbox epoch, what
//! ingest deduplicates and acknowledges by) is written to the replicated
//! key-value bucket `citysense_progress`, key `<partition>.<gateway>.<epoch>`,
//! and confirmed before its batches are acknowledged to agents or to the log
//! (`crate::ingest::ProgressOut`). A collector that takes a partition over
//! reads the partition's progress first (`adopt`), so it acknowledges the
//! gateways' next batches at once rather than waiting for seqs the dead
//! holder stored, and a batch the dead holder stored but had not yet
//! acknowledged to the log is deduplicated rather than stored twice.

use async_nats::jetstream;
use tokio::sync::{mpsc, oneshot, watch};

use super::log::Link;
use super::partition::Partitions;
use crate::messages::IngestControl;
use crate::store::{Progress, SeqSpace};

pub const BUCKET: &str = "citysense_progress";

type Batch = (Vec<(SeqSpace, Progress)>, oneshot::Sender<()>);

/// The channel ingest's commits send their progress on, and the task that
/// writes it to the cluster until `stop`.
pub fn start(link: Link, partitions: Partitions, stop: watch::Receiver<bool>) -> (crate::ingest::ProgressOut, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    (tx, tokio::spawn(run(link, partitions, rx, stop)))
}

fn key(partitions: Partitions, space: &SeqSpace) -> String {
    format!("{}.{}.{}", partitions.of(&space.gateway), space.gateway, space.epoch)
}

async fn run(link: Link, partitions: Partitions, mut commits: mpsc::Receiver<Batch>, mut stop: watch::Receiver<bool>) {
    // A commit whose progress the cluster has not confirmed yet: written again after a reconnection.
    let mut unconfirmed: Option<Batch> = None;
    loop {
        // Not cut short by `stop`: what ingest settles while the collector
        // hands its partitions back is still written (it ends when ingest does).
        let outcome = write(&link, partitions, &mut commits, &mut unconfirmed).await;
        match outcome {
            Ok(()) => return,
            Err(e) => tracing::warn!("delivery progress to the cluster: {e}; trying again in 2 s (acknowledgements wait)"),
        }
        if !super::wait_to_retry(&mut stop).await {
            return;
        }
    }
}

async fn write(link: &Link, partitions: Partitions, commits: &mut mpsc::Receiver<Batch>, unconfirmed: &mut Option<Batch>) -> Result<(), async_nats::Error> {
    let js = jetstream::new(link.connect("citysense-collector-progress").await?);
    let store = super::bucket::open(&js, link, BUCKET).await?;
    loop {
        let (progress, done) = match unconfirmed.take() {
            Some(b) => b,
            None => match commits.recv().await {
                Some(b) => b,
                None => return Ok(()),
            },
        };
        let puts = progress.iter().map(|(space, p)| store.put(key(partitions, space), serde_json::to_vec(p).expect("progress serializes").into()));
        let results = futures_util::future::join_all(puts).await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            *unconfirmed = Some((progress, done));
            return Err(e.into());
        }
        let _ = done.send(());
    }
}

/// Reads partition `p`'s progress from the cluster and hands it to ingest
/// (`IngestControl::Adopt`); returns once ingest has taken it.
pub async fn adopt(link: &Link, client: &async_nats::Client, p: u32, ingest: &mpsc::Sender<IngestControl>) -> Result<usize, async_nats::Error> {
    let mut progress = Vec::new();
    for (key, value) in super::bucket::partition(&jetstream::new(client.clone()), link, BUCKET, p).await? {
        let Some((gateway, epoch)) = key.rsplit_once('.') else { continue };
        let (Ok(epoch), Ok(p)) = (epoch.parse(), serde_json::from_slice::<Progress>(&value)) else {
            tracing::warn!(key, "delivery progress on the cluster that is not progress: passed over");
            continue;
        };
        progress.push((SeqSpace::new(gateway, epoch), p));
    }
    let n = progress.len();
    let (reply, taken) = oneshot::channel();
    ingest.send(IngestControl::Adopt { progress, reply }).await.map_err(|_| "ingest has stopped")?;
    taken.await.map_err(|_| "ingest has stopped")?;
    Ok(n)
}
