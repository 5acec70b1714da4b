//! Sensor ownership kept on the cluster, when collectors share the batch log
//! by partition. An uncatalogued sensor is bound to the first gateway heard
//! carrying it (`crate::ingest::ownership`); with the log split, two
//! gateways carrying one sensor may be judged by two collectors, and a
//! partition's next holder would start without the bindings the last one
//! made. So each binding a collector makes is written to the replicated
//! bucket `citysense_bindings` (key: the sensor, `:` written `=`; value:
//! the gateway) with a create that only the first claim wins, an operator's
//! move with a put that always does, and every collector follows the whole
//! bucket into its ingest (`IngestControl::Bound`): the cluster's binding is
//! the one every collector judges by. Kept without expiry, like the store's.
//!
//! Not atomic with the store: two collectors binding one sensor to two
//! gateways in the same instant each store the first readings they judged,
//! until the cluster's answer reaches the loser (a round trip): from then on
//! its gateway's readings are refused there too.

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};

use super::log::Link;
use crate::ingest::ownership::Claim;
use crate::ingest::ClaimsOut;
use crate::messages::IngestControl;
use shared::{GatewayId, SensorId};

pub const BUCKET: &str = "citysense_bindings";

fn key(sensor: &str) -> String {
    sensor.replace(':', "=")
}

fn sensor_of(key: &str) -> SensorId {
    key.replace('=', ":").as_str().into()
}

/// Where ingest sends the bindings it makes, and the task that keeps them
/// on the cluster and brings the cluster's to `ingest` until `stop`.
pub fn start(link: Link, ingest: mpsc::Sender<IngestControl>, stop: watch::Receiver<bool>) -> (ClaimsOut, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio::spawn(run(link, rx, ingest, stop)))
}

async fn run(link: Link, mut claims: mpsc::UnboundedReceiver<Claim>, ingest: mpsc::Sender<IngestControl>, mut stop: watch::Receiver<bool>) {
    let mut unsent = None;
    super::keep_trying!("sensor bindings on the cluster", stop, exchange(&link, &mut claims, &ingest, &mut unsent));
}

async fn open(js: &jetstream::Context, link: &Link) -> Result<kv::Store, async_nats::Error> {
    Ok(match js.get_key_value(BUCKET).await {
        Ok(s) => s,
        Err(_) => js.create_key_value(kv::Config { bucket: BUCKET.into(), history: 1, num_replicas: link.replicas(), ..Default::default() }).await?,
    })
}

async fn exchange(link: &Link, claims: &mut mpsc::UnboundedReceiver<Claim>, ingest: &mpsc::Sender<IngestControl>, unsent: &mut Option<Claim>) -> Result<(), async_nats::Error> {
    let js = jetstream::new(link.connect("citysense-collector-bindings").await?);
    let store = open(&js, link).await?;
    // Every binding kept so far, then each new one; those in a run the
    // cluster sends back to back go to ingest together.
    let mut kept = store.watch_with_history(">").await?;
    let mut heard = Vec::new();
    loop {
        let claim = match unsent.take() {
            Some(c) => c,
            None => tokio::select! {
                c = claims.recv() => match c {
                    Some(c) => c,
                    None => return Ok(()),
                },
                e = kept.next() => {
                    let e = e.ok_or("the watch ended")??;
                    if e.operation == kv::Operation::Put {
                        let gateway = String::from_utf8_lossy(&e.value);
                        if shared::topics::valid_id(&gateway) {
                            heard.push((sensor_of(&e.key), gateway.as_ref().into()));
                        } else {
                            tracing::warn!(key = %e.key, "a sensor binding on the cluster that names no gateway: passed over");
                        }
                    }
                    if e.delta == 0 && !heard.is_empty() {
                        tell(ingest, std::mem::take(&mut heard)).await;
                    }
                    continue;
                }
            },
        };
        if let Err(e) = keep(&store, &claim, ingest).await {
            *unsent = Some(claim);
            return Err(e);
        }
    }
}

/// Writes one claim; a first claim the cluster already answered otherwise
/// brings the cluster's binding back to ingest.
async fn keep(store: &kv::Store, claim: &Claim, ingest: &mpsc::Sender<IngestControl>) -> Result<(), async_nats::Error> {
    match claim {
        Claim::Moved(sensor, gateway) => {
            store.put(key(sensor), gateway.to_string().into()).await?;
        }
        Claim::First(sensor, gateway) => match store.create(key(sensor), gateway.to_string().into()).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                if let Some(owner) = store.get(key(sensor)).await? {
                    let owner: GatewayId = String::from_utf8_lossy(&owner).as_ref().into();
                    if owner != *gateway {
                        tell(ingest, vec![(sensor.clone(), owner)]).await;
                    }
                }
            }
            Err(e) => return Err(e.into()),
        },
    }
    Ok(())
}

async fn tell(ingest: &mpsc::Sender<IngestControl>, bindings: Vec<(SensorId, GatewayId)>) {
    let _ = ingest.send(IngestControl::Bound { bindings }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sensor_id_is_a_key_and_comes_back_from_it() {
        for id in ["wl-001", "modbus:10.0.0.7:3", "aq_1.pm"] {
            assert!(shared::topics::valid_id(id));
            let k = key(id);
            assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./".contains(c)), "{k}");
            assert_eq!(sensor_of(&k).as_str(), id);
        }
    }
}
