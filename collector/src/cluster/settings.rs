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
    /// This collector's name in the cluster (logs, the speaker lease, NATS's
    /// monitoring); by default the host's name.
    pub name: Option<String>,
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
    /// 0 (the default): every collector reads the whole log and stores the
    /// whole city. N: the log is split by gateway into N partitions, and each
    /// partition is read by one collector at a time (`super::assignment`):
    /// the collectors share the work. The same on every collector; fixed for
    /// the life of the log (a gateway's partition is its id's hash modulo N).
    #[serde(default)]
    pub partitions: u32,
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn default_replicas() -> usize {
    3
}

fn default_keep() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}

impl ClusterConfig {
    /// `name`, or the host's name with what a consumer name cannot hold as `-`.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let host: String = host.trim().chars().take(64).map(|c| if name_char(c) { c } else { '-' }).collect();
            if host.is_empty() {
                "collector".into()
            } else {
                host
            }
        })
    }

    pub fn validate(&self, external: bool, p: &mut Vec<Problem>) {
        for (i, a) in self.nats.iter().enumerate() {
            if let Err(e) = a.parse::<async_nats::ServerAddr>() {
                p.push(Problem::new(format!("cluster.nats[{i}]"), format!("`{a}` is not a NATS address (nats://HOST:PORT): {e}")));
            }
        }
        if let Some(n) = &self.name {
            if n.is_empty() || n.len() > 64 || !n.chars().all(name_char) {
                p.push(Problem::new("cluster.name", format!("`{n}`: 1 to 64 of A-Z a-z 0-9 - _ (it names the collector's consumer in the cluster)")));
            }
        }
        if !(1..=5).contains(&self.replicas) {
            p.push(Problem::new("cluster.replicas", format!("{} copies: JetStream keeps 1 to 5 (3 in a 3-node cluster)", self.replicas)));
        }
        if self.partitions > super::partition::MAX {
            p.push(Problem::new(
                "cluster.partitions",
                format!("{}: at most {} (a few per collector is enough; 0 = every collector reads everything)", self.partitions, super::partition::MAX),
            ));
        }
        if !external {
            p.push(Problem::new("cluster", "cluster mode needs mqtt.external: the MQTT addresses of the same cluster's nodes, which agents publish to"));
        }
        if self.username.is_some() != self.password_file.is_some() {
            p.push(Problem::new("cluster.username", "give both `username` and `password_file`, or neither (then mqtt's login is used)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ClusterConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_name_a_consumer_cannot_carry_and_other_mistakes_are_refused_naming_the_field() {
        let mut p = Vec::new();
        config("nats = \"nats://n1:4222\"\nname = \"collector.1\"\n").validate(true, &mut p);
        config("nats = [\"nats://n1:4222\", \"n2 :x\"]\nreplicas = 7\n").validate(true, &mut p);
        config("nats = \"nats://n1:4222\"\nusername = \"c\"\n").validate(false, &mut p);
        config("nats = \"nats://n1:4222\"\npartitions = 5000\n").validate(true, &mut p);
        let fields: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(fields, ["cluster.name", "cluster.nats[1]", "cluster.replicas", "cluster", "cluster.username", "cluster.partitions"], "{p:?}");
        assert!(p[0].message.contains("collector.1"), "{}", p[0].message);
        let mut none = Vec::new();
        let ok = config("nats = \"nats://n1:4222\"\nname = \"collector-1\"\n");
        ok.validate(true, &mut none);
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(ok.name(), "collector-1");
        // Without one, the host's name, made fit to name a consumer.
        let host = config("nats = \"nats://n1:4222\"\n").name();
        assert!(!host.is_empty() && host.chars().all(name_char), "{host}");
    }
}
