//! The live view shared, when collectors share the batch log by partition:
//! a collector's ingest tells its registry only about the gateways whose
//! partitions it holds. Each collector publishes what its ingest told its
//! registry (`registry::Change`, in postcard) on `citysense.v1.view.<name>`
//! and applies what the others publish, so every collector's sensors,
//! gateways, map, districts and live stream (SSE) cover the city.
//!
//! Core NATS, at most once: the view is not the record (the store is), and a
//! change lost while a connection is broken is overtaken by the gateway's
//! next batch. Changes a slow connection cannot take are dropped and counted
//! (`ViewStats`) rather than held: ingest never waits on the view. A
//! collector alone in the count publishes nothing. One that starts asks the
//! others, once it counts them, for what their registries have seen
//! (`citysense.v1.seen.<name>`, pages of sensors), so a sensor whose
//! gateway is quiet shows its last values there too.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};

use super::holdings::Holdings;
use super::log::Link;
use crate::messages::{Bus, FeedEvent};
use crate::registry::{Change, Registry, SensorSeen};
use shared::SensorId;

const PREFIX: &str = "citysense.v1.view";
const SEEN: &str = "citysense.v1.seen";
/// Sensors in one answer to a collector that starts: each with its
/// metrics' latest samples, well under NATS's default 1 MB message.
const SEEN_PAGE: usize = 1_000;
/// Changes waiting to be published, at most.
const QUEUE: usize = 65_536;
/// Readings in one message at most: a batch as large as `mqtt.max_packet`
/// allows goes in pieces, each well under NATS's default 1 MB message.
const PIECE: usize = 4_096;

#[derive(Debug, Default)]
pub struct ViewStats {
    /// Changes of this collector's ingest never published (queue full).
    pub unsent: AtomicU64,
    /// Changes from other collectors that could not be read.
    pub unreadable: AtomicU64,
}

/// Shares `registry`'s changes with the collectors of the cluster and
/// applies theirs until `stop`.
pub fn start(link: Link, name: String, holdings: Arc<Holdings>, registry: Arc<Registry>, bus: Bus, stop: watch::Receiver<bool>) -> (Arc<ViewStats>, tokio::task::JoinHandle<()>) {
    let stats = Arc::new(ViewStats::default());
    let (tx, rx) = mpsc::channel(QUEUE);
    let (full, sharing) = (stats.clone(), holdings.clone());
    registry.share(Box::new(move |change| {
        if sharing.sharing() && tx.try_send(change).is_err() {
            full.unsent.fetch_add(1, Relaxed);
        }
    }));
    let here = Here { registry, bus, stats: stats.clone(), holdings };
    (stats, tokio::spawn(run(link, name, here, rx, stop)))
}

/// Where the others' changes go.
struct Here {
    registry: Arc<Registry>,
    bus: Bus,
    stats: Arc<ViewStats>,
    holdings: Arc<Holdings>,
}

impl Here {
    fn heard(&self, change: Change) {
        let readings = match &change {
            Change::Stored { readings, .. } => Some(readings.clone()),
            _ => None,
        };
        self.registry.heard(change);
        if let Some(r) = readings {
            let _ = self.bus.send(FeedEvent::Elsewhere(r));
        }
    }
}

async fn run(link: Link, name: String, here: Here, mut changes: mpsc::Receiver<Change>, mut stop: watch::Receiver<bool>) {
    super::keep_trying!("the live view shared with the cluster", stop, exchange(&link, &name, &here, &mut changes));
}

