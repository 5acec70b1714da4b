//! Cluster mode: collectors behind a NATS broker cluster (deploy/nats).
//! Batches that agents publish over MQTT to any node land in a replicated
//! JetStream stream, the batch log, before anything depends on them. Every
//! collector reads the whole log into its own store (`log`, `applied`), so
//! each serves the whole city and none holds anything the others lack; one
//! of them at a time, the speaker, publishes to the world outside
//! (`speaker`); operators' handling of alerts is shared through a stream of
//! its own (`handling`). With the log split into partitions, collectors
//! share the work instead: each reads the partitions it holds
//! (`partition`, `assignment`) and publishes what it processed; each shares
//! its live view with the others (`view`) and answers for its share of the
//! history (`history`), so every one still serves the whole city.

pub mod alerts;
pub mod applied;
pub mod assignment;
pub mod bindings;
pub mod bucket;
pub mod handling;
pub mod history;
pub mod holdings;
pub mod log;
pub mod partition;
pub mod progress;
pub mod settings;
pub mod speaker;
pub mod view;

pub use settings::ClusterConfig;

/// Awaits `attempt` (a future made anew each time) until it ends well or
/// `stop` (a `watch::Receiver<bool>`) says so; after each failure, logged as
/// `what`, waits 2 s and makes it again. A macro, not a function: the
/// attempt borrows its task's state mutably, afresh each time, and an async
/// closure doing so is not `Send` for `tokio::spawn`.
macro_rules! keep_trying {
    ($what:expr, $stop:expr, $attempt:expr) => {
        loop {
            let outcome = tokio::select! {
                r = $attempt => r,
                _ = $stop.changed() => break,
            };
            match outcome {
                Ok(()) => break,
                Err(e) => tracing::warn!("{}: {e}; trying again in 2 s", $what),
            }
            if !$crate::cluster::wait_to_retry(&mut $stop).await {
                break;
            }
        }
    };
}
pub(crate) use keep_trying;

/// Between two attempts to reach the cluster: waits 2 s; false once `stop` says so.
pub(crate) async fn wait_to_retry(stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => true,
        _ = stop.changed() => false,
    }
}

/// The cluster's leases (the speaker, partitions, members): each key gone
/// `speaker::LEASE` after its holder's last renewal.
pub(crate) async fn leases(js: &async_nats::jetstream::Context, link: &log::Link) -> Result<async_nats::jetstream::kv::Store, async_nats::Error> {
    use async_nats::jetstream::kv;
    Ok(match js.get_key_value(speaker::BUCKET).await {
        Ok(s) => s,
        Err(_) => {
            js.create_key_value(kv::Config { bucket: speaker::BUCKET.into(), history: 1, max_age: speaker::LEASE, num_replicas: link.replicas(), ..Default::default() }).await?
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.nats: `{addr}` is not a NATS address: {reason}")]
    Address { addr: String, reason: String },
    #[error("{path}: {source}; it holds this collector's place in the batch log: delete it to read the whole log again (ingest deduplicates what the store has)")]
    Progress { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot reach the cluster (cluster.nats): {0}")]
    Connect(String),
    #[error("reading cluster.password_file {path}: {source}")]
    PasswordFile { path: std::path::PathBuf, source: std::io::Error },
}
