//! `[ingest]`: how far one batch may move a gateway's sequence.

use serde::Deserialize;
use shared::config::Problem;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Readings one batch may move its sequence past the ack at once, on top
    /// of `mqtt.gateway_rate` for every second since the gateway was last
    /// heard. Room for a full agent buffer dropped under `drop_oldest`; a
    /// batch beyond it is refused (`seq_jump`) and left unacknowledged.
    #[serde(default = "default_seq_jump_slack")]
    pub seq_jump_slack: u64,
    /// `[ingest.clock]`: what is done with readings whose time cannot be right.
    #[serde(default)]
    pub clock: super::clock::ClockConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { seq_jump_slack: default_seq_jump_slack(), clock: Default::default() }
    }
}

fn default_seq_jump_slack() -> u64 {
    50_000_000
}

impl IngestConfig {
    pub fn validate(&self, p: &mut Vec<Problem>) {
        if self.seq_jump_slack < 100_000 {
            p.push(Problem::new("ingest.seq_jump_slack", "must be at least 100000 (an agent sends batches of up to 10000 readings)"));
        }
        self.clock.validate(p);
    }
}
