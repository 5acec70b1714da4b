//! `SledOutbox`: the `Outbox` on the sled engine. It exists to keep the
//! in-memory index and sled in step under concurrent callers (intake appends,
//! the flusher flushes, the uplink reads and acks) and to recover from a
//! storage error by reopening the store without losing a seq. Policy lives
//! here too: `buffer.max_bytes` with `drop_oldest` or `stop_polling`.
//! Just over 400 lines only because its tests sit beside it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use shared::Reading;

use super::chunk::encode;
use super::engine::{load, Engine};
use super::index::{Pending, State};
use super::watermark::{MarkFile, Watermark};
use super::{Appended, Outbox, OutboxError, OutboxStats};
use crate::config::WhenFull;
use crate::source::NewReading;

pub struct SledOutbox {
    path: PathBuf,
    max_bytes: u64,
    when_full: WhenFull,
    /// Serialises flushes with each other and with a reopen. Lock order:
    /// `flushing`, then `state`, then `engine`.
    flushing: Mutex<()>,
    state: Mutex<State>,
    /// None only for the instant of a reopen.
    engine: RwLock<Option<Engine>>,
    /// Set by an I/O error: sled stays failed after one (a full disk, say) even
    /// once space returns, so the next call reopens it from disk.
    broken: AtomicBool,
    /// The watermark file, and the value last written to it (so an idle
    /// agent does not rewrite it).
    mark_file: MarkFile,
    last_mark: Mutex<Option<Watermark>>,
}

impl SledOutbox {
    pub fn open(path: &Path, max_bytes: u64, when_full: WhenFull) -> Result<SledOutbox, OutboxError> {
        let (engine, state) = load(path)?;
        let first = Watermark { next_seq: state.next_seq, durable: state.durable, acked: state.acked, epoch: state.epoch };
        let mark_file = MarkFile::open(path, first).map_err(|e| OutboxError::Io { path: path.to_path_buf(), source: sled::Error::Io(e) })?;
        Ok(SledOutbox {
            path: path.to_path_buf(),
            max_bytes,
            when_full,
            flushing: Mutex::new(()),
            state: Mutex::new(state),
            engine: RwLock::new(Some(engine)),
            broken: AtomicBool::new(false),
            mark_file,
            last_mark: Mutex::new(None),
        })
    }

    /// Maps a sled error, marking the engine for a reopen when it is an I/O one.
    fn io(&self, source: sled::Error) -> OutboxError {
        if matches!(source, sled::Error::Io(_)) {
            self.broken.store(true, Ordering::SeqCst);
        }
        OutboxError::Io { path: self.path.clone(), source }
    }

    /// Reopens sled after an I/O error. What is on disk is kept; readings still
    /// waiting for a flush keep their seqs (none of them was ever sent).
    fn ensure_open(&self) -> Result<(), OutboxError> {
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _flushing = self.flushing.lock().unwrap();
        let mut st = self.state.lock().unwrap();
        let mut engine = self.engine.write().unwrap();
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        // sled locks its files: the failed instance must be gone before the new one opens.
        *engine = None;
        let (fresh, mut disk) = load(&self.path)?;
        let on_disk = disk.next_seq - 1;
        disk.unflushed = std::mem::take(&mut st.unflushed).into_iter().filter(|p| p.seq > on_disk).collect();
        disk.next_seq = disk.next_seq.max(st.next_seq);
        disk.dropped_total = disk.dropped_total.max(st.dropped_total);
        let acked = st.acked.max(disk.acked);
        *st = disk;
        st.unsynced = true;
        *self.last_mark.lock().unwrap() = None;
        self.broken.store(false, Ordering::SeqCst);
        let result = if acked > st.acked { self.ack_locked(&mut st, &fresh, acked) } else { Ok(()) };
        st.recount();
        fresh.refresh_oldest(&self.path, &mut st);
        *engine = Some(fresh);
        tracing::warn!(path = %self.path.display(), next_seq = st.next_seq, pending = st.unflushed.len(), "outbox reopened after a storage error");
        result
    }

