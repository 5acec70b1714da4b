//! `Batch`: the unit an agent sends and the collector acknowledges, encoded with postcard.
//!
//! The encoding starts with the version as a postcard varint, so a decoder can
//! refuse a version it does not know before trying to read the rest.
//!
//! Version 2 added `epoch`, the outbox's sequence space: a fresh outbox (new
//! hardware, a deleted buffer) starts its seqs again at 1 in a new epoch
//! instead of colliding with the seqs the collector already holds. Version 1
//! batches are still read, as epoch 0. Version 2 also carries `sent_ms`, the
//! sender's clock at sending, from which the collector measures the gateway's
//! clock offset (version 1: unknown, 0).

use serde::{Deserialize, Serialize};

use crate::id::{GatewayId, Metric, SensorId, Seq};
use crate::Reading;

/// The batch layout this build writes.
pub const BATCH_VERSION: u16 = 2;

/// Upper bound on readings in one batch, so that a hostile or broken sender
/// cannot make the collector allocate without limit.
pub const MAX_READINGS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub version: u16,
    pub gateway: GatewayId,
    /// The sequence space of the outbox that numbered the readings; 0 for
    /// outboxes made before epochs existed.
    pub epoch: u64,
    /// The lowest `seq` the agent still held when it sent this batch: every
    /// earlier seq was either acknowledged or dropped by the agent's
    /// `when_full` policy. It lets the collector advance its ack over a gap the
    /// agent reported instead of waiting forever for readings that no longer exist.
    pub floor_seq: Seq,
    /// In strictly increasing `seq` order.
    pub readings: Vec<Reading>,
    /// The sender's clock when it sent the batch (ms since the Unix epoch;
    /// 0 when unknown, as in version 1). The collector's receive time minus
    /// this is the gateway's clock offset (plus the transit time).
    pub sent_ms: i64,
}

/// The version 1 layout, read for agents that predate epochs.
#[derive(Deserialize)]
struct BatchV1 {
    #[allow(dead_code)]
    version: u16,
    gateway: GatewayId,
    floor_seq: Seq,
    readings: Vec<Reading>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    #[error("empty payload")]
    Empty,
    #[error("unknown batch version {0} (this build reads versions 1 and {BATCH_VERSION})")]
    UnknownVersion(u16),
    #[error("undecodable batch: {0}")]
    Undecodable(String),
    #[error("batch has no gateway id")]
    NoGateway,
    #[error("batch has no readings")]
    NoReadings,
    #[error("seq 0 is not a seq (outboxes number readings from 1)")]
    SeqZero,
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
        Batch { version: BATCH_VERSION, gateway: gateway.into(), epoch: 0, floor_seq: floor_seq.into(), readings, sent_ms: crate::now_ms() }
    }

    /// The same batch, sent at `ms` by the sender's clock.
    pub fn sent_at(mut self, ms: i64) -> Batch {
        self.sent_ms = ms;
        self
    }

    /// The same batch in outbox epoch `epoch`.
    pub fn in_epoch(mut self, epoch: u64) -> Batch {
        self.epoch = epoch;
        self
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
        let undecodable = |e: postcard::Error| BatchError::Undecodable(e.to_string());
        let batch: Batch = match version {
            1 => {
                let v1: BatchV1 = postcard::from_bytes(bytes).map_err(undecodable)?;
                Batch { version: 1, gateway: v1.gateway, epoch: 0, floor_seq: v1.floor_seq, readings: v1.readings, sent_ms: 0 }
            }
            BATCH_VERSION => postcard::from_bytes(bytes).map_err(undecodable)?,
            v => return Err(BatchError::UnknownVersion(v)),
        };
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
        // An empty batch carries nothing to store; all it could do is move
        // the floor, which only readings at or above it may.
        let Some(first) = self.readings.first() else { return Err(BatchError::NoReadings) };
        if self.floor_seq > first.seq {
            return Err(BatchError::FloorAboveFirst { floor: self.floor_seq, first: first.seq });
        }
        if self.floor_seq == Seq::ZERO || first.seq == Seq::ZERO {
            return Err(BatchError::SeqZero);
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
    fn an_empty_batch_or_seq_zero_is_refused() {
        assert_eq!(Batch::decode(&Batch::new("gw-1", 3, vec![]).encode()), Err(BatchError::NoReadings));
        assert_eq!(Batch::decode(&Batch::new("gw-1", 0, vec![reading(0)]).encode()), Err(BatchError::SeqZero));
    }

    #[test]
    fn unknown_version_is_rejected_by_number() {
        let mut batch = Batch::new("gw-1", 1, vec![reading(1)]);
        batch.version = 3;
        assert_eq!(Batch::decode(&batch.encode()), Err(BatchError::UnknownVersion(3)));
    }

    #[test]
    fn a_version_1_batch_reads_as_epoch_0() {
        #[derive(Serialize)]
        struct V1<'a> {
            version: u16,
            gateway: &'a str,
            floor_seq: u64,
            readings: Vec<Reading>,
        }
        let bytes = postcard::to_allocvec(&V1 { version: 1, gateway: "gw-1", floor_seq: 1, readings: vec![reading(1), reading(2)] }).unwrap();
        let b = Batch::decode(&bytes).unwrap();
        assert_eq!((b.version, b.epoch, b.gateway.as_str(), b.readings.len(), b.sent_ms), (1, 0, "gw-1", 2, 0));
        let v2 = Batch::new("gw-1", 1, vec![reading(1)]).in_epoch(77);
        assert_eq!(Batch::decode(&v2.encode()).unwrap().epoch, 77);
        assert_eq!(Batch::decode(&v2.sent_at(4_102_444_800_000).encode()).unwrap().sent_ms, 4_102_444_800_000);
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
