//! `[sta]`: the bounds of the SensorThings endpoint.

use std::time::Duration;

use serde::Deserialize;
use shared::config::{HumanDuration, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaConfig {
    /// A query that has not finished by then answers 503 saying so.
    #[serde(default = "default_deadline")]
    pub deadline: HumanDuration,
    /// Entities per page when the request gives no `$top`.
    #[serde(default = "default_top")]
    pub default_top: usize,
    /// The largest page; a larger `$top` gets this many and a nextLink.
    #[serde(default = "default_max_top")]
    pub max_top: usize,
    /// Observations ordered by anything but time are sorted in memory: at most this many.
    #[serde(default = "default_max_sort")]
    pub max_sort: usize,
    /// Requests per second served to callers without a token, all together.
    #[serde(default = "default_anonymous_rate")]
    pub anonymous_rate: u32,
}

fn default_deadline() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_top() -> usize {
    100
}
fn default_max_top() -> usize {
    10_000
}
fn default_max_sort() -> usize {
    100_000
}
fn default_anonymous_rate() -> u32 {
    50
}

impl Default for StaConfig {
    fn default() -> Self {
        StaConfig { deadline: default_deadline(), default_top: default_top(), max_top: default_max_top(), max_sort: default_max_sort(), anonymous_rate: default_anonymous_rate() }
    }
}

impl StaConfig {
    pub fn validate(&self, p: &mut Vec<Problem>) {
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&self.deadline.0) {
            p.push(Problem::new("sta.deadline", "must be between 100ms and 5m"));
        }
        if !(1..=100_000).contains(&self.max_top) {
            p.push(Problem::new("sta.max_top", "must be between 1 and 100000"));
        }
        if self.default_top == 0 || self.default_top > self.max_top {
            p.push(Problem::new("sta.default_top", format!("must be between 1 and sta.max_top ({})", self.max_top)));
        }
        if !(1_000..=10_000_000).contains(&self.max_sort) {
            p.push(Problem::new("sta.max_sort", "must be between 1000 and 10000000"));
        }
        if self.anonymous_rate == 0 {
            p.push(Problem::new("sta.anonymous_rate", "must be at least 1"));
        }
    }
}
