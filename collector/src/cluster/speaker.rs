//! The speaker: of the collectors reading the batch log, the one that
//! speaks for the city outside it: the MQTT feeds (alerts, live readings,
//! incidents, SensorThings) and webhook deliveries. Every collector stores
//! every batch and evaluates every rule, so each serves the whole city; if
//! each also published what it saw, every subscriber and webhook receiver
//! would hear everything once per collector.
//!
//! A lease in the cluster's key-value store (bucket `citysense_cluster`, key
//! `speaker`): taken with a create that only one collector can win, kept by
//! renewing it every second with the revision it holds, and let go by
//! expiring when its holder stops renewing (dead, or cut off from the
//! cluster). A follower tries to take it every second, and notes when it last
//! saw the speaker renew: the speaker that takes over announces the alert
//! changes and delivers the webhooks it withheld since then, which nobody
//! announced (`Turn::from_ms`). Changes in the dead speaker's last second may
//! be announced twice: at least once, as webhooks are.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tokio::sync::watch;

use super::log::Link;

pub const BUCKET: &str = "citysense_cluster";
const KEY: &str = "speaker";
/// How long a lease outlives its holder's last renewal.
pub const LEASE: Duration = Duration::from_secs(5);
const RENEW: Duration = Duration::from_secs(1);
/// How long a collector that does not speak keeps the alert changes and
/// webhook deliveries it withholds: longer than `LEASE`, so a takeover finds them.
pub const WITHHELD_FOR: Duration = Duration::from_secs(30);

/// Whether this collector speaks for the city, and since when what it
/// withheld is its to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    pub speaking: bool,
    /// The last renewal this collector saw of another speaker (ms since the
    /// epoch): while it speaks, what it withheld at or after this time was
    /// announced by nobody.
    pub from_ms: i64,
}

impl Turn {
    pub const SILENT: Turn = Turn { speaking: false, from_ms: i64::MAX };
}

/// Whether this collector speaks for the city: always, outside cluster mode.
pub type Speaking = watch::Receiver<Turn>;

pub fn always() -> Speaking {
    // A receiver whose sender is gone still reads the last value.
    watch::channel(Turn { speaking: true, from_ms: i64::MIN }).1
}

/// Holds or waits for the lease until `stop`, telling `speaking` each change.
pub async fn run(link: Link, name: String, speaking: watch::Sender<Turn>, mut stop: watch::Receiver<bool>) {
    // The last renewal seen of another speaker: kept across reconnections,
    // so a takeover after a broken connection still knows what nobody announced.
    let mut last_seen: Option<i64> = None;
    loop {
        let outcome = tokio::select! {
            r = hold(&link, &name, &speaking, &mut last_seen) => r,
            _ = stop.changed() => break,
        };
        let silent = Turn { speaking: false, from_ms: last_seen.unwrap_or(i64::MAX) };
        speaking.send_if_modified(|s| std::mem::replace(s, silent) != silent);
        if let Err(e) = outcome {
            tracing::warn!("speaker lease: {e}; trying again in 2 s");
        }
        if !super::wait_to_retry(&mut stop).await {
            break;
        }
    }
    speaking.send_if_modified(|s| std::mem::replace(s, Turn::SILENT).speaking);
}

async fn hold(link: &Link, name: &str, speaking: &watch::Sender<Turn>, last_seen: &mut Option<i64>) -> Result<(), async_nats::Error> {
    let js = jetstream::new(link.connect("citysense-collector-speaker").await?);
    let store = super::leases(&js, link).await?;
    let mut held: Option<u64> = None;
    let mut tick = tokio::time::interval(RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let value = bytes::Bytes::from(name.to_string());
        held = match held {
            Some(revision) => match store.update(KEY, value, revision).await {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(collector = name, "no longer the cluster's speaker: {e}");
                    None
                }
            },
            None => match store.create(KEY, value).await {
                Ok(r) => {
                    let from_ms = last_seen.unwrap_or_else(shared::now_ms);
                    tracing::info!(collector = name, from_ms, "now the cluster's speaker: this collector publishes the feeds and delivers webhooks");
                    speaking.send_replace(Turn { speaking: true, from_ms });
                    Some(r)
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if let Ok(Some(entry)) = store.entry(KEY).await {
                        *last_seen = Some((entry.created.unix_timestamp_nanos() / 1_000_000) as i64);
                    }
                    None
                }
                Err(e) => return Err(e.into()),
            },
        };
        if held.is_none() {
            let turn = Turn { speaking: false, from_ms: last_seen.unwrap_or(i64::MAX) };
            speaking.send_if_modified(|s| std::mem::replace(s, turn) != turn);
        }
    }
}
