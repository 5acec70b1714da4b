//! Upkeep between writes: rollups of dirty minutes, packing closed hours
//! into blocks, and deleting what is past its retention.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use shared::{Metric, SensorId};

use redb::{Durability, ReadableTable};

use super::super::keys;
use super::super::{block, Expired, Keep, Level, Rollup, StoreError, PACK_AFTER_MS};
use super::stream::{self, Kind};
use super::{earliest, hour_of, merge_into, minute_of, minute_range, minutes_of, oldest, RedbStore, HOUR, NO_SAMPLE};

/// Minute and hour rollups made by a pass, by series id.
pub(super) type Made = (Vec<(u32, Rollup)>, Vec<(u32, Rollup)>);

/// Which dirty minutes a rollup pass takes.
pub(super) enum Minutes<'a> {
    All,
    /// Those that ended at or before this time.
    EndedBy(i64),
    /// One series' (sensor, metric).
    OfSeries(&'a str, &'a str),
}

/// Rollup saves, for passes that overlap: two passes (the upkeep task's and
/// a query's for its series) take different minutes, possibly of the same
/// hour, and each makes that hour's rollup from its own snapshot; the one
/// saving last recomputes the hours of series another pass saved since it
/// took its minutes, from the minute rollups stored, or its hour rollup
/// would lack the other's minute.
#[derive(Default)]
pub(super) struct Saves {
    /// Saves made so far.
    count: u64,
    /// (number, the series whose hours it wrote) of the saves a pass still
    /// open may not have seen.
    pub(super) recent: VecDeque<(u64, Arc<HashSet<u32>>)>,
    /// Passes taken and not yet done, by the count when they were taken.
    open: BTreeMap<u64, usize>,
}

impl Saves {
    /// Forgets saves every open pass has seen.
    fn prune(&mut self) {
        let seen_by_all = self.open.keys().next().copied().unwrap_or(self.count);
        while self.recent.front().is_some_and(|(n, _)| *n <= seen_by_all) {
            self.recent.pop_front();
        }
    }
}

/// The minutes one rollup pass took.
pub(super) struct Pass<'s> {
    store: &'s RedbStore,
    pub(super) taken: HashSet<(u32, i64)>,
    /// Rollups of taken minutes kept as they were written: not read back.
    pub(super) known: HashMap<(u32, i64), Rollup>,
    /// Hours whose rollup the save makes from the running one, not from the store.
    known_hours: HashSet<(u32, i64)>,
    /// The save count when they were taken: saves after it may be missing
    /// from the pass's snapshot.
    after: u64,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut saves = self.store.saves.lock().unwrap();
        if let Some(n) = saves.open.get_mut(&self.after) {
            *n -= 1;
            if *n == 0 {
                saves.open.remove(&self.after);
            }
        }
        saves.prune();
    }
}

impl RedbStore {
    /// Rolls up the minutes written since the last pass that `which` picks
    /// (the rest stay dirty). Computed from a snapshot while writers go on
    /// (a pass over a busy hour re-reads it, and ingest waited for that);
    /// only the write of the results holds them off. A minute written to
    /// again meanwhile stays dirty for the next pass.
    pub(super) fn roll_up_dirty(&self, which: Minutes) -> Result<u64, StoreError> {
        let pass = self.take_dirty(which)?;
        if pass.taken.is_empty() {
            return Ok(0);
        }
        let done = self.read(|t| self.make_rollups(t, &pass)).and_then(|made| self.save_rollups(&pass, made));
        if let Err(e) = done {
            self.running.lock().unwrap().unsaved(pass.taken.iter().copied());
            self.dirty.lock().unwrap().extend(pass.taken.iter().copied());
            return Err(e);
        }
        Ok(pass.taken.len() as u64)
    }

