//! `[cluster]`: where the broker cluster's NATS listeners are and how long
//! its batch log keeps batches.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shared::config::{HumanDuration, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS client addresses of the cluster's nodes (`nats://HOST:4222`).
    #[serde(deserialize_with = "shared::config::one_or_many")]
    pub nats: Vec<String>,
    /// The NATS login; by default the collector's MQTT login (`mqtt.username`,
    /// `mqtt.password_file`), which the cluster's users.conf holds.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Nodes that keep a copy of each batch: 3 in a 3-node cluster, so any one may die.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long the log keeps a batch after it arrived, processed or not:
    /// the longest collector outage it bridges without the agents' help.
    #[serde(default = "default_keep")]
    pub keep: HumanDuration,
}

fn default_replicas() -> usize {
    3
}

fn default_keep() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}

impl ClusterConfig {
    pub fn validate(&self, external: bool, p: &mut Vec<Problem>) {
        for (i, a) in self.nats.iter().enumerate() {
            if let Err(e) = a.parse::<async_nats::ServerAddr>() {
                p.push(Problem::new(format!("cluster.nats[{i}]"), format!("`{a}` is not a NATS address (nats://HOST:PORT): {e}")));
            }
        }
        if !(1..=5).contains(&self.replicas) {
            p.push(Problem::new("cluster.replicas", format!("{} copies: JetStream keeps 1 to 5 (3 in a 3-node cluster)", self.replicas)));
        }
        if !external {
            p.push(Problem::new("cluster", "cluster mode needs mqtt.external: the MQTT addresses of the same cluster's nodes, which agents publish to"));
        }
        if self.username.is_some() != self.password_file.is_some() {
            p.push(Problem::new("cluster.username", "give both `username` and `password_file`, or neither (then mqtt's login is used)"));
        }
    }
}