async fn exchange(link: &Link, name: &str, here: &Here, changes: &mut mpsc::Receiver<Change>) -> Result<(), async_nats::Error> {
    let client = link.connect_deaf_to_itself("citysense-collector-view").await?;
    let own = format!("{PREFIX}.{name}");
    let mut others = client.subscribe(format!("{PREFIX}.*")).await?;
    let mut asked = client.subscribe(format!("{SEEN}.{name}")).await?;
    let mut counting = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut learned = false;
    loop {
        tokio::select! {
            m = asked.next() => {
                let Some(m) = m else { return Err("the subscription ended".into()) };
                let after: Option<SensorId> = postcard::from_bytes(&m.payload).unwrap_or_default();
                if let Some(reply) = m.reply {
                    let page = here.registry.seen_page(after.as_ref(), SEEN_PAGE);
                    client.publish(reply, postcard::to_stdvec(&page).expect("a page serializes").into()).await?;
                }
            }
            _ = counting.tick(), if !learned => {
                let others: Vec<String> = here.holdings.members().into_iter().filter(|m| m != name).collect();
                if !others.is_empty() {
                    learned = true;
                    tokio::spawn(learn(client.clone(), others, here.registry.clone()));
                }
            }
            change = changes.recv() => {
                let Some(change) = change else { return Ok(()) };
                for piece in pieces(change) {
                    let bytes = postcard::to_stdvec(&piece).expect("a change serializes");
                    client.publish(own.clone(), bytes.into()).await?;
                }
            }
            m = others.next() => {
                let Some(m) = m else { return Err("the subscription ended".into()) };
                if m.subject.as_str() == own {
                    continue;
                }
                match postcard::from_bytes::<Change>(&m.payload) {
                    Ok(change) => here.heard(change),
                    Err(e) => {
                        here.stats.unreadable.fetch_add(1, Relaxed);
                        tracing::warn!(subject = %m.subject, "a change to the live view that is not one: passed over: {e}");
                    }
                }
            }
        }
    }
}

/// What each of `others` has seen, into `registry`: asked once, when this
/// collector first counts them.
async fn learn(client: async_nats::Client, others: Vec<String>, registry: Arc<Registry>) {
    for peer in others {
        let mut after: Option<SensorId> = None;
        loop {
            let ask = postcard::to_stdvec(&after).expect("a cursor serializes");
            let page = match tokio::time::timeout(std::time::Duration::from_secs(5), client.request(format!("{SEEN}.{peer}"), ask.into())).await {
                Ok(Ok(reply)) => match postcard::from_bytes::<Vec<(SensorId, SensorSeen)>>(&reply.payload) {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(collector = peer, "what another collector has seen, unreadable: {e}");
                        break;
                    }
                },
                Ok(Err(e)) => {
                    tracing::warn!(collector = peer, "cannot ask another collector what it has seen: {e}");
                    break;
                }
                Err(_) => {
                    tracing::warn!(collector = peer, "another collector did not say what it has seen within 5 s");
                    break;
                }
            };
            let full = page.len() >= SEEN_PAGE;
            after = page.last().map(|(id, _)| id.clone());
            for (id, seen) in page {
                registry.learn(id, seen);
            }
            if !full {
                break;
            }
        }
    }
}

/// `change` in messages of at most `PIECE` readings; the batch's counts go
/// with the first, so each is added once.
fn pieces(change: Change) -> Vec<Change> {
    match change {
        Change::Stored { gateway, epoch, readings, received, duplicates, acked } if readings.len() > PIECE => readings
            .chunks(PIECE)
            .enumerate()
            .map(|(i, part)| {
                let (received, duplicates) = if i == 0 { (received, duplicates) } else { (0, 0) };
                Change::Stored { gateway: gateway.clone(), epoch, readings: Arc::new(part.to_vec()), received, duplicates, acked }
            })
            .collect(),
        c => vec![c],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{Quality, Reading, Seq};

    #[test]
    fn a_large_batch_goes_in_pieces_that_add_up_to_it() {
        let readings: Vec<Reading> = (0..PIECE * 2 + 1)
            .map(|i| Reading { seq: Seq(i as u64), sensor: "wl-1".into(), metric: "level".into(), ts_ms: i as i64, value: 1.0, quality: Quality::Good })
            .collect();
        let whole = Change::Stored { gateway: "gw".into(), epoch: 2, readings: Arc::new(readings.clone()), received: 9_000, duplicates: 3, acked: Seq(8_193) };
        let parts = pieces(whole);
        assert_eq!(parts.len(), 3);
        let (mut all, mut received, mut duplicates) = (Vec::new(), 0, 0);
        for p in parts {
            let Change::Stored { readings, received: r, duplicates: d, acked, .. } = p else { panic!() };
            assert!(readings.len() <= PIECE && acked == Seq(8_193));
            let bytes = postcard::to_stdvec(&Change::Stored { gateway: "gw".into(), epoch: 2, readings: readings.clone(), received: r, duplicates: d, acked }).unwrap();
            assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
            all.extend(readings.iter().cloned());
            (received, duplicates) = (received + r, duplicates + d);
        }
        assert_eq!((all, received, duplicates), (readings, 9_000, 3));
    }
}