    fn engine(&self) -> std::sync::RwLockReadGuard<'_, Option<Engine>> {
        self.engine.read().unwrap()
    }

    /// Removes the oldest readings until `need` more bytes fit, stored chunks
    /// first, then pending ones; returns how many.
    fn drop_oldest(&self, e: &Engine, st: &mut State, need: u64) -> Result<u64, OutboxError> {
        let mut dropped = 0u64;
        let mut doomed = Vec::new();
        let mut bytes = st.bytes;
        for (first, c) in &st.chunks {
            if bytes + need <= self.max_bytes {
                break;
            }
            bytes -= c.bytes;
            dropped += c.held(*first, st.acked);
            doomed.push(*first);
        }
        if !doomed.is_empty() {
            e.drop_chunks(&doomed, st.dropped_total + dropped, st.durable + 1).map_err(|e| self.io(e))?;
            st.unsynced = true;
            for first in doomed {
                st.chunks.remove(&first);
            }
        }
        while bytes + need > self.max_bytes {
            let Some(p) = st.unflushed.pop_front() else { break };
            bytes -= p.bytes();
            dropped += 1;
        }
        st.dropped_total += dropped;
        st.unsynced |= dropped > 0;
        st.depth -= dropped;
        st.bytes = bytes;
        if dropped > 0 {
            e.refresh_oldest(&self.path, st);
        }
        Ok(dropped)
    }

    /// Deletes what `upto` acknowledges, under the state lock.
    fn ack_locked(&self, st: &mut State, e: &Engine, upto: u64) -> Result<(), OutboxError> {
        let mut gone = Vec::new();
        let mut held_before = 0;
        let mut held_after = 0;
        for (first, c) in st.chunks.range(..=upto) {
            held_before += c.held(*first, st.acked);
            held_after += c.held(*first, upto);
            if c.held(*first, upto) == 0 {
                gone.push(*first);
            }
        }
        e.ack(&gone, upto).map_err(|e| self.io(e))?;
        st.unsynced = true;
        for first in gone {
            st.bytes -= st.chunks.remove(&first).map(|c| c.bytes).unwrap_or(0);
        }
        st.acked = upto;
        st.depth -= held_before - held_after;
        e.refresh_oldest(&self.path, st);
        Ok(())
    }
}

impl Outbox for SledOutbox {
    fn append(&self, readings: Vec<NewReading>) -> Result<Appended, OutboxError> {
        self.ensure_open()?;
        let mut out = Appended::default();
        let encoded: Vec<(i64, Vec<u8>)> = readings.iter().map(|r| (r.ts_ms, encode(r))).collect();
        let need: u64 = encoded.iter().map(|(_, v)| v.len() as u64).sum();
        let mut st = self.state.lock().unwrap();
        if st.bytes + need > self.max_bytes {
            match self.when_full {
                WhenFull::DropOldest => {
                    let guard = self.engine();
                    let e = guard.as_ref().expect("engine present outside a reopen");
                    out.dropped = self.drop_oldest(e, &mut st, need)?;
                }
                WhenFull::StopPolling => {
                    out.refused = readings.len() as u64;
                    st.dropped_total += out.refused;
                    st.unsynced = true;
                    return Ok(out);
                }
            }
        }
        let was_empty = st.depth == 0;
        for (ts_ms, record) in encoded {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.unflushed.push_back(Pending { seq, ts_ms, record });
        }
        out.stored = readings.len() as u64;
        out.last_seq = st.next_seq - 1;
        st.depth += out.stored;
        st.bytes += need;
        if was_empty {
            st.oldest_ts_ms = st.unflushed.front().map(|p| p.ts_ms);
        }
        Ok(out)
    }

