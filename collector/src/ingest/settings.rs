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
    /// Readings admitted and not yet committed, at most. Admission waits for
    /// room beyond it, so a disk that stalls holds back the broker, not the
    /// collector's memory (some 100-150 bytes a reading, batches and all).
    /// Admitted readings reach the rules at once, so this is also how long
    /// a store write may stall before alerts wait for it. From 1,000
    /// gateways paced at 500k/s, whose upkeep passes hold writes off for
    /// about 3 s each: alert p99 0.82-0.98 s at 262,144; 1.2-1.6 s at 1M
    /// (0.24-0.32 s on another machine), 388k-431k readings/s; 0.25-0.28 s
    /// at 4M (8 s of that city), 464k-489k/s.
    #[serde(default = "default_in_flight_readings")]
    pub in_flight_readings: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { seq_jump_slack: default_seq_jump_slack(), clock: Default::default(), in_flight_readings: default_in_flight_readings() }
    }
}

fn default_seq_jump_slack() -> u64 {
    50_000_000
}

fn default_in_flight_readings() -> usize {
    1 << 22
}

/// A batch larger than the room takes all of it, so any room works; below
/// this, ingest would commit little more than one batch at a time.
const MIN_IN_FLIGHT_READINGS: usize = 1_000;

impl IngestConfig {
    pub fn validate(&self, p: &mut Vec<Problem>) {
        if self.seq_jump_slack < 100_000 {
            p.push(Problem::new("ingest.seq_jump_slack", "must be at least 100000 (an agent sends batches of up to 10000 readings)"));
        }
        if self.in_flight_readings < MIN_IN_FLIGHT_READINGS {
            p.push(Problem::new("ingest.in_flight_readings", format!("must be at least {MIN_IN_FLIGHT_READINGS}")));
        }
        self.clock.validate(p);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::CollectorConfig;

    fn check(ingest: &str) -> Result<CollectorConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[ingest]\n{ingest}\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n", dir.path().join("store").display());
        shared::config::parse::<CollectorConfig>("collector.toml", &text, dir.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn room_in_flight_defaults_to_four_million_readings_and_refuses_too_little() {
        assert_eq!(check("").unwrap().ingest.in_flight_readings, 1 << 22);
        assert_eq!(check("in_flight_readings = 1048576").unwrap().ingest.in_flight_readings, 1 << 20);
        let e = check("in_flight_readings = 999").unwrap_err();
        assert!(e.contains("ingest.in_flight_readings: must be at least 1000"), "{e}");
    }
}
