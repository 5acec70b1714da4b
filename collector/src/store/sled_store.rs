//! The embedded store on sled. One tree, three key spaces, so that readings and
//! the gateway progress they advance are written in one atomic batch:
//!
//! - `S` sensor `\0` metric → series id (u32, big-endian)
//! - `P` series id, ts (i64 with the sign bit flipped, big-endian) → value (f64) + quality (u8)
//! - `G` gateway → postcard `Progress`
//! - `L` entry id (u64, big-endian) → postcard (gateway, readings): the
//!   forward log the external sink drains; deleted when the sink has them
//!
//! Two readings of one series at the same millisecond are one point: the later
//! write wins, as in InfluxDB.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use shared::{Quality, Reading};

use super::{Forward, Progress, Sample, Store, StoreError, Write};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Keep the series here; off when only the external sink keeps them
    /// (gateway progress is kept either way: it is what makes dedup work).
    pub keep_series: bool,
    /// Log every stored reading for the external sink.
    pub forward: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { keep_series: true, forward: false }
    }
}

pub struct SledStore {
    path: String,
    db: sled::Db,
    tree: sled::Tree,
    series: Mutex<SeriesIndex>,
    options: StoreOptions,
    /// Next forward-log id, and readings waiting in the log.
    next_forward: AtomicU64,
    forward_backlog: AtomicU64,
}

fn forward_key(id: u64) -> [u8; 9] {
    let mut k = [b'L'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

#[derive(Default)]
struct SeriesIndex {
    ids: HashMap<(String, String), u32>,
    next: u32,
}

fn series_key(sensor: &str, metric: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + sensor.len() + metric.len());
    k.push(b'S');
    k.extend_from_slice(sensor.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
    k
}

fn point_key(id: u32, ts_ms: i64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = b'P';
    k[1..5].copy_from_slice(&id.to_be_bytes());
    k[5..].copy_from_slice(&((ts_ms as u64) ^ (1 << 63)).to_be_bytes());
    k
}

fn ts_of(key: &[u8]) -> i64 {
    (u64::from_be_bytes(key[5..13].try_into().unwrap()) ^ (1 << 63)) as i64
}

fn sample(key: &[u8], v: &[u8]) -> Option<Sample> {
    if key.len() != 13 || v.len() != 9 {
        return None;
    }
    Some(Sample { ts_ms: ts_of(key), value: f64::from_be_bytes(v[..8].try_into().unwrap()), quality: Quality::from_u8(v[8]) })
}

impl SledStore {
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with(path, StoreOptions::default())
    }

    pub fn open_with(path: &Path, options: StoreOptions) -> Result<SledStore, StoreError> {
        let p = path.display().to_string();
        let err = |source| StoreError::Engine { path: p.clone(), source };
        std::fs::create_dir_all(path).map_err(|e| err(sled::Error::Io(e)))?;
        let db = sled::Config::new().path(path).flush_every_ms(Some(1000)).open().map_err(err)?;
        let tree = db.open_tree("ts").map_err(err)?;
        let mut index = SeriesIndex::default();
        for item in tree.scan_prefix(b"S") {
            let (k, v) = item.map_err(err)?;
            let body = &k[1..];
            let sep = body.iter().position(|&b| b == 0).ok_or_else(|| StoreError::Corrupt { path: p.clone(), detail: "series key without separator".into() })?;
            let id = u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt { path: p.clone(), detail: "series id is not 4 bytes".into() })?);
            let sensor = String::from_utf8_lossy(&body[..sep]).into_owned();
            let metric = String::from_utf8_lossy(&body[sep + 1..]).into_owned();
            index.ids.insert((sensor, metric), id);
            index.next = index.next.max(id + 1);
        }
        let (mut next_forward, mut backlog) = (0, 0);
        for item in tree.scan_prefix(b"L") {
            let (k, v) = item.map_err(err)?;
            next_forward = u64::from_be_bytes(k[1..9].try_into().unwrap_or_default()) + 1;
            backlog += decode_forward(&p, &k, &v)?.readings.len() as u64;
        }
        Ok(SledStore { path: p, db, tree, series: Mutex::new(index), options, next_forward: AtomicU64::new(next_forward), forward_backlog: AtomicU64::new(backlog) })
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Engine { path: self.path.clone(), source }
    }

    fn id(&self, sensor: &str, metric: &str) -> Option<u32> {
        self.series.lock().unwrap().ids.get(&(sensor.to_string(), metric.to_string())).copied()
    }

    /// Bytes sled uses on disk, for benchmarks and the retention work to come.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn decode_forward(path: &str, k: &[u8], v: &[u8]) -> Result<Forward, StoreError> {
    let id = k.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
    let body: Option<(String, Vec<Reading>)> = postcard::from_bytes(v).ok();
    match (id, body) {
        (Some(id), Some((gateway, readings))) => Ok(Forward { id, gateway, readings }),
        _ => Err(StoreError::Corrupt { path: path.to_string(), detail: format!("forward-log entry {k:?} does not decode") }),
    }
}

