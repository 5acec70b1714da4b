//! Cluster mode: collectors behind a NATS broker cluster (deploy/nats).
//! Batches that agents publish over MQTT to any node land in a replicated
//! JetStream stream, the batch log, before anything depends on them. Every
//! collector reads the whole log into its own store (`log`, `applied`), so
//! each serves the whole city and none holds anything the others lack; one
//! of them at a time, the speaker, publishes to the world outside
//! (`speaker`); operators' handling of alerts is shared through a stream of
//! its own (`handling`).

pub mod applied;
pub mod handling;
pub mod log;
pub mod settings;
pub mod speaker;

pub use settings::ClusterConfig;

/// Between two attempts to reach the cluster: waits 2 s; false once `stop` says so.
pub(crate) async fn wait_to_retry(stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => true,
        _ = stop.changed() => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.nats: `{addr}` is not a NATS address: {reason}")]
    Address { addr: String, reason: String },
    #[error("{path}: {source}; it holds this collector's place in the batch log: delete it to read the whole log again (ingest deduplicates what the store has)")]
    Progress { path: std::path::PathBuf, source: std::io::Error },
    #[error("reading cluster.password_file {path}: {source}")]
    PasswordFile { path: std::path::PathBuf, source: std::io::Error },
}
