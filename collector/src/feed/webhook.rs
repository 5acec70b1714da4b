//! Webhooks: every alert change is POSTed as JSON to each configured URL from
//! a durable outbox, retried with backoff until the receiver answers 2xx.
//! Deliveries are written before they are attempted and deleted only on 2xx,
//! so a receiver that is down, or a collector restart, loses none; the worker
//! runs apart from ingest and never slows it.
//!
//! At least once: a collector stopped between a receiver's 2xx and the
//! delivery's deletion sends it again after the restart. Each delivery
//! therefore carries an `Idempotency-Key` header naming the change it
//! announces, the same on every attempt, for the receiver to drop repeats.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::alert::Severity;
use crate::rules::store::AlertDb;

/// `[[webhook]]` in the collector config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://HOST:PORT/PATH` (https is not supported by this build yet).
    pub url: String,
    /// Only alerts at least this severe; all when omitted.
    pub min_severity: Option<Severity>,
}

impl WebhookConfig {
    pub fn validate(&self) -> Option<String> {
        match self.url.parse::<hyper::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => None,
            Ok(u) if u.scheme_str() == Some("https") => Some("https:// is not supported by this build yet; use http://".into()),
            _ => Some(format!("`{}` is not an http://HOST[:PORT]/PATH URL", self.url)),
        }
    }
}

/// The delivery queue, kept in the alert store's database.
pub struct Outbox {
    /// The alert store's database, whose `sync` makes a queued delivery durable.
    db: AlertDb,
    tree: sled::Tree,
    next: AtomicU64,
    /// Deliveries up to this key are durable and may be sent: one queued with
    /// `queue` waits for its caller's sync (`release`).
    released: AtomicU64,
    pub notify: Notify,
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    /// Deliveries a follower of the cluster let go: the speaker sends them.
    pub withheld: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct Delivery {
    hook: usize,
    body: String,
    /// Sent as `Idempotency-Key`; none on deliveries queued before keys existed.
    #[serde(default)]
    key: Option<String>,
    /// When it was queued (ms since the epoch); none on deliveries queued
    /// before this was kept. A collector that takes the cluster's speaker
    /// lease over delivers what it queued since the last speaker's last renewal.
    #[serde(default)]
    queued_ms: Option<i64>,
}

impl Outbox {
    pub fn open(db: &AlertDb) -> Result<Outbox, sled::Error> {
        let tree = db.open_tree("webhooks")?;
        let next = tree.last()?.map(|(k, _)| u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1).unwrap_or(1);
        Ok(Outbox {
            db: db.clone(),
            tree,
            next: AtomicU64::new(next),
            released: AtomicU64::new(next - 1),
            notify: Notify::new(),
            delivered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            withheld: AtomicU64::new(0),
        })
    }

    /// `key` names the change (`alert-7-fired-1764000000123`): a receiver
    /// that sees it twice has seen the same change twice.
    pub fn enqueue(&self, hook: usize, key: String, body: String) -> Result<(), sled::Error> {
        let k = self.queue(hook, key, body)?;
        // Durable before it is announced: sled's flush alone is only
        // sync_file_range (spacejam/sled#1452).
        self.db.sync()?;
        self.release(k);
        Ok(())
    }

    /// Writes a delivery without making it durable or sending it: the caller
    /// syncs the database (with what the delivery announces, so a crash
    /// keeps both or neither), then calls `release`.
    pub fn queue(&self, hook: usize, key: String, body: String) -> Result<u64, sled::Error> {
        let k = self.next.fetch_add(1, Relaxed);
        self.tree.insert(k.to_be_bytes(), serde_json::to_vec(&Delivery { hook, body, key: Some(key), queued_ms: Some(shared::now_ms()) }).expect("delivery serializes"))?;
        Ok(k)
    }

    /// Deliveries queued up to `k` are durable: send them.
    pub fn release(&self, k: u64) {
        self.released.fetch_max(k, Relaxed);
        self.notify.notify_one();
    }

    pub fn backlog(&self) -> usize {
        self.tree.len()
    }

    fn oldest(&self) -> Option<(sled::IVec, Delivery)> {
        let (k, v) = self.tree.first().ok()??;
        if u64::from_be_bytes(k.as_ref().try_into().ok()?) > self.released.load(Relaxed) {
            return None;
        }
        Some((k, serde_json::from_slice(&v).ok()?))
    }
}

/// Delivers in order, oldest first; a failing receiver holds back only the
/// deliveries behind it, retried after 0.5 s doubling up to 30 s.
///
/// In cluster mode only the speaker delivers (`crate::cluster::speaker`):
/// every collector queues the same alert changes, and a follower keeps its
/// copies `speaker::WITHHELD_FOR`, then lets them go undelivered (counted in
/// `withheld`). One that takes over delivers those queued since the last
/// speaker's last renewal, which nobody delivered.
pub async fn run(outbox: Arc<Outbox>, hooks: Vec<WebhookConfig>, mut speaking: crate::cluster::speaker::Speaking, mut shutdown: watch::Receiver<bool>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some((key, d)) = outbox.oldest() else {
            tokio::select! {
                _ = outbox.notify.notified() => continue,
                _ = shutdown.changed() => return,
            }
        };
        let turn = *speaking.borrow();
        // Queued before the time was kept: only whether we speak decides.
        let queued = d.queued_ms.unwrap_or(if turn.speaking { i64::MAX } else { i64::MIN });
        if !turn.speaking {
            let wait = queued.saturating_add(crate::cluster::speaker::WITHHELD_FOR.as_millis() as i64) - shared::now_ms();
            if wait > 0 {
                // Kept in case this collector takes over; the turn changing ends the wait.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    _ = speaking.changed() => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
        }
        if !turn.speaking || queued < turn.from_ms {
            let _ = outbox.tree.remove(&key);
            outbox.withheld.fetch_add(1, Relaxed);
            continue;
        }
        let Some(hook) = hooks.get(d.hook) else {
            // The config no longer has this webhook: nothing to deliver it to.
            let _ = outbox.tree.remove(&key);
            continue;
        };
        let mut req = hyper::Request::post(&hook.url).header("content-type", "application/json");
        if let Some(k) = &d.key {
            req = req.header("idempotency-key", k);
        }
        let req = req.body(Full::new(Bytes::from(d.body)));
        let outcome = match req {
            Ok(req) => match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 10 s".into()),
            },
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                let _ = outbox.tree.remove(&key);
                outbox.delivered.fetch_add(1, Relaxed);
                backoff = Duration::from_millis(500);
            }
            Err(e) => {
                outbox.failures.fetch_add(1, Relaxed);
                tracing::warn!(url = %hook.url, backlog = outbox.backlog(), "webhook delivery failed: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
