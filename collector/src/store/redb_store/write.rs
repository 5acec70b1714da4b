//! Writing: readings, the forward log and gateway progress in one transaction
//! (committed without fsync; `sync` makes every commit so far durable at once).

use hashbrown::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use redb::Durability;
use shared::{GatewayId, Metric, SensorId};

use super::super::keys;
use super::super::{Forward, Progress, Sample, SeqSpace, StoreError, Write};
use super::{hour_of, latest_per_time, minute_of, scan, RedbStore};

impl RedbStore {
    pub(super) fn commit(&self, w: &Write) -> Result<(), StoreError> {
        let mut index = self.series.lock().unwrap();
        let mut dirty = self.dirty.lock().unwrap();
        let mut unpacked = self.unpacked.lock().unwrap();
        let mut added: Vec<(SensorId, Metric)> = Vec::new();
        // (series, oldest sample time before this write) for each one it lowered.
        let mut lowered: Vec<(u32, i64)> = Vec::new();
        // Sets, not lists: a group of batches touches thousands of series.
        let mut newly_dirty: HashSet<(u32, i64)> = HashSet::new();
        let mut newly_unpacked: HashSet<(u32, i64)> = HashSet::new();
        let first_forward = self.next_forward.load(Relaxed);
        let (mut next_forward, mut forwarded) = (first_forward, 0);
        let mut next_chunk = self.next_chunk.load(Relaxed);
        // One chunk per series and minute this write touches, not one
        // entry per sample: the per-sample B-tree insert was most of
        // ingest's CPU. By minute, not hour: rolling up a minute then
        // reads that minute's chunks, not the hour's so far.
        let mut chunks: HashMap<(u32, i64), Vec<Sample>> = HashMap::new();
        let done = self.update(Durability::None, |t| {
            if self.options.forward {
                for (gw, rs) in w.batches.iter().filter(|(_, rs)| !rs.is_empty()) {
                    let v = postcard::to_allocvec(&(gw, rs.as_slice())).expect("readings serialize");
                    t.insert(&keys::forward(next_forward)[..], &v[..]).map_err(self.err())?;
                    next_forward += 1;
                    forwarded += rs.len() as u64;
                }
            }
            let readings = w.batches.iter().flat_map(|(_, rs)| rs.iter()).filter(|_| self.options.keep_series);
            for r in readings {
                let id = index.id_or_register(t, &r.sensor, &r.metric, &mut added).map_err(self.err())?;
                let (hour, minute) = (hour_of(r.ts_ms), minute_of(r.ts_ms));
                chunks.entry((id, minute)).or_default().push(r.sample());
                if index.first(id).is_none_or(|f| r.ts_ms < f) {
                    lowered.push((id, index.set_first(id, Some(r.ts_ms))));
                }
                if !dirty.contains(&(id, minute)) && newly_dirty.insert((id, minute)) {
                    t.insert(&keys::dirty(id, minute)[..], &[][..]).map_err(self.err())?;
                }
                if !unpacked.contains(&(id, hour)) && newly_unpacked.insert((id, hour)) {
                    t.insert(&keys::unpacked(id, hour)[..], &[][..]).map_err(self.err())?;
                }
            }
            if !chunks.is_empty() {
                for ((id, minute), samples) in chunks.iter_mut() {
                    *samples = latest_per_time(std::mem::take(samples));
                    t.insert(&keys::chunk(*id, *minute, next_chunk)[..], &keys::encode_chunk(*minute, samples)[..]).map_err(self.err())?;
                    next_chunk += 1;
                }
                t.insert(keys::NEXT_CHUNK, &next_chunk.to_be_bytes()[..]).map_err(self.err())?;
            }
            for (space, p) in &w.progress {
                t.insert(&keys::progress(space)[..], &postcard::to_allocvec(p).expect("progress serializes")[..]).map_err(self.err())?;
            }
            for space in &w.forget {
                t.remove(&keys::progress(space)[..]).map_err(self.err())?;
            }
            Ok(())
        });
        if let Err(e) = done {
            // Nothing of the transaction was written: forget what it handed out.
            index.undo(added, lowered);
            return Err(e);
        }
        dirty.extend(newly_dirty);
        unpacked.extend(newly_unpacked);
        let mut running = self.running.lock().unwrap();
        for ((id, minute), samples) in &chunks {
            running.wrote(*id, *minute, samples);
        }
        drop(running);
        self.next_forward.store(next_forward, Relaxed);
        self.next_chunk.store(next_chunk, Relaxed);
        self.forward_backlog.fetch_add(forwarded, Relaxed);
        Ok(())
    }

