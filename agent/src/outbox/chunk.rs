//! The chunk codec: how readings are packed into sled entries. It exists
//! because sled spends about 1.4 KB of memory per entry under a backlog
//! (measured: a million one-reading entries held 1.4 GB with a 16 MiB cache),
//! so one entry per reading would let an outage grow the agent to gigabytes.
//! Readings are stored in chunks of up to `CHUNK` consecutive seqs, keyed by the
//! first seq; the value is a postcard `Vec<Record>` (a varint count, then the
//! records), and a reading's `seq` follows from its place in the chunk.

use std::path::Path;

use serde::{Deserialize, Serialize};
use shared::Quality;

use super::OutboxError;
use crate::source::NewReading;

/// Readings per sled entry, at most.
pub(super) const CHUNK: usize = 1024;

/// The stored form of one reading: `seq` follows from its place in a chunk.
#[derive(Serialize, Deserialize)]
pub(super) struct Record<'a> {
    pub sensor: &'a str,
    pub metric: &'a str,
    pub ts_ms: i64,
    pub value: f64,
    pub quality: Quality,
}

/// A chunk's key: its first seq, big-endian so that chunks sort by seq.
pub(super) fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(super) fn seq_of(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().unwrap_or([0; 8]))
}

/// One reading as it will sit inside a chunk.
pub(super) fn encode(r: &NewReading) -> Vec<u8> {
    let rec = Record { sensor: &r.sensor, metric: &r.metric, ts_ms: r.ts_ms, value: r.value, quality: r.quality };
    postcard::to_allocvec(&rec).expect("a record always serializes")
}

/// A chunk's value from its records: the same bytes as a postcard `Vec<Record>`.
pub(super) fn chunk_value<'a>(records: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut v = postcard::to_allocvec(&(records.len() as u64)).expect("a count always serializes");
    records.for_each(|r| v.extend_from_slice(r));
    v
}

pub(super) fn decode_chunk<'a>(path: &Path, first: u64, v: &'a [u8]) -> Result<Vec<Record<'a>>, OutboxError> {
    postcard::from_bytes(v).map_err(|e| OutboxError::Corrupt { path: path.to_path_buf(), seq: first, detail: e.to_string() })
}

/// How many readings a chunk holds, read from its head alone.
pub(super) fn chunk_count(v: &[u8]) -> Option<u64> {
    postcard::take_from_bytes::<u64>(v).ok().map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_decodes_to_its_records_in_order_and_its_count_reads_from_the_head() {
        let readings: Vec<NewReading> =
            (0..3).map(|i| NewReading { sensor: "wl-01".into(), metric: "water_level_m".into(), ts_ms: i, value: i as f64 / 2.0, quality: Quality::Good }).collect();
        let encoded: Vec<Vec<u8>> = readings.iter().map(encode).collect();
        let value = chunk_value(encoded.iter().map(Vec::as_slice));
        assert_eq!(chunk_count(&value), Some(3));
        let records = decode_chunk(Path::new("x"), 7, &value).unwrap();
        assert_eq!(records.iter().map(|r| (r.ts_ms, r.value)).collect::<Vec<_>>(), vec![(0, 0.0), (1, 0.5), (2, 1.0)]);
        assert!(matches!(decode_chunk(Path::new("x"), 7, &value[..value.len() - 1]), Err(OutboxError::Corrupt { seq: 7, .. })));
        assert_eq!(seq_of(&key(1 << 40)), 1 << 40);
    }
}