impl Store for SledStore {
    fn write(&self, w: &Write) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut index = self.series.lock().unwrap();
        let mut added: Vec<(String, String)> = Vec::new();
        let mut forwarded = 0;
        let first_forward = self.next_forward.load(Relaxed);
        let mut next_forward = first_forward;
        if self.options.forward {
            for (gw, rs) in w.batches.iter().filter(|(_, rs)| !rs.is_empty()) {
                let v = postcard::to_allocvec(&(gw, rs.as_slice())).expect("readings serialize");
                batch.insert(&forward_key(next_forward), v);
                next_forward += 1;
                forwarded += rs.len() as u64;
            }
        }
        let readings = w.batches.iter().flat_map(|(_, rs)| rs.iter()).filter(|_| self.options.keep_series);
        for r in readings {
            let key = (r.sensor.clone(), r.metric.clone());
            let id = match index.ids.get(&key) {
                Some(id) => *id,
                None => {
                    let id = index.next;
                    index.next += 1;
                    index.ids.insert(key.clone(), id);
                    batch.insert(series_key(&r.sensor, &r.metric), &id.to_be_bytes());
                    added.push(key);
                    id
                }
            };
            let mut v = [0u8; 9];
            v[..8].copy_from_slice(&r.value.to_be_bytes());
            v[8] = r.quality.as_u8();
            batch.insert(&point_key(id, r.ts_ms), &v);
        }
        for (gw, p) in &w.progress {
            let mut k = vec![b'G'];
            k.extend_from_slice(gw.as_bytes());
            batch.insert(k, postcard::to_allocvec(p).expect("progress serializes"));
        }
        if let Err(e) = self.tree.apply_batch(batch) {
            // Nothing of the batch was written: forget the ids handed out for it.
            for k in added {
                index.ids.remove(&k);
            }
            return Err(self.err(e));
        }
        // Ingest is the only writer, so the ids handed out cannot race.
        debug_assert_eq!(self.next_forward.load(Relaxed), first_forward);
        self.next_forward.store(next_forward, Relaxed);
        self.forward_backlog.fetch_add(forwarded, Relaxed);
        Ok(())
    }

    fn forward_next(&self, max_readings: usize) -> Result<Vec<Forward>, StoreError> {
        let mut out = Vec::new();
        let mut n = 0;
        for item in self.tree.scan_prefix(b"L") {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let f = decode_forward(&self.path, &k, &v)?;
            n += f.readings.len();
            out.push(f);
            if n >= max_readings {
                break;
            }
        }
        Ok(out)
    }

    fn forward_done(&self, id: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut gone = 0;
        for item in self.tree.range(forward_key(0)..=forward_key(id)) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            gone += decode_forward(&self.path, &k, &v)?.readings.len() as u64;
            batch.remove(k);
        }
        self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        self.forward_backlog.fetch_sub(gone, Relaxed);
        Ok(())
    }

    fn forward_backlog(&self) -> u64 {
        self.forward_backlog.load(Relaxed)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    fn progress(&self) -> Result<Vec<(String, Progress)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"G") {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let gw = String::from_utf8_lossy(&k[1..]).into_owned();
            let p: Progress = postcard::from_bytes(&v).map_err(|e| StoreError::Corrupt { path: self.path.clone(), detail: format!("progress of {gw}: {e}") })?;
            out.push((gw, p));
        }
        Ok(out)
    }

    fn query(&self, sensor: &str, metric: &str, from: i64, to: i64, limit: usize) -> Result<Vec<Sample>, StoreError> {
        let Some(id) = self.id(sensor, metric) else { return Ok(Vec::new()) };
        if from > to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self.tree.range(point_key(id, from)..=point_key(id, to)).take(limit) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if let Some(s) = sample(&k, &v) {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn last(&self, sensor: &str, metric: &str) -> Result<Option<Sample>, StoreError> {
        let Some(id) = self.id(sensor, metric) else { return Ok(None) };
        match self.tree.range(point_key(id, i64::MIN)..=point_key(id, i64::MAX)).next_back() {
            Some(item) => {
                let (k, v) = item.map_err(|e| self.err(e))?;
                Ok(sample(&k, &v))
            }
            None => Ok(None),
        }
    }

    fn series(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.series.lock().unwrap().ids.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: u64, sensor: &str, ts: i64, v: f64) -> Reading {
        Reading { seq, sensor: sensor.into(), metric: "pm25".into(), ts_ms: ts, value: v, quality: Quality::Good }
    }

    fn w(readings: Vec<Reading>, progress: Vec<(String, Progress)>) -> Write {
        Write { batches: vec![("gw-1".into(), std::sync::Arc::new(readings))], progress }
    }

    #[test]
    fn forward_log_keeps_entries_in_order_until_done_and_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions { keep_series: false, forward: true };
        {
            let st = SledStore::open_with(dir.path(), opts.clone()).unwrap();
            st.write(&w(vec![r(1, "aq-1", 10, 1.0), r(2, "aq-1", 20, 2.0)], vec![])).unwrap();
            st.write(&w(vec![r(3, "aq-2", 30, 3.0)], vec![])).unwrap();
            st.write(&w(vec![], vec![])).unwrap();
            assert_eq!(st.forward_backlog(), 3);
            let first = st.forward_next(1).unwrap();
            assert_eq!(first.len(), 1);
            assert_eq!(first[0].readings.len(), 2);
            assert_eq!(first[0].gateway, "gw-1");
            st.forward_done(first[0].id).unwrap();
            assert_eq!(st.forward_backlog(), 1);
            // Series are not kept when the external sink is the only one.
            assert!(st.series().is_empty());
            st.sync().unwrap();
        }
        let st = SledStore::open_with(dir.path(), opts).unwrap();
        assert_eq!(st.forward_backlog(), 1);
        let rest = st.forward_next(100).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].readings[0].value, 3.0);
        st.write(&w(vec![r(4, "aq-2", 40, 4.0)], vec![])).unwrap();
        let all = st.forward_next(100).unwrap();
        assert!(all[1].id > all[0].id, "ids keep growing after reopening");
        st.forward_done(all[1].id).unwrap();
        assert!(st.forward_next(100).unwrap().is_empty());
        assert_eq!(st.forward_backlog(), 0);
    }

    #[test]
    fn range_queries_return_only_the_series_and_window_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let st = SledStore::open(dir.path()).unwrap();
        st.write(&w(vec![r(1, "aq-1", -5, 0.5), r(2, "aq-1", 10, 1.0), r(3, "aq-2", 15, 9.0), r(4, "aq-1", 20, 2.0)], vec![])).unwrap();
        let got: Vec<f64> = st.query("aq-1", "pm25", -10, 15, 100).unwrap().iter().map(|s| s.value).collect();
        assert_eq!(got, vec![0.5, 1.0]);
        assert_eq!(st.last("aq-1", "pm25").unwrap().unwrap().value, 2.0);
        assert!(st.query("aq-9", "pm25", 0, 100, 100).unwrap().is_empty());
        assert_eq!(st.series().len(), 2);
    }

    #[test]
    fn data_and_progress_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let st = SledStore::open(dir.path()).unwrap();
            st.write(&w(vec![r(1, "aq-1", 100, 1.0)], vec![("gw-1".into(), Progress { contiguous: 1, above: vec![3] })])).unwrap();
            st.sync().unwrap();
        }
        let st = SledStore::open(dir.path()).unwrap();
        assert_eq!(st.progress().unwrap(), vec![("gw-1".to_string(), Progress { contiguous: 1, above: vec![3] })]);
        st.write(&w(vec![r(2, "aq-2", 100, 5.0)], vec![])).unwrap();
        assert_eq!(st.query("aq-1", "pm25", 0, 1000, 10).unwrap()[0].value, 1.0);
        assert_eq!(st.query("aq-2", "pm25", 0, 1000, 10).unwrap()[0].value, 5.0);
    }
}