    pub(super) fn sync_all(&self) -> Result<(), StoreError> {
        // An empty durable commit makes every earlier non-durable one durable.
        self.update(Durability::Immediate, |_| Ok(()))
    }

    pub(super) fn forward_read(&self, max_readings: usize) -> Result<Vec<Forward>, StoreError> {
        self.read(|t| {
            let (mut out, mut n) = (Vec::new(), 0);
            scan(t, &self.file, b"L", &keys::after(b'L'), |k, v| {
                let f = keys::decode_forward(&self.path, k, v)?;
                n += f.readings.len();
                out.push(f);
                Ok(n < max_readings)
            })?;
            Ok(out)
        })
    }

    pub(super) fn forward_trim(&self, id: u64) -> Result<(), StoreError> {
        // Not synced: it becomes durable with ingest's next sync. A crash
        // before then sends those points to InfluxDB again (at least once, as
        // the log always was; the same series and time overwrite there),
        // and the sink's own fsync no longer holds ingest's writes back.
        let gone = self.update(Durability::None, |t| {
            let mut gone = 0u64;
            t.retain_in::<&[u8], _>(&keys::forward(0)[..]..=&keys::forward(id)[..], |k, v| {
                // An entry that does not decode was never counted in the backlog either.
                gone += keys::decode_forward(&self.path, k, v).map_or(0, |f| f.readings.len() as u64);
                false
            })
            .map_err(self.err())?;
            Ok(gone)
        })?;
        self.forward_backlog.fetch_sub(gone, Relaxed);
        Ok(())
    }

    pub(super) fn forward_len(&self) -> u64 {
        self.forward_backlog.load(Relaxed)
    }

    pub(super) fn write_bindings(&self, bindings: &[(SensorId, GatewayId)]) -> Result<(), StoreError> {
        if bindings.is_empty() {
            return Ok(());
        }
        self.update(Durability::None, |t| {
            for (sensor, gateway) in bindings {
                t.insert(&keys::binding(sensor)[..], gateway.as_bytes()).map_err(self.err())?;
            }
            Ok(())
        })
    }

    pub(super) fn read_bindings(&self) -> Result<Vec<(SensorId, GatewayId)>, StoreError> {
        self.read(|t| {
            let mut out = Vec::new();
            scan(t, &self.file, b"B", &keys::after(b'B'), |k, v| {
                let b = keys::parse_binding(k, v).ok_or_else(|| StoreError::Corrupt { path: self.path.clone(), detail: format!("sensor binding {k:?}") })?;
                out.push(b);
                Ok(true)
            })?;
            Ok(out)
        })
    }

    pub(super) fn read_progress(&self) -> Result<Vec<(SeqSpace, Progress)>, StoreError> {
        self.read(|t| {
            let mut out = Vec::new();
            scan(t, &self.file, b"G", &keys::after(b'G'), |k, v| {
                let corrupt = |detail: String| StoreError::Corrupt { path: self.path.clone(), detail };
                let space = keys::parse_progress(k).ok_or_else(|| corrupt(format!("progress key {k:?}")))?;
                out.push((space.clone(), decode_progress(v).map_err(|e| corrupt(format!("progress of {space}: {e}")))?));
                Ok(true)
            })?;
            Ok(out)
        })
    }
}

/// Progress as written now, or as written before `heard_ms` was kept (the
/// same fields without the last one).
fn decode_progress(v: &[u8]) -> Result<Progress, postcard::Error> {
    #[derive(serde::Deserialize)]
    struct Before {
        contiguous: u64,
        above: Vec<u64>,
    }
    match postcard::from_bytes::<Progress>(v) {
        Ok(p) => Ok(p),
        Err(_) => postcard::from_bytes::<Before>(v).map(|b| Progress { contiguous: b.contiguous, above: b.above, heard_ms: 0 }),
    }
}
