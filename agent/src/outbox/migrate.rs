//! The first on-disk format kept one reading per sled entry; this converts such
//! a store to chunks when it is opened, in one atomic batch, so an agent
//! upgraded with a backlog keeps every reading and its seq. It exists apart
//! from the engine because it is the only code that knows the old layout.

use super::chunk::{chunk_value, key, seq_of, CHUNK};
use super::watermark::{read_u64, META_START};

/// Present once the store holds chunks; a store without it holding readings
/// was written one reading per entry and is converted when opened.
pub(super) const META_FORMAT: &[u8] = &[0xFF, b'f'];
pub(super) const FORMAT_CHUNKS: u64 = 2;

/// Converts the store to chunks unless it already is.
pub(super) fn ensure_chunks(tree: &sled::Tree) -> sled::Result<()> {
    if read_u64(tree, META_FORMAT)? == FORMAT_CHUNKS {
        return Ok(());
    }
    convert_to_chunks(tree)
}

/// Rewrites a store kept one reading per entry (the first format) as chunks.
fn convert_to_chunks(tree: &sled::Tree) -> sled::Result<()> {
    let mut batch = sled::Batch::default();
    let mut run: Vec<(u64, sled::IVec)> = Vec::new();
    let write_run = |run: &mut Vec<(u64, sled::IVec)>, batch: &mut sled::Batch| {
        if let Some((first, _)) = run.first() {
            batch.insert(&key(*first), chunk_value(run.iter().map(|(_, v)| v.as_ref())));
        }
        run.clear();
    };
    for item in tree.range(..META_START) {
        let (k, v) = item?;
        let seq = seq_of(&k);
        batch.remove(k);
        if run.len() == CHUNK || run.last().is_some_and(|(last, _)| last + 1 != seq) {
            write_run(&mut run, &mut batch);
        }
        run.push((seq, v));
    }
    write_run(&mut run, &mut batch);
    batch.insert(META_FORMAT, &FORMAT_CHUNKS.to_be_bytes());
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use shared::Quality;

    use super::super::chunk::Record;
    use super::super::watermark::META_ACKED;
    use super::super::{Outbox, SledOutbox};
    use super::*;
    use crate::config::WhenFull;

    #[test]
    fn a_store_kept_one_reading_per_entry_is_converted_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        {
            // No background flusher thread: it would hold sled's lock past this block.
            let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open().unwrap();
            let tree = db.open_tree("outbox").unwrap();
            for seq in 3..=2000u64 {
                let rec = Record { sensor: "wl-01", metric: "water_level_m", ts_ms: seq as i64, value: seq as f64, quality: Quality::Good };
                tree.insert(key(seq), postcard::to_allocvec(&rec).unwrap()).unwrap();
            }
            tree.remove(key(100)).unwrap();
            tree.insert(META_ACKED, &2u64.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let ob = SledOutbox::open(dir.path(), 64 << 20, WhenFull::DropOldest).unwrap();
        let s = ob.stats();
        assert_eq!((s.depth, s.floor_seq, s.next_seq), (1997, 3, 2001));
        let all = ob.read(0, 5000, 5000).unwrap();
        assert_eq!(all.len(), 1997);
        assert!(all.iter().all(|r| r.value == r.seq.get() as f64 && r.seq != 100));
    }
}