    /// The dirty minutes `which` picks, no longer marked in memory: a writer
    /// marks the ones it writes anew. The open samples are written first:
    /// their minutes are marked as they go into chunks.
    pub(super) fn take_dirty(&self, which: Minutes) -> Result<Pass<'_>, StoreError> {
        self.settle()?;
        let index = self.series.lock().unwrap();
        let mut dirty = self.dirty.lock().unwrap();
        let after = {
            let mut saves = self.saves.lock().unwrap();
            let count = saves.count;
            *saves.open.entry(count).or_default() += 1;
            count
        };
        let minute = Level::Minute.bucket_ms();
        let taken = match which {
            Minutes::All => std::mem::take(&mut *dirty),
            Minutes::EndedBy(until) => dirty.extract_if(|&(_, start)| start.saturating_add(minute) <= until).collect(),
            Minutes::OfSeries(sensor, metric) => match index.id(sensor, metric) {
                Some(id) => dirty.extract_if(|&(of, _)| of == id).collect(),
                None => HashSet::new(),
            },
        };
        let mut running = self.running.lock().unwrap();
        let known = taken.iter().filter_map(|&(id, m)| running.take(id, m).map(|r| ((id, m), r))).collect();
        let known_hours = taken.iter().map(|&(id, m)| (id, hour_of(m))).filter(|&(id, h)| running.hour_known(id, h)).collect();
        Ok(Pass { store: self, taken, known, known_hours, after })
    }

    /// Stores rollups made for `taken` and clears their marks, except for a
    /// minute written to again since: its rollup is made anew next pass.
    /// One transaction, holding ingest off while it writes: split into
    /// transactions of 8,192 rollups, a pass over one minute of 1M series
    /// took 91 s of upkeep instead of 10.8 (each commit's own cost), and
    /// ingest fell from 261k to 191k readings/s.
    pub(super) fn save_rollups(&self, pass: &Pass, (mut minutes, mut hours): Made) -> Result<(), StoreError> {
        // In key order, so that the writes below walk the B-tree's pages
        // once rather than at random (a million series at the top of a minute).
        minutes.sort_unstable_by_key(|(id, r)| (*id, r.start_ms));
        let mut cleared: Vec<(u32, i64)> = pass.taken.iter().copied().collect();
        cleared.sort_unstable();
        let _writes = self.series.lock().unwrap();
        let dirty = self.dirty.lock().unwrap();
        // Hours kept running: their rollup is the minutes saved before and
        // these, in minute order; one the running rollups lost track of
        // meanwhile is made from the stored minutes below.
        let mut recompute: HashSet<u32> = HashSet::new();
        let mut running = self.running.lock().unwrap();
        for run in minutes.chunk_by(|a, b| a.0 == b.0 && hour_of(a.1.start_ms) == hour_of(b.1.start_ms)) {
            let (id, h) = (run[0].0, hour_of(run[0].1.start_ms));
            if !pass.known_hours.contains(&(id, h)) {
                continue;
            }
            match running.save(id, h, run) {
                Some(r) => hours.push((id, r)),
                None => {
                    recompute.insert(id);
                    hours.push((id, Rollup { start_ms: h, ..run[0].1 }));
                }
            }
        }
        drop(running);
        hours.sort_unstable_by_key(|(id, r)| (*id, r.start_ms));
        // Saves serialise on the writers' lock: none lands between this
        // look and the commit.
        let saved_since: HashSet<u32> = {
            let saves = self.saves.lock().unwrap();
            saves.recent.iter().filter(|(n, _)| *n > pass.after).flat_map(|(_, ids)| ids.iter().copied()).collect()
        };
        // Not synced: lost in a crash together with the marks it clears, so
        // the rollups are made again after a restart.
        self.update(Durability::None, |t| {
            for (id, r) in &minutes {
                t.insert(&keys::level(Level::Minute, *id, r.start_ms)[..], &keys::encode_rollup(r)[..]).map_err(self.err())?;
            }
            for (id, r) in &hours {
                let r = if saved_since.contains(id) || recompute.contains(id) {
                    // From every minute stored, this pass's just written included.
                    let mut acc = None;
                    for m in self.minute_rollups(&*t, *id, r.start_ms, r.start_ms + HOUR - 1)? {
                        merge_into(&mut acc, Rollup { start_ms: r.start_ms, ..m });
                    }
                    acc.unwrap_or(*r)
                } else {
                    *r
                };
                t.insert(&keys::level(Level::Hour, *id, r.start_ms)[..], &keys::encode_rollup(&r)[..]).map_err(self.err())?;
            }
            for &(id, start) in cleared.iter().filter(|&m| !dirty.contains(m)) {
                t.remove(&keys::dirty(id, start)[..]).map_err(self.err())?;
            }
            Ok(())
        })?;
        let mut saves = self.saves.lock().unwrap();
        saves.count += 1;
        let n = saves.count;
        // Kept only while a pass other than this one, taken before it, is open.
        if saves.open.iter().any(|(&after, &passes)| after < n && (after != pass.after || passes > 1)) {
            saves.recent.push_back((n, Arc::new(hours.iter().map(|(id, _)| *id).collect())));
        }
        Ok(())
    }

    /// The minute rollups of the minutes `pass` took and the hour rollups
    /// of their hours, but for hours kept running (the save makes those).
    pub(super) fn make_rollups<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, pass: &Pass) -> Result<Made, StoreError> {
        let minute = Level::Minute.bucket_ms();
        // Each minute's own samples read (its chunks, or its hour's block
        // when a late sample came after packing), and each hour's minute
        // rollups once, unless kept running.
        let mut hours: HashMap<(u32, i64), BTreeMap<i64, Rollup>> = HashMap::new();
        let mut minutes = Vec::new();
        for &(id, start) in &pass.taken {
            let h = hour_of(start);
            let read_hour = !pass.known_hours.contains(&(id, h));
            if read_hour {
                if let hashbrown::hash_map::Entry::Vacant(e) = hours.entry((id, h)) {
                    e.insert(self.minute_rollups(t, id, h, h + HOUR - 1)?.into_iter().map(|r| (r.start_ms, r)).collect());
                }
            }
            let acc = match pass.known.get(&(id, start)) {
                Some(r) => Some(*r),
                None => {
                    let mut acc = None;
                    for s in self.samples(t, id, start, start + minute - 1)? {
                        merge_into(&mut acc, Rollup::of(start, s.ts_ms, s.value));
                    }
                    acc
                }
            };
            // No samples: they expired before their rollup was made; keep what there is.
            if let Some(r) = acc {
                if read_hour {
                    hours.get_mut(&(id, h)).expect("read above").insert(start, r);
                }
                minutes.push((id, r));
            }
        }
        let hours = hours
            .into_iter()
            .filter_map(|((id, h), rollups)| {
                let mut acc = None;
                for r in rollups.into_values() {
                    merge_into(&mut acc, Rollup { start_ms: h, ..r });
                }
                acc.map(|r| (id, r))
            })
            .collect();
        Ok((minutes, hours))
    }

    pub(super) fn pack_closed(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.settle()?;
        let cutoff = now_ms.saturating_sub(PACK_AFTER_MS);
        let mut ready: Vec<(u32, i64)> = self.unpacked.lock().unwrap().iter().filter(|(_, h)| h.saturating_add(HOUR) <= cutoff).copied().collect();
        ready.sort_unstable();
        if !ready.is_empty() {
            let _writes = self.series.lock().unwrap();
            self.running.lock().unwrap().packing(cutoff);
        }
        // Bounded transactions, and writers get in between them: at the top of
        // an hour every series has one to pack.
        for group in ready.chunks(256) {
            // Writers wait for this group: a sample written for an hour after
            // its block was made but before its mark is cleared would never be
            // marked again.
            let _writes = self.series.lock().unwrap();
            let mut unpacked = self.unpacked.lock().unwrap();
            self.update(Durability::Immediate, |t| {
                for &(id, h) in group {
                    let samples = self.samples(t, id, h, h + HOUR - 1)?;
                    t.retain_in::<&[u8], _>(&keys::point(id, h)[..]..&keys::point(id, h + HOUR)[..], |_, _| false).map_err(self.err())?;
                    for m in minutes_of(h, h, i64::MAX) {
                        let r = minute_range(m, id);
                        t.retain_in::<&[u8], _>(&r.start()[..]..=&r.end()[..], |_, _| false).map_err(self.err())?;
                    }
                    if samples.is_empty() {
                        stream::remove(t, &self.file, Kind::Samples, id, h)?;
                    } else {
                        stream::put(t, &self.file, Kind::Samples, id, h, &block::encode(h, &samples))?;
                    }
                    // The hour's minute rollups, made by `roll_up` before this pass, into one entry too.
                    let minutes = self.minute_rollups(t, id, h, h + HOUR - 1)?;
                    t.retain_in::<&[u8], _>(&keys::level(Level::Minute, id, h)[..]..&keys::level(Level::Minute, id, h + HOUR)[..], |_, _| false).map_err(self.err())?;
                    if minutes.is_empty() {
                        stream::remove(t, &self.file, Kind::Minutes, id, h)?;
                    } else {
                        stream::put(t, &self.file, Kind::Minutes, id, h, &block::rollups::encode(h, &minutes))?;
                    }
                    t.remove(&keys::unpacked(id, h)[..]).map_err(self.err())?;
                }
                Ok(())
            })?;
            let mut running = self.running.lock().unwrap();
            for key in group {
                unpacked.remove(key);
                running.packed(key.0, key.1);
            }
        }
        Ok(ready.len() as u64)
    }

    pub(super) fn expire_old(&self, now_ms: i64, keep: &dyn Fn(&str, &str) -> Keep) -> Result<Expired, StoreError> {
        self.settle()?;
        let series: Vec<((SensorId, Metric), u32)> = {
            let mut index = self.series.lock().unwrap();
            let (mut due, mut lowered) = (Vec::new(), Vec::new());
            for (k, &id) in &index.ids {
                if index.due(id) <= now_ms {
                    due.push((k.clone(), id));
                } else if index.lowered.get(id as usize).is_some_and(|&t| t != NO_SAMPLE) {
                    lowered.push((k.clone(), id));
                }
            }
            // A series whose oldest sample a write lowered (a new one, or a
            // late old sample): due sooner only if that sample makes it so,
            // worked out without reading.
            for (k, id) in lowered {
                let ts = index.take_lowered(id).expect("marked");
                let at = index.due(id).min(due_from_sample(&keep(&k.0, &k.1), ts));
                index.set_due(id, at);
                if at <= now_ms {
                    due.push((k, id));
                }
            }
            due
        };
        let mut done = Expired::default();
        // Bounded transactions, one sync each rather than one per series.
        for group in series.chunks(256) {
            // Writers wait: one that lowered a series' oldest time between
            // this pass finding it again and keeping it would be overwritten.
            let mut index = self.series.lock().unwrap();
            let (e, news, touched) = self.update(Durability::Immediate, |t| {
                let mut e = Expired::default();
                // Series something was deleted from: their running rollups no longer hold.
                let mut touched = HashSet::new();
                // (id, its oldest sample time if found again, when next due)
                let mut news = Vec::with_capacity(group.len());
                for ((sensor, metric), id) in group {
                    let id = *id;
                    let k = keep(sensor, metric);
                    let before = e.raw + e.rollups;
                    // A rollup bucket goes once all of it is older than its retention.
                    let cutoff = |keep: Option<i64>, width: i64| keep.map(|ms| now_ms.saturating_sub(ms).saturating_sub(width) + 1);
                    let (raw, minute, hour) =
                        (k.raw_ms.map(|ms| now_ms.saturating_sub(ms)), cutoff(k.minute_ms, Level::Minute.bucket_ms()), cutoff(k.hour_ms, Level::Hour.bucket_ms()));
                    e.series_visited += 1;
                    let mut first = None;
                    if let Some(c) = raw {
                        e.raw += self.delete_before(t, Level::Raw, id, c)?;
                        e.raw += self.expire_chunks(t, id, c)?;
                        e.raw += self.expire_blocks(t, id, c)?;
                        if index.first(id).is_some_and(|f| f < c) {
                            // The transaction reads its own deletions.
                            first = Some(oldest(t, &self.file, id)?);
                        }
                    }
                    if let Some(c) = minute {
                        e.rollups += self.delete_before(t, Level::Minute, id, c)?;
                        e.rollups += self.expire_minute_blocks(t, id, c)?;
                    }
                    if let Some(c) = hour {
                        e.rollups += self.delete_before(t, Level::Hour, id, c)?;
                    }
                    let oldest_sample = first.unwrap_or_else(|| index.first(id));
                    news.push((id, first, self.next_due(t, id, &k, oldest_sample)?));
                    if e.raw + e.rollups > before {
                        touched.insert(id);
                    }
                }
                Ok((e, news, touched))
            })?;
            if !touched.is_empty() {
                self.running.lock().unwrap().forget(&touched);
            }
            for (id, first, due) in news {
                if let Some(first) = first {
                    index.set_first(id, first);
                }
                // Worked out from disk: a lowering before the visit is in it.
                index.take_lowered(id);
                index.set_due(id, due);
            }
            drop(index);
            done.raw += e.raw;
            done.rollups += e.rollups;
            done.series_visited += e.series_visited;
        }
        Ok(done)
    }

    /// When series `id` next has something past its retention `k`: its
    /// oldest sample, minute rollup or hour rollup. Rollups not made yet
    /// are made from samples no older than the oldest sample (a write of an
    /// older one makes the series due at once).
    fn next_due<T: ReadableTable<&'static [u8], &'static [u8]>>(&self, t: &T, id: u32, k: &Keep, oldest_sample: Option<i64>) -> Result<i64, StoreError> {
        let oldest_minute = earliest(
            self.first_time(t, keys::level(Level::Minute, id, i64::MIN), keys::level(Level::Minute, id, i64::MAX))?,
            self.first_time(t, keys::minute_block(id, i64::MIN), keys::minute_block(id, i64::MAX))?,
        );
        let oldest_hour = self.first_time(t, keys::level(Level::Hour, id, i64::MIN), keys::level(Level::Hour, id, i64::MAX))?;
        Ok(due_at(k, oldest_sample, earliest(oldest_minute, oldest_sample.map(minute_of)), earliest(oldest_hour, oldest_sample.map(hour_of))))
    }
}

/// When a sample at `ts` and the rollups made from it are first past their
/// retention `k`.
fn due_from_sample(k: &Keep, ts: i64) -> i64 {
    due_at(k, Some(ts), Some(minute_of(ts)), Some(hour_of(ts)))
}

/// When the first of these is past its retention `k`: a sample at `raw`, the
/// minute rollup starting at `minute`, the hour rollup starting at `hour`
/// (a bucket goes once all of it is older than its retention).
fn due_at(k: &Keep, raw: Option<i64>, minute: Option<i64>, hour: Option<i64>) -> i64 {
    let due = [
        k.raw_ms.zip(raw).map(|(ms, at)| at.saturating_add(ms).saturating_add(1)),
        k.minute_ms.zip(minute).map(|(ms, at)| at.saturating_add(ms).saturating_add(Level::Minute.bucket_ms())),
        k.hour_ms.zip(hour).map(|(ms, at)| at.saturating_add(ms).saturating_add(Level::Hour.bucket_ms())),
    ];
    due.into_iter().flatten().min().unwrap_or(i64::MAX)
}
