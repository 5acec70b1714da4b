//! Writing: readings, the forward log and gateway progress in one transaction
//! (committed without fsync; `sync` makes every commit so far durable at once).

use std::sync::atomic::Ordering::Relaxed;

use redb::Durability;
use shared::{GatewayId, Metric, SensorId};

use super::super::keys;
use super::super::{Forward, Progress, Sample, SeqSpace, StoreError, Write};
use super::open::write_chunks;
use super::{scan, RedbStore};

impl RedbStore {
    pub(super) fn commit(&self, w: &Write) -> Result<(), StoreError> {
        let mut index = self.series.lock().unwrap();
        let mut dirty = self.dirty.lock().unwrap();
        let mut unpacked = self.unpacked.lock().unwrap();
        let mut open = self.open.lock().unwrap();
        let mut added: Vec<(SensorId, Metric)> = Vec::new();
        // (series, oldest sample time before this write) for each one it lowered.
        let mut lowered: Vec<(u32, i64)> = Vec::new();
        let first_forward = self.next_forward.load(Relaxed);
        let (mut next_forward, mut forwarded) = (first_forward, 0);
        // The samples join the open ones (`open`): one log entry for the
        // whole write, not an insert per series it touches.
        let mut new: Vec<(u32, Sample)> = Vec::new();
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
                new.push((id, r.sample()));
                if index.first(id).is_none_or(|f| r.ts_ms < f) {
                    lowered.push((id, index.set_first(id, Some(r.ts_ms))));
                }
            }
            let mut settled = None;
            if new.is_empty() {
                // Nothing to log.
            } else if open.samples.len() + new.len() < self.options.open_samples {
                t.insert(&keys::logged(open.next_log)[..], &keys::encode_logged(&new)[..]).map_err(self.err())?;
            } else {
                // Enough open: this write settles them and its own, in its transaction.
                settled = Some(write_chunks(t, &self.file, [&open.samples, &new], self.next_chunk.load(Relaxed), (&dirty, &unpacked))?);
            }
            for (space, p) in &w.progress {
                t.insert(&keys::progress(space)[..], &postcard::to_allocvec(p).expect("progress serializes")[..]).map_err(self.err())?;
            }
            for space in &w.forget {
                t.remove(&keys::progress(space)[..]).map_err(self.err())?;
            }
            Ok(settled)
        });
        match done {
            Err(e) => {
                // Nothing of the transaction was written: forget what it handed out.
                index.undo(added, lowered);
                return Err(e);
            }
            Ok(Some(chunked)) => {
                open.samples.clear();
                self.chunked(chunked, &mut dirty, &mut unpacked);
            }
            Ok(None) if !new.is_empty() => {
                open.samples.extend(new);
                open.next_log += 1;
            }
            Ok(None) => {}
        }
        self.next_forward.store(next_forward, Relaxed);
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
            t.retain_in::<&[u8], _>(&keys::forward(0)[..]..=&keys::forward(id)[..], |_, v| {
                // An entry that does not decode was never counted in the backlog either.
                gone += keys::forward_count(v).unwrap_or(0);
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