    fn flush(&self) -> Result<u64, OutboxError> {
        self.ensure_open()?;
        let _flushing = self.flushing.lock().unwrap();
        // Pending readings leave the state while they are written and come back
        // if the write fails; `flushing` keeps a reopen from happening meanwhile.
        let (pending, upto, acked, dropped_total, epoch) = {
            let mut st = self.state.lock().unwrap();
            if st.unflushed.is_empty() && !st.unsynced {
                // Nothing new since the last flush: no write, no fsync.
                return Ok(st.durable);
            }
            st.unsynced = false;
            (std::mem::take(&mut st.unflushed), st.next_seq - 1, st.acked, st.dropped_total, st.epoch)
        };
        let result = {
            let guard = self.engine();
            let e = guard.as_ref().expect("engine present outside a reopen");
            e.write(&pending, dropped_total, upto + 1).map_err(|err| self.io(err))
        };
        let mut st = self.state.lock().unwrap();
        let written = match result {
            Ok(written) => written,
            Err(err) => {
                let mut back = pending;
                back.append(&mut st.unflushed);
                st.unflushed = back;
                st.unsynced = true;
                return Err(err);
            }
        };
        // Readings acked while this flush ran (none can be: only durable ones are
        // sent) or dropped from the index meanwhile keep their accounting as is.
        for (first, meta) in written {
            st.bytes += meta.bytes;
            st.chunks.insert(first, meta);
        }
        st.bytes -= pending.iter().map(Pending::bytes).sum::<u64>();
        st.durable = st.durable.max(upto);
        drop(st);
        let mark = Watermark { next_seq: upto + 1, durable: upto, acked, epoch };
        if self.last_mark.lock().unwrap().replace(mark) != Some(mark) {
            if let Err(err) = self.mark_file.write(&mark) {
                *self.last_mark.lock().unwrap() = None;
                return Err(OutboxError::Io { path: self.path.clone(), source: sled::Error::Io(err) });
            }
        }
        Ok(upto)
    }

    fn read(&self, from: u64, upto: u64, max: usize) -> Result<Vec<Reading>, OutboxError> {
        self.ensure_open()?;
        let from = from.max(self.state.lock().unwrap().acked + 1);
        if from > upto {
            return Ok(Vec::new());
        }
        let guard = self.engine();
        let e = guard.as_ref().expect("engine present outside a reopen");
        e.read(&self.path, from, upto, max, |err| self.io(err))
    }

    fn ack(&self, upto: u64) -> Result<(), OutboxError> {
        self.ensure_open()?;
        let mut st = self.state.lock().unwrap();
        if upto <= st.acked {
            return Ok(());
        }
        let guard = self.engine();
        let e = guard.as_ref().expect("engine present outside a reopen");
        self.ack_locked(&mut st, e, upto)
    }

    fn stats(&self) -> OutboxStats {
        let st = self.state.lock().unwrap();
        let floor_seq = st.floor_seq();
        OutboxStats {
            depth: st.depth,
            bytes: st.bytes,
            max_bytes: self.max_bytes,
            floor_seq,
            epoch: st.epoch,
            acked: st.acked,
            next_seq: st.next_seq,
            durable: st.durable,
            dropped_total: st.dropped_total,
            oldest_ts_ms: if st.depth == 0 { None } else { st.oldest_ts_ms },
            full: st.bytes >= self.max_bytes.saturating_sub(self.max_bytes / 100),
            unflushed: st.unflushed.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use shared::Quality;

    use super::*;

    fn readings(n: usize, start_value: f64) -> Vec<NewReading> {
        (0..n)
            .map(|i| NewReading { sensor: "wl-01".into(), metric: "water_level_m".into(), ts_ms: 1_000 + i as i64, value: start_value + i as f64, quality: Quality::Good })
            .collect()
    }

    #[test]
    fn seqs_grow_and_acks_delete_only_up_to_the_acked_seq() {
        let dir = tempfile::tempdir().unwrap();
        let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
        assert_eq!(ob.append(readings(5, 0.0)).unwrap().stored, 5);
        assert_eq!(ob.flush().unwrap(), 5);
        let all = ob.read(1, 5, 100).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(all[3].value, 3.0);
        ob.ack(3).unwrap();
        let s = ob.stats();
        assert_eq!((s.depth, s.floor_seq, s.acked), (2, 4, 3));
        assert_eq!(ob.read(1, 100, 100).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn reopening_keeps_unacked_readings_and_never_reuses_an_acked_seq() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
            ob.append(readings(10, 0.0)).unwrap();
            ob.ack(10).unwrap();
            ob.append(readings(3, 100.0)).unwrap();
            assert_eq!(ob.flush().unwrap(), 13);
        }
        let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
        let left = ob.read(0, u64::MAX >> 8, 100).unwrap();
        assert_eq!(left.iter().map(|r| (r.seq.get(), r.value)).collect::<Vec<_>>(), vec![(11, 100.0), (12, 101.0), (13, 102.0)]);
        ob.ack(13).unwrap();
        ob.flush().unwrap();
        drop(ob);
        let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
        assert_eq!(ob.stats().next_seq, 14);
        assert_eq!(ob.append(readings(1, 0.0)).unwrap().stored, 1);
        ob.flush().unwrap();
        assert_eq!(ob.read(0, 100, 10).unwrap()[0].seq, 14);
    }

    #[test]
    fn drop_oldest_counts_what_it_drops_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let ob = SledOutbox::open(dir.path(), 4096, WhenFull::DropOldest).unwrap();
        let mut dropped = 0;
        for round in 0..20 {
            dropped += ob.append(readings(10, round as f64 * 10.0)).unwrap().dropped;
        }
        let s = ob.stats();
        assert!(s.bytes <= 4096, "{s:?}");
        assert!(dropped > 0);
        assert_eq!(s.dropped_total, dropped);
        assert_eq!(s.depth + dropped, 200);
        assert_eq!(s.floor_seq, dropped + 1, "the oldest went first");
        ob.flush().unwrap();
        let newest = ob.read(0, 1000, 1000).unwrap();
        assert_eq!(newest.last().unwrap().seq, 200);
    }

    #[test]
    fn stop_polling_refuses_and_counts_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let ob = SledOutbox::open(dir.path(), 2048, WhenFull::StopPolling).unwrap();
        let mut refused = 0;
        for _ in 0..10 {
            refused += ob.append(readings(10, 0.0)).unwrap().refused;
        }
        let s = ob.stats();
        assert!(refused > 0);
        assert_eq!(s.depth + refused, 100);
        assert_eq!(s.floor_seq, 1, "nothing already buffered was dropped");
        assert_eq!(s.dropped_total, refused);
    }

