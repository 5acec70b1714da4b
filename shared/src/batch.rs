//! `Batch`: the unit an agent sends and the collector acknowledges, encoded with postcard.
//!
//! The encoding starts with the version as a postcard varint, so a decoder can
//! refuse a version it does not know before trying to read the rest.

use serde::{Deserialize, Serialize};

use crate::id::{GatewayId, Metric, SensorId, Seq};
use crate::Reading;

/// The batch layout this build writes and the only one it reads.
pub const BATCH_VERSION: u16 = 1;

/// Upper bound on readings in one batch, so that a hostile or broken sender
/// cannot make the collector allocate without limit.
pub const MAX_READINGS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub version: u16,
    pub gateway: GatewayId,
    /// The lowest `seq` the agent still held when it sent this batch: every
    /// earlier seq was either acknowledged or dropped by the agent's
    /// `when_full` policy. It lets the collector advance its ack over a gap the
    /// agent reported instead of waiting forever for readings that no longer exist.
    pub floor_seq: Seq,
    /// In strictly increasing `seq` order.
    pub readings: Vec<Reading>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    #[error("empty payload")]
    Empty,
    #[error("unknown batch version {0} (this build reads version {BATCH_VERSION})")]
    UnknownVersion(u16),
    #[error("undecodable batch: {0}")]
    Undecodable(String),
    #[error("batch has no gateway id")]
    NoGateway,
    #[error("batch has {0} readings, more than the limit of {MAX_READINGS}")]
    TooLarge(usize),
    #[error("readings out of seq order at index {index}: seq {seq} after {prev}")]
    OutOfOrder { index: usize, prev: Seq, seq: Seq },
    #[error("floor_seq {floor} is above the first reading's seq {first}")]
    FloorAboveFirst { floor: Seq, first: Seq },
    #[error("reading seq {seq} ({sensor}/{metric}) has a non-finite value")]
    NonFinite { seq: Seq, sensor: SensorId, metric: Metric },
}

impl Batch {
    pub fn new(gateway: impl Into<GatewayId>, floor_seq: impl Into<Seq>, readings: Vec<Reading>) -> Batch {
        Batch { version: BATCH_VERSION, gateway: gateway.into(), floor_seq: floor_seq.into(), readings }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a Batch always serializes")
    }

    /// Decodes and checks the invariants the collector relies on.
    pub fn decode(bytes: &[u8]) -> Result<Batch, BatchError> {
        if bytes.is_empty() {
            return Err(BatchError::Empty);
        }
        let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(|e| BatchError::Undecodable(format!("version: {e}")))?;
        if version != BATCH_VERSION {
            return Err(BatchError::UnknownVersion(version));
        }
        let batch: Batch = postcard::from_bytes(bytes).map_err(|e| BatchError::Undecodable(e.to_string()))?;
        batch.validate()?;
        Ok(batch)
    }

    fn validate(&self) -> Result<(), BatchError> {
        if self.gateway.is_empty() {
            return Err(BatchError::NoGateway);
        }
        if self.readings.len() > MAX_READINGS {
            return Err(BatchError::TooLarge(self.readings.len()));
        }
        if let Some(first) = self.readings.first() {
            if self.floor_seq > first.seq {
                return Err(BatchError::FloorAboveFirst { floor: self.floor_seq, first: first.seq });
            }
        }
        for (index, pair) in self.readings.windows(2).enumerate() {
            if pair[1].seq <= pair[0].seq {
                return Err(BatchError::OutOfOrder { index: index + 1, prev: pair[0].seq, seq: pair[1].seq });
            }
        }
        if let Some(r) = self.readings.iter().find(|r| !r.value.is_finite()) {
            return Err(BatchError::NonFinite { seq: r.seq, sensor: r.sensor.clone(), metric: r.metric.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quality;

    fn reading(seq: u64) -> Reading {
        Reading { seq: Seq(seq), sensor: "aq-001".into(), metric: "pm25".into(), ts_ms: 1_700_000_000_000 + seq as i64, value: 12.5 + seq as f64, quality: Quality::Good }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let batch = Batch::new("gw-river-01", 7, vec![reading(7), reading(8), reading(10)]);
        assert_eq!(Batch::decode(&batch.encode()).unwrap(), batch);
    }

    #[test]
    fn round_trip_of_an_empty_batch() {
        let batch = Batch::new("gw-1", 3, vec![]);
        assert_eq!(Batch::decode(&batch.encode()).unwrap(), batch);
    }

    #[test]
    fn unknown_version_is_rejected_by_number() {
        let mut batch = Batch::new("gw-1", 1, vec![reading(1)]);
        batch.version = 2;
        assert_eq!(Batch::decode(&batch.encode()), Err(BatchError::UnknownVersion(2)));
    }

    #[test]
    fn garbage_and_truncated_bytes_are_rejected() {
        assert_eq!(Batch::decode(&[]), Err(BatchError::Empty));
        assert!(matches!(Batch::decode(b"\x01\xff\xff\xff\xff\xff"), Err(BatchError::Undecodable(_))));
        let bytes = Batch::new("gw-1", 1, vec![reading(1), reading(2)]).encode();
        for cut in 1..bytes.len() {
            assert!(Batch::decode(&bytes[..cut]).is_err(), "truncated at {cut} decoded");
        }
        assert!(matches!(Batch::decode(b"{\"gateway\":\"x\"}"), Err(BatchError::UnknownVersion(_) | BatchError::Undecodable(_))));
    }

    #[test]
    fn out_of_order_or_non_finite_readings_are_rejected() {
        let batch = Batch::new("gw-1", 1, vec![reading(2), reading(2)]);
        assert!(matches!(Batch::decode(&batch.encode()), Err(BatchError::OutOfOrder { .. })));
        let mut bad = reading(3);
        bad.value = f64::NAN;
        let batch = Batch::new("gw-1", 1, vec![bad]);
        assert!(matches!(Batch::decode(&batch.encode()), Err(BatchError::NonFinite { .. })));
        let batch = Batch::new("", 1, vec![]);
        assert_eq!(Batch::decode(&batch.encode()), Err(BatchError::NoGateway));
        let batch = Batch::new("gw", 9, vec![reading(3)]);
        assert!(matches!(Batch::decode(&batch.encode()), Err(BatchError::FloorAboveFirst { .. })));
    }
}
