//! Cluster mode: the collector behind a NATS broker cluster (deploy/nats).
//! Batches that agents publish over MQTT to any node land in a replicated
//! JetStream stream, the batch log, before anything depends on them; the
//! collector reads them from the log and lets each go only once ingest has
//! stored and synced it (or refused it for good). A collector that is down
//! or restarting therefore misses nothing the log holds, and does not need
//! its agents to resend.
//!
//! One collector reads the log for now; several collectors sharing the
//! gateways, with their progress and alert state in the cluster, are the next
//! step (issue 17).

pub mod log;
pub mod settings;

pub use settings::ClusterConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.nats: `{addr}` is not a NATS address: {reason}")]
    Address { addr: String, reason: String },
    #[error("reading cluster.password_file {path}: {source}")]
    PasswordFile { path: std::path::PathBuf, source: std::io::Error },
}