    #[test]
    fn a_backlog_reads_back_across_chunks_and_partial_acks_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ob = SledOutbox::open(dir.path(), 64 << 20, WhenFull::DropOldest).unwrap();
            for round in 0..7 {
                ob.append(readings(500, round as f64 * 500.0)).unwrap();
                if round % 3 == 2 {
                    ob.flush().unwrap();
                }
            }
            assert_eq!(ob.flush().unwrap(), 3500);
            assert!(ob.stats().bytes < 3500 * 40, "chunks, not one entry per reading: {:?}", ob.stats());
            ob.ack(1500).unwrap();
            let s = ob.stats();
            assert_eq!((s.depth, s.floor_seq, s.oldest_ts_ms), (2000, 1501, Some(1_000)), "seq 1501 is the first reading of its round of 500");
            let got = ob.read(1, 3500, 1200).unwrap();
            assert_eq!(got.len(), 1200);
            assert!(got.windows(2).all(|w| w[1].seq.get() == w[0].seq.get() + 1));
            assert_eq!((got[0].seq.get(), got[0].value), (1501, 1500.0));
            assert_eq!(ob.read(3400, 3450, 1000).unwrap().len(), 51);
        }
        let ob = SledOutbox::open(dir.path(), 64 << 20, WhenFull::DropOldest).unwrap();
        let s = ob.stats();
        assert_eq!((s.depth, s.floor_seq, s.next_seq, s.acked), (2000, 1501, 3501, 1500));
        let rest = ob.read(0, u64::MAX >> 8, 10_000).unwrap();
        assert_eq!(rest.iter().map(|r| r.value).collect::<Vec<_>>(), (1500..3500).map(|v| v as f64).collect::<Vec<_>>());
        ob.ack(3500).unwrap();
        assert_eq!((ob.stats().depth, ob.stats().bytes, ob.stats().oldest_ts_ms), (0, 0, None));
    }

    #[test]
    fn seqs_handed_out_stay_used_when_every_reading_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ob = SledOutbox::open(dir.path(), 1 << 20, WhenFull::DropOldest).unwrap();
            ob.append(readings(50, 0.0)).unwrap();
            ob.flush().unwrap();
        }
        {
            // A smaller buffer: the next append drops all 50 stored readings.
            let ob = SledOutbox::open(dir.path(), 1_000, WhenFull::DropOldest).unwrap();
            assert_eq!(ob.append(readings(1, 0.0)).unwrap().dropped, 50);
            assert_eq!(ob.stats().depth, 1);
        }
        let ob = SledOutbox::open(dir.path(), 1_000, WhenFull::DropOldest).expect("not mistaken for damage");
        assert_eq!(ob.stats().next_seq, 51);
    }
}
